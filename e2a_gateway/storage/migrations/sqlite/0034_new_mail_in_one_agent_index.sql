-- 0034: a new inbound message enters one index led by the agent's address instead of two.
-- Each entry in such an index sits on a page of its agent's own, so one message for fifty
-- agents dirtied about 120 pages of the 185 its commit wrote in the two of them. Unread mail
-- is found by messages_agent_status; messages_agent_seq_settled, in place of messages_agent_seq,
-- holds the rest of an agent's mail (read, and all it sent), and a page of all of it merges the
-- first rows of both (e2a_gateway/storage/sql/agent_order.py).
DROP INDEX messages_agent_seq;
CREATE INDEX messages_agent_seq_settled ON messages(agent_email, seq) WHERE status <> 'unread';
