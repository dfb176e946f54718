-- 0047: the events of one message are found by an index (`GET /v1/events?message_id=`):
-- without one, the listing read every event of the account. One entry per row, so a message
-- to many agents of an account adds one, not one per copy: a further copy's `email.received`
-- is folded into its first copy's row (0033) and found by its event id through
-- `event_copies`.
CREATE INDEX events_message ON events(user_id, message_id);
