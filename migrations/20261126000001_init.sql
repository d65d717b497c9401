-- flowpilot schema v1. PostgreSQL is the truth (DESIGN.md): every execution,
-- step attempt, retry and dead letter lives here; Redis only moves work.
-- Every tenant-owned row carries account_id, and every query filters by it.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once at creation; only a SHA-256 of the secret is kept.
-- `prefix` (the first characters) lets people tell keys apart in listings.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- The engine's mirror of the CRM's contacts.
CREATE TABLE contacts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id   uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    external_id  text,
    email        text,
    phone        text,
    timezone     text NOT NULL DEFAULT 'UTC',
    attributes   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    tags         text[] NOT NULL DEFAULT '{}',
    opted_out    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, id),
    UNIQUE (account_id, external_id)
);
CREATE INDEX contacts_account_keyset ON contacts (account_id, created_at DESC, id DESC);
CREATE INDEX contacts_account_email ON contacts (account_id, lower(email));
CREATE INDEX contacts_tags ON contacts USING gin (tags);

CREATE TABLE workflows (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description     text,
    is_active       boolean NOT NULL DEFAULT false,
    latest_version  integer NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, id)
);
CREATE INDEX workflows_account_keyset ON workflows (account_id, created_at DESC, id DESC);

-- Immutable: a definition never changes once written (trigger below); a
-- change is a new version. Executions pin (workflow_id, version).
CREATE TABLE workflow_versions (
    workflow_id  uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version      integer NOT NULL CHECK (version > 0),
    account_id   uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    definition   jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, version)
);

CREATE FUNCTION workflow_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'workflow_versions are immutable: add a new version instead'
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER workflow_versions_no_update
    BEFORE UPDATE ON workflow_versions
    FOR EACH ROW EXECUTE FUNCTION workflow_versions_immutable();

-- One row per contact entering a workflow. `status` follows the state
-- machine of DESIGN.md; every non-final row says why it is not moving
-- (waiting_reason) and when it will (next_action_at).
CREATE TABLE workflow_executions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id          uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workflow_id         uuid NOT NULL,
    workflow_version    integer NOT NULL,
    contact_id          uuid NOT NULL,
    status              text NOT NULL DEFAULT 'QUEUED' CHECK (status IN
                            ('QUEUED', 'RUNNING', 'WAITING', 'RETRYING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    priority            text NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    current_step_index  integer NOT NULL DEFAULT 0 CHECK (current_step_index >= 0),
    current_step_id     text,
    -- Attempts of the current step; the idempotency key of a side effect is
    -- `<execution id>:<step index>:<attempt>`.
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- Outputs of earlier steps, readable by later ones.
    context             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
    metadata            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    idempotency_key     text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- Where it came from: api, arq, kubernetes (uid kept in idempotency_key).
    source              text NOT NULL DEFAULT 'api',
    waiting_reason      text,
    resume_at           timestamptz,
    next_attempt_at     timestamptz,
    lease_owner         text,
    lease_expires_at    timestamptz,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    FOREIGN KEY (workflow_id, workflow_version) REFERENCES workflow_versions (workflow_id, version),
    FOREIGN KEY (account_id, workflow_id) REFERENCES workflows (account_id, id) ON DELETE CASCADE,
    FOREIGN KEY (account_id, contact_id) REFERENCES contacts (account_id, id) ON DELETE CASCADE,
    -- A repeated trigger with the same key starts nothing new.
    UNIQUE (account_id, idempotency_key),
    CHECK (status <> 'WAITING' OR resume_at IS NOT NULL OR waiting_reason IS NOT NULL),
    CHECK (status <> 'RETRYING' OR next_attempt_at IS NOT NULL),
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);
-- Keyset pagination (created_at DESC, id DESC) per account, alone and with
-- each list filter.
CREATE INDEX executions_account_keyset ON workflow_executions (account_id, created_at DESC, id DESC);
CREATE INDEX executions_workflow_keyset ON workflow_executions (account_id, workflow_id, created_at DESC, id DESC);
CREATE INDEX executions_contact_keyset ON workflow_executions (account_id, contact_id, created_at DESC, id DESC);
CREATE INDEX executions_status_keyset ON workflow_executions (account_id, status, created_at DESC, id DESC);
-- The recovery loop's scans: due waits, due retries, lapsed leases, and
-- rows queued but possibly lost from Redis. Partial, so they stay small.
CREATE INDEX executions_due_waits ON workflow_executions (resume_at) WHERE status = 'WAITING';
CREATE INDEX executions_due_retries ON workflow_executions (next_attempt_at) WHERE status = 'RETRYING';
CREATE INDEX executions_leases ON workflow_executions (lease_expires_at) WHERE status = 'RUNNING';
CREATE INDEX executions_queued ON workflow_executions (updated_at) WHERE status = 'QUEUED';

-- One row per action attempt, written in the same transaction as the
-- execution row's checkpoint. Partitioned by month on created_at so
-- retention drops whole partitions; the key must therefore include
-- created_at (the seed DDL's `id` alone cannot be a partitioned key).
-- Partitions are created ahead by code (store::partition), never here,
-- so that a fresh database and a year-old one follow the same path.
CREATE SEQUENCE execution_logs_id_seq AS bigint;
CREATE TABLE execution_logs (
    id            bigint NOT NULL DEFAULT nextval('execution_logs_id_seq'),
    execution_id  uuid NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    account_id    uuid NOT NULL,
    step_index    integer NOT NULL CHECK (step_index >= 0),
    step_id       text NOT NULL,
    action_type   text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt >= 1),
    status        text NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED', 'WAITING', 'RETRYING', 'CANCELLED')),
    config        jsonb,
    response      jsonb,
    error         text,
    started_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    duration_ms   integer CHECK (duration_ms >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE execution_logs_id_seq OWNED BY execution_logs.id;
-- An execution's logs in order, for keyset pages; and per-account scans.
CREATE INDEX execution_logs_execution ON execution_logs (execution_id, id);
CREATE INDEX execution_logs_account_time ON execution_logs (account_id, created_at);

-- Executions that exhausted their retries. Also announced in the Redis
-- sorted set arq:queue:dead; this table is the record.
CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    execution_id  uuid NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step_index    integer NOT NULL,
    step_id       text,
    action_type   text,
    attempts      integer NOT NULL,
    error         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE INDEX dead_letters_account_keyset ON dead_letters (account_id, created_at DESC, id DESC);
CREATE INDEX dead_letters_unresolved ON dead_letters (account_id) WHERE resolved_at IS NULL;
