-- 0040: `e2a_lower(text)`, text lowercased beyond ASCII (PostgreSQL's is made by its 0040).
-- SQLite's is the gateway's own Python function, registered on every connection (sqlite.py):
-- nothing to store here.
SELECT 1;
