-- 0011: a per-agent switch for the approval-notice email (on for every agent, as before).
-- Off, held mail still waits for review; only the email to the owner is not sent.
ALTER TABLE agents ADD COLUMN approval_notifications BOOLEAN NOT NULL DEFAULT TRUE;
