-- 0029: an inbound message's attachments (filename, content type, decoded size, Content-ID,
-- in document order), worked out once when it is accepted and kept with each agent's copy,
-- so its `email.received` lists them wherever it is built (on commit, on the agent's
-- WebSocket, on release from review). NULL: none, or a message stored before this.
ALTER TABLE messages ADD COLUMN attachment_meta_json TEXT;
