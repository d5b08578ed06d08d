-- 013_job_record.sql - a job's record is written once, when the job ends.
--
-- Until 012 a claim inserted a 'running' row and the job's end updated it: two writes,
-- two transactions' WAL and a non-HOT update (the row grew by the reply) per job. The
-- claim's row protected nothing the claim's advisory lock does not: the lock keeps twins
-- apart, and a job that died before its end simply runs again (it did so with a row
-- too). Since 013 the claim only takes the lock and reads the record (no write), and
-- job_record writes the record, done, at the job's end: one row insert.
--
-- Compatibility while workers of both versions run (a rolling upgrade): an old worker's
-- claim still inserts a 'running' row and its job_finish updates it; a new worker's
-- claim reads such a row as an earlier attempt that died (it runs the job), and its
-- job_record updates the row it finds. Both functions stay.
--
-- The claim's lock is a session lock: it lasts from the claim across the Duo call to the
-- job's end. job_record hands it to the transaction that writes the record
-- (pg_advisory_xact_lock, then pg_advisory_unlock: the same session may hold both), so
-- it is released by that transaction's COMMIT or ROLLBACK: a twin claiming after that
-- sees the committed record (before 013 the claim's INSERT waited on the uncommitted row
-- instead; a read does not wait).
CREATE FUNCTION job_record(p_job_id text, p_job_type text, p_publisher text, p_reply bytea,
                           p_error_code text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_job_id, 7));
    PERFORM pg_advisory_unlock(hashtextextended(p_job_id, 7));
    -- A row exists only for a job run before (an old worker's claim, a rearmed job, a job
    -- whose lock was lost with its connection): update it. Otherwise a plain insert: no
    -- ON CONFLICT, whose speculative insertion costs an extra WAL record per row; a twin
    -- inserting the same id at once (possible only after a lost lock) fails this
    -- transaction on the primary key, and the job's retry then finds the record.
    UPDATE job SET state = 'done', reply = p_reply, error_code = p_error_code,
                   finished_at = now(), publisher = coalesce(publisher, p_publisher)
     WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        INSERT INTO job (job_id, job_type, state, publisher, reply, error_code, finished_at)
        VALUES (p_job_id, p_job_type, 'done', p_publisher, p_reply, p_error_code, now());
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION job_record(text, text, text, bytea, text) FROM PUBLIC;

-- job_created (btree on created_at) served no query of the project and cost an index
-- insert per job. A BRIN index keeps an operator's purge by age
-- (DELETE FROM job WHERE created_at < ...) from scanning the table, at almost no cost
-- per row: rows are appended in time order. created_at is now when the record was
-- first written: the job's end (or an old worker's claim).
DROP INDEX IF EXISTS job_created;
CREATE INDEX job_created_brin ON job USING brin (created_at);
