-- 0017: an agent's dead letters (inbound mail whose webhook deliveries ran out of retries,
-- `delivery_status = 'failed'`) found without scanning its inbox: they are listed and
-- redelivered by hand (`/api/v1/agents/{email}/dead-letters`).
CREATE INDEX messages_dead_letters ON messages(agent_email, seq) WHERE delivery_status = 'failed';
