-- 0023: an agent's mail in the order it arrived: an inbox page of all its mail (`status=all`)
-- reads the page from this index instead of sorting every message the agent ever received on
-- each request. (A page of unread or read mail keeps messages_agent_status.)
CREATE INDEX messages_agent_seq ON messages(agent_email, seq);
