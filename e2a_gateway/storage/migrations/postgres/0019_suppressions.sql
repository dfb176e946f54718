-- 0019: recipient suppressions. A row blocks sends to `address` from every agent of the account
-- (`agent_email` empty: added by a hard bounce) or from one agent (`agent_email` set: added by
-- the account). Later sends to a suppressed address are refused, never silently dropped.
CREATE TABLE suppressions (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent_email       TEXT NOT NULL DEFAULT '',
    address           TEXT NOT NULL,
    source            TEXT NOT NULL,
    reason            TEXT,
    source_message_id TEXT,
    created_at        TEXT NOT NULL,
    UNIQUE (user_id, agent_email, address)
);
CREATE INDEX suppressions_user ON suppressions(user_id, seq);
