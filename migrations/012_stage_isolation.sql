-- 012_stage_isolation.sql - one stage's Duo trouble stays with that stage.
--
-- max_calls: the stage's own bulkhead, the Duo calls it may have in flight in one worker
-- (NULL: the workers' STAGE_MAX_CALLS). Adding a nullable column without a default
-- rewrites nothing, so this is instant on a populated table.
ALTER TABLE duo_stage ADD COLUMN max_calls integer
    CHECK (max_calls IS NULL OR max_calls BETWEEN 1 AND 65535);

-- An enroll.begin about to call Duo's /auth/v2/enroll records the attempt first, in a
-- commit of its own: Duo creates the activation when it receives the call, so a rerun of
-- the job that finds its attempt without an enrollment must not call again (a second
-- activation, or duo_user_exists for the user's own first one). The row goes with the
-- enrollment's own commit, and with a call that is known never to have reached Duo.
CREATE TABLE enroll_attempt (
    job_id     text PRIMARY KEY REFERENCES job(job_id) ON DELETE CASCADE,
    stage_id   bigint NOT NULL REFERENCES duo_stage(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enroll_attempt_stage ON enroll_attempt (stage_id);

-- Circuit breakers that are not closed, one row per (Duo host, worker process), written
-- by the worker on each change (a closed breaker deletes its row); duoctl status shows
-- them. Lost without harm: a worker's breakers live in its memory.
CREATE TABLE duo_host_breaker (
    host       text NOT NULL,
    worker     text NOT NULL,
    state      text NOT NULL CHECK (state IN ('open', 'half_open')),
    open_ms    integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, worker)
);
