-- 0022: each agent's inbound gate (e2a's protection config): who may mail it unquestioned
-- (open, an allowlist of addresses, a list of domains; matched on a DMARC-aligned From) and
-- what becomes of other mail (flag: delivered flagged; review: held; block: refused at SMTP).
-- Open for every agent, as before. An inbound message held for review carries hold =
-- 'pending_review' (not delivered: no webhook job, not listed) until it is approved (hold
-- NULL, delivered then) or rejected ('rejected', kept hidden), or its hold expires.
ALTER TABLE agents ADD COLUMN inbound_gate_policy TEXT NOT NULL DEFAULT 'open';
ALTER TABLE agents ADD COLUMN inbound_gate_allowlist_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN inbound_gate_action TEXT NOT NULL DEFAULT 'flag';
ALTER TABLE messages ADD COLUMN hold TEXT;
ALTER TABLE messages ADD COLUMN hold_expires_at REAL;
ALTER TABLE messages ADD COLUMN flag_reason TEXT;
CREATE INDEX messages_held ON messages(user_id, hold, hold_expires_at) WHERE hold IS NOT NULL;
