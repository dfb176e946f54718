-- 0020: agents in the trash. A deleted agent keeps its row (and so its address) with the time it
-- was deleted; it is restored by clearing it, or purged for good 30 days later.
ALTER TABLE agents ADD COLUMN deleted_at TEXT;
CREATE INDEX agents_deleted ON agents(deleted_at) WHERE deleted_at IS NOT NULL;
