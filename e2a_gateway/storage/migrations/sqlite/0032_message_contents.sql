-- 0032: the copies of one inbound message for many agents keep what they share once. A message
-- stored for two agents or more gets one `message_contents` row (its sender, recipients,
-- subject, Message-ID, authentication results, client, arrival time, attachments' metadata and
-- raw bytes' digest); each agent's copy is a narrow `messages` row naming it by `content_seq`,
-- with its own id, owner, agent, status, conversation, signed headers and hold, and the shared
-- columns left empty. Mail for one agent, outbound mail and every row stored before keep their
-- whole row (`content_seq` NULL). Reads go through `messages_with_content`, which puts the
-- shared columns back. A content row goes with its last copy; its raw bytes with the last row
-- of either table pointing at them. A column added to `messages` later is added to the view
-- too (DROP VIEW, CREATE VIEW), shared or not.
CREATE TABLE message_contents (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_from        TEXT NOT NULL,
    from_addr            TEXT NOT NULL,
    reply_to             TEXT,
    to_json              TEXT NOT NULL,
    cc_json              TEXT NOT NULL,
    subject              TEXT NOT NULL,
    rfc_message_id       TEXT,
    raw_digest           TEXT NOT NULL REFERENCES raw_messages(digest),
    auth_results_json    TEXT NOT NULL,
    client_ip            TEXT NOT NULL,
    helo                 TEXT NOT NULL,
    received_at          TEXT NOT NULL,
    attachment_meta_json TEXT
);
CREATE INDEX message_contents_rfc_id ON message_contents(rfc_message_id)
    WHERE rfc_message_id IS NOT NULL;
CREATE INDEX message_contents_raw_digest ON message_contents(raw_digest);
ALTER TABLE messages ADD COLUMN content_seq INTEGER;
CREATE INDEX messages_content ON messages(content_seq) WHERE content_seq IS NOT NULL;
-- A copy has no digest of its own: the index keeps the rows that have one.
DROP INDEX messages_raw_digest;
CREATE INDEX messages_raw_digest ON messages(raw_digest) WHERE raw_digest IS NOT NULL;
DROP TRIGGER messages_release_raw;
CREATE TRIGGER messages_release_raw AFTER DELETE ON messages
WHEN OLD.raw_digest IS NOT NULL
BEGIN
    DELETE FROM raw_messages WHERE digest = OLD.raw_digest
        AND NOT EXISTS (SELECT 1 FROM messages WHERE raw_digest = OLD.raw_digest)
        AND NOT EXISTS (SELECT 1 FROM message_contents WHERE raw_digest = OLD.raw_digest);
END;
CREATE TRIGGER messages_release_content AFTER DELETE ON messages
WHEN OLD.content_seq IS NOT NULL
BEGIN
    DELETE FROM message_contents WHERE seq = OLD.content_seq
        AND NOT EXISTS (SELECT 1 FROM messages WHERE content_seq = OLD.content_seq);
END;
CREATE TRIGGER message_contents_release_raw AFTER DELETE ON message_contents
BEGIN
    DELETE FROM raw_messages WHERE digest = OLD.raw_digest
        AND NOT EXISTS (SELECT 1 FROM messages WHERE raw_digest = OLD.raw_digest)
        AND NOT EXISTS (SELECT 1 FROM message_contents WHERE raw_digest = OLD.raw_digest);
END;
CREATE VIEW messages_with_content AS
SELECT
    m.seq, m.id, m.user_id, m.agent_email, m.direction,
    CASE WHEN m.content_seq IS NULL THEN m.envelope_from ELSE c.envelope_from END
        AS envelope_from,
    CASE WHEN m.content_seq IS NULL THEN m.from_addr ELSE c.from_addr END AS from_addr,
    CASE WHEN m.content_seq IS NULL THEN m.reply_to ELSE c.reply_to END AS reply_to,
    CASE WHEN m.content_seq IS NULL THEN m.to_json ELSE c.to_json END AS to_json,
    CASE WHEN m.content_seq IS NULL THEN m.cc_json ELSE c.cc_json END AS cc_json,
    CASE WHEN m.content_seq IS NULL THEN m.subject ELSE c.subject END AS subject,
    m.conversation_id,
    CASE WHEN m.content_seq IS NULL THEN m.rfc_message_id ELSE c.rfc_message_id END
        AS rfc_message_id,
    m.status, m.auth_headers_json,
    CASE WHEN m.content_seq IS NULL THEN m.auth_results_json ELSE c.auth_results_json END
        AS auth_results_json,
    m.delivery_status,
    CASE WHEN m.content_seq IS NULL THEN m.client_ip ELSE c.client_ip END AS client_ip,
    CASE WHEN m.content_seq IS NULL THEN m.helo ELSE c.helo END AS helo,
    CASE WHEN m.content_seq IS NULL THEN m.received_at ELSE c.received_at END AS received_at,
    m.created_at, m.kind, m.bcc_json, m.body_text, m.body_html, m.attachments_json,
    m.in_reply_to, m.references_json, m.approval_expires_at, m.reviewed_at,
    m.rejection_reason, m.method, m.edited, m.send_error, m.created_epoch,
    CASE WHEN m.content_seq IS NULL THEN m.raw_digest ELSE c.raw_digest END AS raw_digest,
    m.sent_at, m.deleted_at, m.reviewed_by, m.review_method, m.reading_json, m.hold,
    m.hold_expires_at, m.flag_reason, m.complained_at,
    CASE WHEN m.content_seq IS NULL THEN m.attachment_meta_json ELSE c.attachment_meta_json END
        AS attachment_meta_json,
    m.content_seq
FROM messages m LEFT JOIN message_contents c ON c.seq = m.content_seq;
