-- 007_least_privilege.sql - what the least-privilege worker roles need from the schema.
-- The push-fatigue guard locks the user's app_user row (FOR UPDATE), which would need
-- UPDATE on app_user: it runs as its owner instead, with a fixed search_path, so the
-- authentication worker's role needs only EXECUTE on it (granted by `duoctl migrate`).
-- Nobody but the owner creates objects in the schema (PostgreSQL 15's default for new
-- databases; older clusters upgraded in place still grant it to PUBLIC).
ALTER FUNCTION auth_challenge_take(bigint, bigint, integer, integer, integer)
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION auth_challenge_take(bigint, bigint, integer, integer, integer)
    FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
