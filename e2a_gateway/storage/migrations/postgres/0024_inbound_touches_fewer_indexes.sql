-- 0024: storing inbound mail touches only the indexes inbound mail is looked up by. An index
-- led by the agent's address puts each agent's entries in its own place, so one message for
-- fifty agents dirtied a page per agent in each of them (about 300 of a commit's 490 pages):
-- * the outbound indexes (rate counts, review listings) now hold outbound mail only;
-- * the conversation index holds mail that is in a conversation (new inbound mail is not yet);
-- * the Message-ID index is led by the Message-ID, which every copy of one message shares, so
--   the copies' entries sit side by side.
DROP INDEX messages_agent_sent;
CREATE INDEX messages_agent_sent ON messages(agent_email, created_epoch)
    WHERE direction = 'outbound';
DROP INDEX messages_outbound_status;
CREATE INDEX messages_outbound_status ON messages(user_id, status, approval_expires_at)
    WHERE direction = 'outbound';
DROP INDEX messages_agent_conversation;
CREATE INDEX messages_agent_conversation ON messages(agent_email, conversation_id, seq)
    WHERE conversation_id IS NOT NULL;
DROP INDEX messages_agent_rfc_id;
CREATE INDEX messages_rfc_id ON messages(rfc_message_id, agent_email)
    WHERE rfc_message_id IS NOT NULL;
