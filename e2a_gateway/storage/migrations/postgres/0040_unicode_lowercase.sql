-- 0040: `e2a_lower(text)`, text lowercased beyond ASCII whatever the database's locale. A
-- search for `münchen` in subjects and senders (`subject_contains`, `from`) lowercases the
-- column; PostgreSQL's lower() folds as the database's collation does, which in the C locale
-- (a common default of images and managed services) leaves every letter beyond ASCII as it is.
-- ICU's root locale folds them as Python does; a server built without ICU keeps lower().
DO $migration$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION e2a_lower(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $fn$ SELECT lower($1 COLLATE "und-x-icu") $fn$;
    ELSE
        CREATE FUNCTION e2a_lower(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $fn$ SELECT lower($1) $fn$;
    END IF;
END
$migration$;
