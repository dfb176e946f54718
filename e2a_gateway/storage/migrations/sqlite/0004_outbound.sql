-- 0004: outbound messages live in `messages` too (direction = 'outbound'), so threading finds
-- a conversation through mail an agent sent as well as mail it received.
ALTER TABLE messages ADD COLUMN kind TEXT;
ALTER TABLE messages ADD COLUMN bcc_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN body_text TEXT;
ALTER TABLE messages ADD COLUMN body_html TEXT;
ALTER TABLE messages ADD COLUMN attachments_json TEXT;
ALTER TABLE messages ADD COLUMN in_reply_to TEXT;
ALTER TABLE messages ADD COLUMN references_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN approval_expires_at REAL;
ALTER TABLE messages ADD COLUMN reviewed_at TEXT;
ALTER TABLE messages ADD COLUMN rejection_reason TEXT;
ALTER TABLE messages ADD COLUMN method TEXT;
ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN send_error TEXT;
ALTER TABLE messages ADD COLUMN created_epoch REAL;
CREATE INDEX messages_outbound_status ON messages(user_id, direction, status, approval_expires_at);
CREATE INDEX messages_agent_sent ON messages(agent_email, direction, created_epoch);
