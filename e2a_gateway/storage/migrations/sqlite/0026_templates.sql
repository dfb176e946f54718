-- 0026: the email templates of /v1 accounts (e2a's templates, beta): a subject, a plain-text
-- and an optional HTML part, sources of a flat Mustache subset rendered at send time; an
-- optional alias, unique within the account, names a template on send.
CREATE TABLE templates (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    alias                TEXT,
    subject              TEXT NOT NULL,
    text                 TEXT NOT NULL,
    html                 TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    from_starter_alias   TEXT,
    from_starter_version TEXT
);
CREATE INDEX templates_user ON templates(user_id, seq);
CREATE UNIQUE INDEX templates_user_alias ON templates(user_id, alias) WHERE alias IS NOT NULL;
