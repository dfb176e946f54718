-- 0009: the raw bytes of an inbound message are stored once, however many agents it went to.
-- `raw_messages` holds each distinct message by its SHA-256 (lowercase hex), and every
-- inbound row points at it. When the last row pointing at a message is deleted (agent or
-- account deleted, retention) the trigger below deletes the bytes too. Existing rows are
-- moved over, identical copies merged. e2a_sha256() is a function the gateway registers on
-- its connections.
CREATE TABLE raw_messages (
    digest TEXT PRIMARY KEY,
    raw    BLOB NOT NULL
);
INSERT OR IGNORE INTO raw_messages (digest, raw)
    SELECT e2a_sha256(raw_message), raw_message FROM messages WHERE direction = 'inbound'
    ORDER BY seq;
ALTER TABLE messages ADD COLUMN raw_digest TEXT REFERENCES raw_messages(digest);
UPDATE messages SET raw_digest = e2a_sha256(raw_message) WHERE direction = 'inbound';
CREATE INDEX messages_raw_digest ON messages(raw_digest);
ALTER TABLE messages DROP COLUMN raw_message;
CREATE TRIGGER messages_release_raw AFTER DELETE ON messages
WHEN OLD.raw_digest IS NOT NULL
BEGIN
    DELETE FROM raw_messages WHERE digest = OLD.raw_digest
        AND NOT EXISTS (SELECT 1 FROM messages WHERE raw_digest = OLD.raw_digest);
END;
