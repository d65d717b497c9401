-- Bulk operations: a retry, a cancel or an enrollment over many targets,
-- recorded before any of it is done and processed in batches by workers
-- (`run_operation` jobs on the low-priority queue). Each batch commits its
-- targets' changes with the operation's progress in one transaction, so a
-- worker killed mid-operation loses nothing and does nothing twice: the
-- next worker starts at `position`.
CREATE TABLE operations (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind              text NOT NULL CHECK (kind IN ('retry', 'cancel', 'enroll')),
    state             text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'running', 'completed', 'cancelled', 'failed')),
    -- What was asked, as asked (the filter, the workflow, the policy).
    request           jsonb NOT NULL CHECK (jsonb_typeof(request) = 'object'),
    -- The executions (retry, cancel) or contacts (enroll by ids) to work
    -- on, fixed when the operation is created; empty for an enrollment by
    -- contact filter, which walks the contacts by id from `cursor`.
    targets           uuid[] NOT NULL DEFAULT '{}',
    workflow_id       uuid,
    workflow_version  integer,
    total             integer NOT NULL CHECK (total >= 0),
    position          integer NOT NULL DEFAULT 0 CHECK (position >= 0),
    cursor            uuid,
    done              integer NOT NULL DEFAULT 0,
    skipped           integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    -- The first errors met, `[{"target": ..., "error": ...}]`, at most 100.
    errors            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(errors) = 'array'),
    error             text,
    -- Numbers the operation's jobs (`run_operation:<id>:<job_seq>`), as
    -- wake_seq does an execution's.
    job_seq           integer NOT NULL DEFAULT 0,
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state IN ('completed', 'cancelled', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX operations_account_keyset ON operations (account_id, created_at DESC, id DESC);
-- The maintenance loop's scan for operations whose job was lost.
CREATE INDEX operations_unfinished ON operations (updated_at) WHERE state IN ('pending', 'running');

-- Enrollments start under the account's pacing: each batch reserves the
-- next free start times of its account, so executions start at the
-- configured rate, however many operations enroll at once.
ALTER TABLE accounts ADD COLUMN enroll_next_at timestamptz;

-- A retry resolves its execution's open dead letters: without this, each
-- retry of a bulk retry would scan every dead letter.
CREATE INDEX dead_letters_open_execution ON dead_letters (execution_id) WHERE resolved_at IS NULL;
