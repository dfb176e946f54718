-- 0042: the Message-ID of the reply that spent a notice's reply token (`used_by`; none when that
-- reply had no Message-ID). A reply to the notice also addressed to agents has its review
-- committed before the agents' copies: when those fail (451), the sender's retry of the same
-- reply is known by it, and is neither acted on again nor told the message was decided.
ALTER TABLE approval_reply_tokens ADD COLUMN used_by TEXT;
