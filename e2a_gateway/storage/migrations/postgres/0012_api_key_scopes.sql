-- 0010: an API key has a scope: `account` reaches the whole account (every key so far did),
-- `agent` only the agent whose stable id is `agent_id`. A key may also expire (`expires_at`,
-- RFC 3339 UTC); past it, it is refused like a revoked one.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'account'
    CHECK (scope IN ('account', 'agent'));
ALTER TABLE api_keys ADD COLUMN agent_id TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
CREATE INDEX api_keys_agent ON api_keys(agent_id) WHERE agent_id IS NOT NULL;
