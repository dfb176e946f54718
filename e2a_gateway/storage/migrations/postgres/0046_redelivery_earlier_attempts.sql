-- 0046: how many attempts the earlier jobs of a job's work made (`earlier_attempts`; 0 but for
-- a dead letter redelivered by hand, docs/delivery.md). `attempts` counts the job's own, which
-- its retry schedule goes by, so a redelivery that fails again is retried after about 30 s;
-- the attempts it makes are numbered on from the earlier ones (`X-E2A-Delivery-Attempt`).
ALTER TABLE jobs ADD COLUMN earlier_attempts INTEGER NOT NULL DEFAULT 0;
