-- 0039: the trash is found by an index of its own. The retention sweep purges mail trashed
-- longer than `retention.trash_days`; with no index on `deleted_at` it read every message of
-- every agent to find them, once an hour, holding the database's write lock meanwhile on
-- SQLite. Only trashed mail enters this index.
CREATE INDEX messages_trashed ON messages(deleted_at) WHERE deleted_at IS NOT NULL;
