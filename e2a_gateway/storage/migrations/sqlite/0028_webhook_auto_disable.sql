-- 0028: e2a's auto-disable of chronically failing webhooks. `auto_disabled_at` (epoch seconds)
-- is when the sweep turned a webhook off; re-enabling clears it. The sweep reads
-- the deliveries of the last 72 hours that are settled (delivered or failed for good), so
-- their index holds only those: a delivery enters it when it settles, never when an event
-- queues it, and queueing touches no more indexes than before.
ALTER TABLE webhooks ADD COLUMN auto_disabled_at REAL;
CREATE INDEX webhook_deliveries_settled ON webhook_deliveries(created_epoch)
    WHERE status IN ('delivered', 'failed');
