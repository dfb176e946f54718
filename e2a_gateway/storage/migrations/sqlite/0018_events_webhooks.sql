-- 0018: the events log of the `/v1` API and its webhook subscribers. `events` holds each event's
-- envelope exactly as pushed (30 days; then the retention sweep deletes it). `webhooks` are an
-- account's subscribers; the signing secret is derived from `seed` with the server key, and
-- during a rotation's grace the previous seed signs too. `webhook_deliveries` is one event (or a
-- test) on its way to one webhook: the queue the delivery worker claims from (`run_at`,
-- `locked_until`) and the record of its last attempt.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    agent_email     TEXT,
    conversation_id TEXT,
    message_id      TEXT,
    created_epoch   REAL NOT NULL,
    envelope        BLOB NOT NULL
);
CREATE INDEX events_user ON events(user_id, seq);
CREATE INDEX events_created ON events(created_epoch);

CREATE TABLE webhooks (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url               TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    events_json       TEXT NOT NULL,
    filters_json      TEXT NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1,
    seed              TEXT NOT NULL,
    previous_seed     TEXT,
    previous_until    REAL,
    created_at        TEXT NOT NULL,
    last_delivered_at TEXT
);
CREATE INDEX webhooks_user ON webhooks(user_id, seq);

CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    envelope         BLOB NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL,
    locked_until     REAL,
    locked_by        TEXT,
    created_epoch    REAL NOT NULL,
    last_attempt_at  REAL,
    last_status_code INTEGER,
    last_error       TEXT,
    last_latency_ms  INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(run_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, seq);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
