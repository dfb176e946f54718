-- 0016: feedback sent to `POST /api/feedback` (no account needed), shown to the operators
-- (`operators.accounts`) on the dashboard. `email` is the address the sender gave, or the
-- account's when the request carried a valid API key; null when neither. The retention sweep
-- deletes rows older than `retention.days`.
CREATE TABLE feedback (
    id         TEXT PRIMARY KEY,
    category   TEXT NOT NULL,
    message    TEXT NOT NULL,
    email      TEXT,
    created_at TEXT NOT NULL,
    -- `seq` stands in for SQLite's rowid: insertion order, to break created_at ties.
    seq        BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX feedback_created ON feedback(created_at);
