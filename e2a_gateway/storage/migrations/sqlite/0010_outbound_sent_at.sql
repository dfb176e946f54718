-- 0010: when an outbound message was handed on. An auto-approval handed on stays
-- `expired_approved` (docs/approvals.md), so its status alone no longer says it went out;
-- `sent_at` does, for it and for `sent`. Mail handed on before this version keeps NULL.
ALTER TABLE messages ADD COLUMN sent_at TEXT;
