-- 0003: find a message's jobs without scanning the queue (cascading deletes, look-ups).
CREATE INDEX jobs_message ON jobs(message_id);
