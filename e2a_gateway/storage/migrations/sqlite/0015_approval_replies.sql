-- 0015: approving by replying to the notice email, and who decided each review and how.
-- `reviewed_by` is the reviewer's address when known; `review_method` says how the review was
-- made (api, dashboard, link, reply, expiry). A notice's reply token is stored only as its
-- SHA-256 (`token_hash`), bound to the held message, the reviewer it was mailed to and the
-- notice's own Message-ID; `used_at` is set by the reply that acted on it, `answers` counts the
-- answers mailed about replies to it that did not act (bounded, so a leaked token cannot flood
-- the reviewer). Those answers wait in `approval_answers` (each with an `approval_answer` job)
-- until handed to the relay. Tokens and answers go with their message.
ALTER TABLE messages ADD COLUMN reviewed_by TEXT;
ALTER TABLE messages ADD COLUMN review_method TEXT;
CREATE TABLE approval_reply_tokens (
    token_hash        TEXT PRIMARY KEY,
    message_id        TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    reviewer          TEXT NOT NULL,
    notice_message_id TEXT NOT NULL,
    created_at        REAL NOT NULL,
    answers           INTEGER NOT NULL DEFAULT 0,
    used_at           REAL
);
CREATE INDEX approval_reply_tokens_message ON approval_reply_tokens(message_id);
CREATE TABLE approval_answers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    data       BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX approval_answers_message ON approval_answers(message_id, id);
