-- 0035: dashboard sessions signed out before they expired. A session is a sealed cookie of
-- which nothing was stored, so a copy of it taken before sign-out stayed valid; signing out now
-- records the session's id here, and every dashboard request on every replica looks it up (by
-- the primary key). `expires_at` (epoch seconds) is when the session would have expired
-- anyway: no row is needed past it, and the retention sweep deletes it then.
CREATE TABLE dashboard_signouts (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (user_id, session_id)
);
CREATE INDEX dashboard_signouts_expires ON dashboard_signouts(expires_at);
