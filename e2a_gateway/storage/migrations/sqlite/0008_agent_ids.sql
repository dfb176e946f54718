-- 0008: every agent gets a stable internal id. An address can be deleted and registered again
-- by someone else: live subscriptions (WebSocket, dashboard stream) are bound to this id, so
-- they never pass to the address's next owner.
ALTER TABLE agents ADD COLUMN id TEXT;
UPDATE agents SET id = 'agt_' || lower(hex(randomblob(12)));
CREATE UNIQUE INDEX agents_id ON agents(id);
