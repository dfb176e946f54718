-- 0037: what a write with an Idempotency-Key made (the message a send stored or approveReview
-- approved, the webhook createWebhook made or rotateWebhookSecret rotated), recorded on its
-- claim in the same transaction as the thing itself. A request killed after storing its
-- message and before its answer was kept left a bare claim, and a retry five minutes on sent
-- the message again; a retry now finds it here and answers it.
ALTER TABLE idempotency_keys ADD COLUMN made_id TEXT;
