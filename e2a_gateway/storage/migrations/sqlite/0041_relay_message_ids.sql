-- 0041: the id a relay named for each recipient of an outbound message it took (its reply to
-- DATA: Amazon SES's `250 Ok <id>`, whose Message-ID `<id@…amazonses.com>` replaces the
-- gateway's). A reply naming `<id@any domain>` in In-Reply-To or References joins the sent
-- message's conversation. The rows go with their message.
CREATE TABLE relay_message_ids (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    recipient  TEXT NOT NULL,
    relay_id   TEXT NOT NULL,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX relay_message_ids_relay_id ON relay_message_ids(relay_id);
