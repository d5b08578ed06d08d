-- 005_auth_push_once.sql - at most one push per authentication job.
--
-- A challenge row now names the job that took it and, once Duo answered the
-- asynchronous auth call, the transaction id (txid) to wait on. A job that runs again
-- (worker killed, redelivery) finds its own challenge instead of taking a new one:
-- with a txid it resumes waiting (auth_status is safe to repeat); without one a push
-- may already have gone out, so it must not push again.
--
-- Invariant: one challenge per job (unique job_id), taken under the user's row lock as
-- before, so a rerun never spends a second guard slot.

ALTER TABLE auth_challenge ADD COLUMN job_id text, ADD COLUMN duo_txid text;
CREATE UNIQUE INDEX auth_challenge_job ON auth_challenge (job_id) WHERE job_id IS NOT NULL;

-- As auth_challenge_take, plus: p_job's own challenge when it has one (reason
-- 'resume', with its txid and result), else a new challenge recorded with p_job.
CREATE FUNCTION auth_challenge_take_for_job(p_user bigint, p_stage bigint, p_cap integer,
                                            p_window_secs integer, p_cooldown_secs integer,
                                            p_job text,
                                            OUT challenge_id bigint, OUT retry_after_secs integer,
                                            OUT reason text, OUT duo_txid text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT c.id, c.duo_txid INTO challenge_id, duo_txid
      FROM auth_challenge c WHERE c.job_id = p_job;
    IF challenge_id IS NOT NULL THEN
        retry_after_secs := 0;
        reason := 'resume';
        RETURN;
    END IF;
    SELECT t.challenge_id, t.retry_after_secs, t.reason
      INTO challenge_id, retry_after_secs, reason
      FROM auth_challenge_take(p_user, p_stage, p_cap, p_window_secs, p_cooldown_secs) t;
    IF challenge_id IS NOT NULL THEN
        UPDATE auth_challenge SET job_id = p_job WHERE id = challenge_id;
    END IF;
END;
$$;
