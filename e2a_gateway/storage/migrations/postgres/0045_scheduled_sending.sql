-- 0045: scheduled sending (e2a's beta `send_at`, docs/api.md). An outbound message sent with
-- a future `send_at` keeps that instant (`scheduled_at`, seconds since the epoch, as
-- `approval_expires_at` is kept; NULL for mail sent at once and for mail received), after it
-- is sent too: its send job is due then, one held for review is sent then once approved, and
-- one trashed before then has its job taken away until it is restored.
ALTER TABLE messages ADD COLUMN scheduled_at DOUBLE PRECISION;
DROP VIEW messages_with_content;
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
    m.content_seq, m.unsubscribe, m.scheduled_at
FROM messages m LEFT JOIN message_contents c ON c.seq = m.content_seq;
