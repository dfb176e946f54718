-- 0043: when the gateway last looked up a domain's DNS records to verify it (`last_checked_at`;
-- none before the first look), which `/v1`'s DomainView shows as e2a does.
ALTER TABLE domains ADD COLUMN last_checked_at TEXT;
