-- 001_init.sql - the first schema: Duo stages, local users, Duo devices, pending
-- enrollments, job records (idempotency), import runs and their pages.
-- Secrets (client_secret, admin_secret_key) are stored only as AES-256-GCM envelopes
-- made by common/secret.c ("v1:<key id>:<base64>"), never as plain text.

CREATE TABLE duo_stage (
    id                    bigserial PRIMARY KEY,
    uuid                  uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    api_hostname          text NOT NULL CHECK (length(api_hostname) BETWEEN 1 AND 255),
    client_id             text NOT NULL CHECK (length(client_id) BETWEEN 1 AND 255),
    client_secret_enc     text NOT NULL,
    admin_integration_key text,
    admin_secret_key_enc  text,
    friendly_name         text,
    configure_flow        text,
    ca_bundle             text,
    sig_version           smallint CHECK (sig_version IN (2, 5)),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((admin_integration_key IS NULL) = (admin_secret_key_enc IS NULL))
);

CREATE TABLE app_user (
    id         bigserial PRIMARY KEY,
    uuid       uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    username   text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 150),
    email      text,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- duo_user_kind says what duo_user_id holds: a Duo user id, or (for imports where
-- only a Duo username was known) a Duo username.
CREATE TABLE duo_device (
    id            bigserial PRIMARY KEY,
    uuid          uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    user_id       bigint NOT NULL REFERENCES app_user(id) ON DELETE CASCADE,
    stage_id      bigint NOT NULL REFERENCES duo_stage(id) ON DELETE CASCADE,
    duo_user_id   text NOT NULL CHECK (length(duo_user_id) BETWEEN 1 AND 200),
    duo_user_kind text NOT NULL DEFAULT 'user_id' CHECK (duo_user_kind IN ('user_id', 'username')),
    name          text NOT NULL,
    confirmed     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used     timestamptz,
    UNIQUE (stage_id, user_id, duo_user_id)
);
-- "Device with Credential ID already exists": one device per Duo user per stage.
CREATE UNIQUE INDEX duo_device_stage_duo_user ON duo_device (stage_id, duo_user_id);
CREATE INDEX duo_device_user ON duo_device (user_id);

CREATE TABLE duo_enrollment (
    id              bigserial PRIMARY KEY,
    uuid            uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    stage_id        bigint NOT NULL REFERENCES duo_stage(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES app_user(id) ON DELETE CASCADE,
    duo_user_id     text NOT NULL,
    activation_code text NOT NULL,
    expires_at      timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'success', 'invalid')),
    device_id       bigint REFERENCES duo_device(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
CREATE INDEX duo_enrollment_stage_user ON duo_enrollment (stage_id, user_id);

-- One row per job id: the claim that makes redeliveries and repeated job ids no-ops,
-- and the stored reply that is re-sent for them.
CREATE TABLE job (
    job_id      text PRIMARY KEY CHECK (length(job_id) BETWEEN 1 AND 255),
    job_type    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('running', 'done')),
    attempts    integer NOT NULL DEFAULT 1,
    reply       bytea,
    error_code  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX job_created ON job (created_at);

CREATE TABLE import_run (
    id             bigserial PRIMARY KEY,
    uuid           uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    stage_id       bigint NOT NULL REFERENCES duo_stage(id) ON DELETE CASCADE,
    job_id         text NOT NULL,
    reply_to       text,
    correlation_id text,
    state          text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    dry_run        boolean NOT NULL DEFAULT false,
    page_size      integer NOT NULL CHECK (page_size BETWEEN 1 AND 300),
    total_objects  bigint,
    pages_total    integer NOT NULL DEFAULT 0,
    pages_done     integer NOT NULL DEFAULT 0,
    created        bigint NOT NULL DEFAULT 0,
    existing       bigint NOT NULL DEFAULT 0,
    unknown_user   bigint NOT NULL DEFAULT 0,
    errors         integer NOT NULL DEFAULT 0,
    error_message  text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    last_progress_at timestamptz
);
-- One running import per stage at a time.
CREATE UNIQUE INDEX import_run_one_running ON import_run (stage_id) WHERE state = 'running';

CREATE TABLE import_page (
    run_id     bigint NOT NULL REFERENCES import_run(id) ON DELETE CASCADE,
    page_no    integer NOT NULL,
    "offset"   bigint NOT NULL,
    "limit"    integer NOT NULL,
    state      text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    created    integer NOT NULL DEFAULT 0,
    existing   integer NOT NULL DEFAULT 0,
    unknown_user integer NOT NULL DEFAULT 0,
    error      text,
    done_at    timestamptz,
    PRIMARY KEY (run_id, page_no)
);

-- Shared Admin API page budget of an import run (token bucket across workers).
CREATE TABLE import_pace (
    run_id        bigint PRIMARY KEY REFERENCES import_run(id) ON DELETE CASCADE,
    rate_per_min  double precision NOT NULL,
    next_slot_at  timestamptz NOT NULL DEFAULT now()
);

-- Push-fatigue guard: challenges per user, shared by every authentication worker.
CREATE TABLE auth_challenge (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES app_user(id) ON DELETE CASCADE,
    stage_id    bigint NOT NULL REFERENCES duo_stage(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    result      text
);
CREATE INDEX auth_challenge_user_time ON auth_challenge (user_id, created_at);
