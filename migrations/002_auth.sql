-- 002_auth.sql - the push-fatigue guard: when a challenge was decided, and one function
-- that takes a challenge slot for a user in a single round trip.
--
-- Invariant: auth_challenge_take() holds the user's row lock (FOR UPDATE) while it
-- counts and inserts, and each of its statements reads a fresh snapshot (plpgsql,
-- READ COMMITTED), so two workers can never both pass the cap for the same user.

ALTER TABLE auth_challenge ADD COLUMN decided_at timestamptz;
CREATE INDEX auth_challenge_user_deny ON auth_challenge (user_id, decided_at)
    WHERE result = 'deny';

-- Answers challenge_id (NULL when refused), retry_after_secs and reason
-- ('ok' | 'cap' | 'cooldown'). Times use clock_timestamp(): the lock wait happens inside
-- the transaction, after now() was fixed.
CREATE FUNCTION auth_challenge_take(p_user bigint, p_stage bigint, p_cap integer,
                                    p_window_secs integer, p_cooldown_secs integer,
                                    OUT challenge_id bigint, OUT retry_after_secs integer,
                                    OUT reason text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    t         timestamptz;
    last_deny timestamptz;
    nth       timestamptz;
BEGIN
    PERFORM 1 FROM app_user WHERE id = p_user FOR UPDATE;
    t := clock_timestamp();
    SELECT max(decided_at) INTO last_deny FROM auth_challenge
     WHERE user_id = p_user AND result = 'deny';
    IF last_deny IS NOT NULL AND last_deny + make_interval(secs => p_cooldown_secs) > t THEN
        retry_after_secs := ceil(extract(epoch FROM
                                 last_deny + make_interval(secs => p_cooldown_secs) - t));
        reason := 'cooldown';
        RETURN;
    END IF;
    -- The cap-th newest challenge in the window: while it is inside, the cap is reached.
    SELECT created_at INTO nth FROM auth_challenge
     WHERE user_id = p_user AND created_at > t - make_interval(secs => p_window_secs)
     ORDER BY created_at DESC OFFSET p_cap - 1 LIMIT 1;
    IF nth IS NOT NULL THEN
        retry_after_secs := greatest(1, ceil(extract(epoch FROM
                                 nth + make_interval(secs => p_window_secs) - t)));
        reason := 'cap';
        RETURN;
    END IF;
    INSERT INTO auth_challenge (user_id, stage_id, created_at)
    VALUES (p_user, p_stage, t) RETURNING id INTO challenge_id;
    retry_after_secs := 0;
    reason := 'ok';
END;
$$;
