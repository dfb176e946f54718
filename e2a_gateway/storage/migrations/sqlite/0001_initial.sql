-- 0001: users, credentials, domains, agents, messages and the job queue.
CREATE TABLE server_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    key_prefix   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE signing_secrets (
    id             TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    seed           TEXT NOT NULL,
    secret_prefix  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    last_signed_at TEXT
);
CREATE INDEX signing_secrets_user ON signing_secrets(user_id, seq);

CREATE TABLE domains (
    user_id            TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    domain             TEXT NOT NULL,
    verification_token TEXT NOT NULL,
    verified           INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    verified_at        TEXT,
    PRIMARY KEY (user_id, domain)
);
-- At most one user can hold a domain verified.
CREATE UNIQUE INDEX domains_verified_once ON domains(domain) WHERE verified = 1;

CREATE TABLE agents (
    email                  TEXT PRIMARY KEY,
    user_id                TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    domain                 TEXT NOT NULL,
    name                   TEXT NOT NULL,
    webhook_url            TEXT,
    agent_mode             TEXT NOT NULL CHECK (agent_mode IN ('cloud', 'local')),
    hitl_enabled           INTEGER NOT NULL DEFAULT 0,
    hitl_ttl_seconds       INTEGER NOT NULL DEFAULT 604800,
    hitl_expiration_action TEXT NOT NULL DEFAULT 'reject',
    created_at             TEXT NOT NULL
);
CREATE INDEX agents_user ON agents(user_id);
CREATE INDEX agents_domain ON agents(domain);

CREATE TABLE messages (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    id                     TEXT NOT NULL UNIQUE,
    user_id                TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent_email            TEXT NOT NULL REFERENCES agents(email) ON DELETE CASCADE,
    direction              TEXT NOT NULL DEFAULT 'inbound',
    envelope_from          TEXT NOT NULL,
    from_addr              TEXT NOT NULL,
    reply_to               TEXT,
    to_json                TEXT NOT NULL,
    cc_json                TEXT NOT NULL,
    subject                TEXT NOT NULL,
    conversation_id        TEXT,
    rfc_message_id         TEXT,
    status                 TEXT NOT NULL DEFAULT 'unread',
    raw_message            BLOB NOT NULL,
    auth_headers_json      TEXT NOT NULL,
    auth_results_json      TEXT NOT NULL,
    delivery_status        TEXT,
    client_ip              TEXT NOT NULL DEFAULT '',
    helo                   TEXT NOT NULL DEFAULT '',
    received_at            TEXT NOT NULL,
    created_at             TEXT NOT NULL
);
CREATE INDEX messages_agent_status ON messages(agent_email, status, seq);
CREATE INDEX messages_agent_rfc_id ON messages(agent_email, rfc_message_id);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    run_at       REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    locked_until REAL,
    created_at   REAL NOT NULL
);
CREATE INDEX jobs_due ON jobs(kind, run_at);
