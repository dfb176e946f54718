-- 0009: the raw bytes of an inbound message are stored once, however many agents it went to.
-- `raw_messages` holds each distinct message by its SHA-256 (lowercase hex), and every
-- inbound row points at it. When the last row pointing at a message is deleted (agent or
-- account deleted, retention) the trigger below deletes the bytes too. Existing rows are
-- moved over, identical copies merged.
CREATE TABLE raw_messages (
    digest TEXT PRIMARY KEY,
    raw    BYTEA NOT NULL
);
INSERT INTO raw_messages (digest, raw)
    SELECT encode(sha256(raw_message), 'hex'), raw_message FROM messages
    WHERE direction = 'inbound' ORDER BY seq
    ON CONFLICT (digest) DO NOTHING;
ALTER TABLE messages ADD COLUMN raw_digest TEXT REFERENCES raw_messages(digest);
UPDATE messages SET raw_digest = encode(sha256(raw_message), 'hex') WHERE direction = 'inbound';
CREATE INDEX messages_raw_digest ON messages(raw_digest);
ALTER TABLE messages DROP COLUMN raw_message;
-- The row lock makes concurrent deletions of the last two rows (and a concurrent insert of a
-- row pointing at the same bytes, which locks it too) take turns: each then sees what the
-- other committed, so the bytes are deleted exactly when nothing points at them.
CREATE FUNCTION e2a_release_raw_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM raw_messages WHERE digest = OLD.raw_digest FOR UPDATE;
    DELETE FROM raw_messages WHERE digest = OLD.raw_digest
        AND NOT EXISTS (SELECT 1 FROM messages WHERE raw_digest = OLD.raw_digest);
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_release_raw AFTER DELETE ON messages FOR EACH ROW
    WHEN (OLD.raw_digest IS NOT NULL) EXECUTE FUNCTION e2a_release_raw_message();
