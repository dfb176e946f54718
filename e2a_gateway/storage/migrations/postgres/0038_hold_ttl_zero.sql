-- 0038: a hold TTL of 0, which `/v1` protection stored as given (every held message then
-- expired as it was made, its agent's expiration action deciding it unreviewed), becomes the
-- default 604800 seconds: what `holds.ttl_seconds: 0` means from this version on, as in e2a.
UPDATE agents SET hitl_ttl_seconds = 604800 WHERE hitl_ttl_seconds = 0;
