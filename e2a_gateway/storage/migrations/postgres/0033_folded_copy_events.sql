-- 0033: the `email.received` events of one message's copies for many agents of one account are
-- one row. The first copy's event keeps its row and its envelope; `copies` lists each further
-- copy as [event id, message id, agent, conversation] (JSON), and reading the row gives one
-- event per copy, each envelope made from the first's with its own fields put in (as 0031's
-- shared envelopes were). `event_copies` finds a further copy's row by its event id. Rows
-- written before (a row per copy, 0031's `event_bodies`) read as they did.
ALTER TABLE events ADD COLUMN copies TEXT;
CREATE TABLE event_copies (
    id       TEXT PRIMARY KEY,
    first_id TEXT NOT NULL
);
CREATE FUNCTION e2a_release_event_copies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_copies
        WHERE id IN (SELECT copy->>0 FROM jsonb_array_elements(OLD.copies::jsonb) AS copy);
    RETURN NULL;
END
$$;
CREATE TRIGGER events_release_copies AFTER DELETE ON events FOR EACH ROW
    WHEN (OLD.copies IS NOT NULL) EXECUTE FUNCTION e2a_release_event_copies();
