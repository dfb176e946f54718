-- 0007: the retention sweep finds the oldest messages and webhook attempts by time.
CREATE INDEX messages_created ON messages(created_at);
CREATE INDEX webhook_attempts_attempted ON webhook_attempts(attempted_at);
