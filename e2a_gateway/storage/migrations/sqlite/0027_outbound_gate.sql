-- 0027: each agent's outbound gate (e2a's protection config): whom the agent may mail
-- unquestioned (open: anyone; allowlist: the listed addresses; domain: addresses on the
-- agent's own domain) and what becomes of a send to anyone else (flag: sent, the reason kept;
-- review: held for approval; block: refused). The approval hold of every send (hitl_enabled)
-- is an allowlist with no entry and action review, as e2a maps it: agents holding their mail
-- keep holding it.
ALTER TABLE agents ADD COLUMN outbound_gate_policy TEXT NOT NULL DEFAULT 'open';
ALTER TABLE agents ADD COLUMN outbound_gate_allowlist_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN outbound_gate_action TEXT NOT NULL DEFAULT 'flag';
UPDATE agents SET outbound_gate_policy = 'allowlist', outbound_gate_action = 'review' WHERE hitl_enabled;
