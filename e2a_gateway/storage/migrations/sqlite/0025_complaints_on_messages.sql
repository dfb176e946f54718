-- 0025: when a recipient of an outbound message complained about it (an RFC 5965 feedback
-- report), so that /v1 shows the message `complained` and its lifecycle the complaint.
ALTER TABLE messages ADD COLUMN complained_at TEXT;
