-- 0011: the answers to writes sent with an Idempotency-Key (the `/v1` API), per user, so a
-- retry replays the first answer instead of writing again. `key_hash` is the SHA-256 of the
-- key; `request_hash` of the request (route and raw body); `token` names the claim while the
-- write runs (`status` and `answer` are null until it completes). `answer` is sealed with a key
-- derived from the server key and the Idempotency-Key itself. The retention sweep deletes rows
-- a day after they were claimed and completed.
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    token        TEXT NOT NULL,
    status       INTEGER,
    answer       BLOB,
    claimed_at   REAL NOT NULL,
    completed_at REAL,
    PRIMARY KEY (user_id, key_hash)
);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys(claimed_at);
