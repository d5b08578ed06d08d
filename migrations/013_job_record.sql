-- 013_job_record.sql - a job's record is written once, when the job ends; new devices get
-- time-ordered uuids.
--
-- Until 012 a claim inserted a 'running' row and the job's end updated it: two writes,
-- two transactions' WAL and a non-HOT update (the row grew by the reply) per job. The
-- claim's row protected nothing the claim's advisory lock does not: the lock keeps twins
-- apart, and a job that died before its end simply runs again (it did so with a row
-- too). Since 013 the claim only takes the lock and reads the record (no write), and
-- the job's end writes the record, done: one row insert.
--
-- Compatibility while workers of both versions run (a rolling upgrade): an old worker's
-- claim still inserts a 'running' row and its job_finish (010) updates it; a new
-- worker's claim reads such a row as an earlier attempt that died (it runs the job), and
-- its record updates the row it finds. job_finish stays for the old workers.
--
-- The claim's lock is a session lock: it lasts from the claim across the Duo call to the
-- job's end. The statement that writes the record (common/store/store_jobs.c) hands it
-- to its transaction (pg_advisory_xact_lock, then pg_advisory_unlock: one session may
-- hold both), so it is released by that transaction's COMMIT or ROLLBACK: a twin that
-- claims after that reads the committed record (before 013 the claim's INSERT waited on
-- the uncommitted row instead; a read does not wait). The statement is plain SQL, not a
-- function: a PL/pgSQL body costs an executor start per statement inside it, and the
-- record is written once per job. Workers may already insert and update job (007).

-- job_created (btree on created_at) served no query of the project and cost an index
-- insert per job. A BRIN index keeps an operator's purge by age
-- (DELETE FROM job WHERE created_at < ...) from scanning the table, at almost no cost
-- per row: rows are appended in time order. created_at is now when the record was
-- first written: the job's end (or an old worker's claim).
DROP INDEX IF EXISTS job_created;
CREATE INDEX job_created_brin ON job USING brin (created_at);

-- A new device's uuid is time-ordered (the layout of UUID version 7: 48 bits of Unix
-- milliseconds, then the random bits of gen_random_uuid, version nibble 7): inserts into
-- the unique index on uuid then land on its rightmost pages instead of a random one each,
-- which at a million devices kept most of that index's pages churning through shared
-- buffers during an import. Uniqueness still comes from the 74 random bits (and the
-- index). Existing uuids are not touched: the default applies to new rows only, and
-- setting it rewrites nothing. set_bit 52 and 53 turn the version nibble 4 into 7.
ALTER TABLE duo_device ALTER COLUMN uuid SET DEFAULT encode(set_bit(set_bit(overlay(
    uuid_send(gen_random_uuid()) PLACING substring(int8send(floor(date_part('epoch',
    clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;
