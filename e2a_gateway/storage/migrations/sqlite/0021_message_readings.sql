-- 0021: an inbound message's reading (its reply text and trust map, docs/replies.md), as JSON,
-- computed the first time a face needs it and kept, so later reads and webhook retries do not
-- split the message again. NULL until then, and for outbound mail.
ALTER TABLE messages ADD COLUMN reading_json TEXT;
