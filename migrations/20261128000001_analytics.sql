-- Analytics: rollups per workflow version, step and UTC day, maintained
-- incrementally by the maintenance leader (store::analytics::fold), so the
-- analytics API reads a few thousand rows however many executions and log
-- rows there are.

-- The time a step ran, its parked time (waits, provider holds, arq jobs)
-- left out: duration_ms - exec_ms is the time it was parked. Rows written
-- before this column count as all execution time.
ALTER TABLE execution_logs ADD COLUMN exec_ms integer CHECK (exec_ms >= 0);

-- The fold reads log rows by creation time across accounts with the BRIN
-- index `execution_logs_created_brin` (migration `alerts`).

-- Step attempts per day: how they ended, time run and parked (sums), and
-- what analytics suggestions need (branch sides, waits ending off-hours).
CREATE TABLE analytics_steps (
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    step_id           text NOT NULL,
    day               date NOT NULL,
    succeeded         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    retried           bigint NOT NULL DEFAULT 0,
    cancelled         bigint NOT NULL DEFAULT 0,
    exec_ms           bigint NOT NULL DEFAULT 0,
    parked_ms         bigint NOT NULL DEFAULT 0,
    branch_true       bigint NOT NULL DEFAULT 0,
    off_hours         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, workflow_id, workflow_version, step_id, day)
);

-- Histograms of the time a step attempt ran (`exec`) and was parked
-- (`parked`): counts per bucket of store::analytics::BOUNDS_MS.
CREATE TABLE analytics_step_times (
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    step_id           text NOT NULL,
    day               date NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('exec', 'parked')),
    bucket            smallint NOT NULL,
    count             bigint NOT NULL,
    PRIMARY KEY (account_id, workflow_id, workflow_version, day, step_id, kind, bucket)
);

-- Failed and retried attempts per class and fingerprint, with one message.
CREATE TABLE analytics_errors (
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    step_id           text NOT NULL,
    day               date NOT NULL,
    error_class       text NOT NULL,
    fingerprint       text NOT NULL,
    count             bigint NOT NULL,
    sample            text,
    PRIMARY KEY (account_id, workflow_id, workflow_version, day, step_id, error_class, fingerprint)
);

-- Executions started and ended per day.
CREATE TABLE analytics_executions (
    account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    day               date NOT NULL,
    started           bigint NOT NULL DEFAULT 0,
    completed         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    cancelled         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, workflow_id, workflow_version, day)
);

-- Executions starting and ending, written by the triggers below and
-- folded (and deleted) by the fold: append-only, so the triggers never
-- wait on a lock another transaction holds. `n` counts a statement's
-- inserts of one workflow version at once (a bulk enrollment adds a row,
-- not a million).
CREATE TABLE analytics_events (
    id                bigserial PRIMARY KEY,
    account_id        uuid NOT NULL,
    workflow_id       uuid NOT NULL,
    workflow_version  integer NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('STARTED', 'COMPLETED', 'FAILED', 'CANCELLED')),
    step_id           text,
    n                 bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION analytics_started() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_events (account_id, workflow_id, workflow_version, kind, n)
    SELECT account_id, workflow_id, workflow_version, 'STARTED', count(*)
    FROM added GROUP BY account_id, workflow_id, workflow_version;
    RETURN NULL;
END;
$$;
CREATE TRIGGER analytics_started AFTER INSERT ON workflow_executions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION analytics_started();

CREATE FUNCTION analytics_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_events (account_id, workflow_id, workflow_version, kind, step_id)
    VALUES (NEW.account_id, NEW.workflow_id, NEW.workflow_version, NEW.status, NEW.current_step_id);
    RETURN NULL;
END;
$$;
-- Row-level with a WHEN: the function runs only for the row that ended,
-- not for every checkpoint.
CREATE TRIGGER analytics_ended AFTER UPDATE OF status ON workflow_executions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION analytics_ended();

-- How far the fold has read execution_logs (by created_at).
CREATE TABLE analytics_progress (
    name  text PRIMARY KEY,
    upto  timestamptz NOT NULL
);
