-- 0037: where each agent begins in the events log. `events_seq_at_creation` is the highest
-- `events.seq` when the agent was made: the events of its address up to there were an earlier
-- agent's (deleted, the address registered again), and its agent keys may not see them. Agents
-- made before keep what their creation time (to the second) kept from them.
ALTER TABLE agents ADD COLUMN events_seq_at_creation BIGINT NOT NULL DEFAULT 0;
UPDATE agents SET events_seq_at_creation = coalesce(
    (SELECT max(seq) FROM events
        WHERE created_epoch < extract(epoch FROM agents.created_at::timestamptz)),
    0
);
