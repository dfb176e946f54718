-- 0030: request limits slide, as e2a's do: a request is allowed while fewer than the limit
-- were allowed for its key in the window before it, and only allowed requests are counted.
-- Each counted request is a row of its own, gone once it has left its window. The fixed
-- windows' counts are dropped: for at most one window after the upgrade, limits start afresh.
DROP TABLE rate_limits;
CREATE TABLE rate_limit_hits (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_limit_hits_key ON rate_limit_hits(key, at);
CREATE INDEX rate_limit_hits_expiry ON rate_limit_hits(expires_at);
