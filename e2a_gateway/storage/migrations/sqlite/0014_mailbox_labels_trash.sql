-- 0014: the `/v1` mailbox: labels an agent puts on its messages, and the trash. `deleted_at`
-- is when a message was moved to the trash (null while live); a trashed message leaves
-- lists, conversations and reply targets until it is restored or purged.
ALTER TABLE messages ADD COLUMN deleted_at TEXT;
CREATE TABLE message_labels (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    label      TEXT NOT NULL,
    PRIMARY KEY (message_id, label)
);
CREATE INDEX message_labels_label ON message_labels(label, message_id);
CREATE INDEX messages_agent_conversation ON messages(agent_email, conversation_id, seq);
