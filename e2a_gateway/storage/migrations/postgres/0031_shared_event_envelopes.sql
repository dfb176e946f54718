-- 0031: the `email.received` events of one message's copies for many agents of one account
-- keep the envelope they share once. The first copy's event holds its own envelope as before;
-- each further copy's holds none (an empty envelope) and names the shared one by `body_id`,
-- and its own fields (its event id, message id, agent, conversation) are put into it when the
-- event is read. A body goes once no event older than it is left (the events sweep), or with
-- its account.
CREATE TABLE event_bodies (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_epoch DOUBLE PRECISION NOT NULL,
    envelope      BYTEA NOT NULL
);
CREATE INDEX event_bodies_created ON event_bodies(created_epoch);
CREATE INDEX event_bodies_user ON event_bodies(user_id);
ALTER TABLE events ADD COLUMN body_id TEXT;
