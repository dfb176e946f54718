-- 0008: every agent gets a stable internal id. An address can be deleted and registered again
-- by someone else: live subscriptions (WebSocket, dashboard stream) are bound to this id, so
-- they never pass to the address's next owner.
ALTER TABLE agents ADD COLUMN id TEXT;
UPDATE agents SET id = 'agt_' || substr(md5(random()::text || clock_timestamp()::text || email), 1, 24);
ALTER TABLE agents ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX agents_id ON agents(id);
