-- Job leases name their holder, so a restarted replica can free its own at once.
ALTER TABLE jobs ADD COLUMN locked_by TEXT;
