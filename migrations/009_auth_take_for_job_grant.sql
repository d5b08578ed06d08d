-- 009_auth_take_for_job_grant.sql - auth_challenge_take_for_job (005) under the least
-- privilege of 007: only the roles `duoctl migrate` grants it to may run it. It runs as
-- its caller: the authentication role, which may read and update auth_challenge and
-- execute auth_challenge_take.
REVOKE EXECUTE ON FUNCTION auth_challenge_take_for_job(bigint, bigint, integer, integer, integer,
                                                       text) FROM PUBLIC;
