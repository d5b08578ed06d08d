-- 010_job_finish.sql - the job record's last step as one function, so a worker can send
-- it in the same round trip as its transaction's other statements and its COMMIT
-- (libpq pipeline mode) and still have a missing record fail that transaction: the
-- function raises instead of finishing nothing. It marks the job done with its encoded
-- reply and releases the claim's advisory lock (see common/store/store_jobs.c). It runs
-- as its caller, a worker role that may update job (007).
CREATE FUNCTION job_finish(p_job_id text, p_reply bytea, p_error_code text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job SET state = 'done', reply = p_reply, error_code = p_error_code,
                   finished_at = now()
     WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no record of job % to finish', p_job_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM pg_advisory_unlock(hashtextextended(p_job_id, 7));
END
$$;
REVOKE EXECUTE ON FUNCTION job_finish(text, bytea, text) FROM PUBLIC;
