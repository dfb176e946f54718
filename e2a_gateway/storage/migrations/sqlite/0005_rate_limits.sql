-- 0005: fixed-window request counters (agent registrations per IP, message polls per user),
-- kept in the database so every replica sharing it counts against the same limit.
CREATE TABLE rate_limits (
    key TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_expiry ON rate_limits(expires_at);
