-- What the engine needs beyond the v1 schema.

-- step_state: the in-flight state of the current step (a wait's deadline,
-- an arq step's job id), cleared when the step completes.
-- wake_seq: numbers the queue jobs of an execution; each park or requeue
-- takes the next one, so the job id `run_execution:<id>:<wake_seq>` dedupes
-- repeated enqueues of one wake-up but never blocks the next wake-up.
-- revision: bumped by every update; writers update `WHERE revision = $seen`,
-- so a decision taken on a stale read (a cancel racing a checkpoint, two
-- workers given one job) fails instead of overwriting.
ALTER TABLE workflow_executions
    ADD COLUMN step_state jsonb,
    ADD COLUMN wake_seq integer NOT NULL DEFAULT 0,
    ADD COLUMN revision bigint NOT NULL DEFAULT 0;

-- Messages of the default (outbox) email and SMS providers: the record a
-- CRM or a relay process reads and delivers. The idempotency key
-- `<execution>:<step index>:<attempt>` makes a re-run of one attempt after a
-- crash record nothing twice.
CREATE TABLE outbox (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id       uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    execution_id     uuid REFERENCES workflow_executions (id) ON DELETE SET NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient        text NOT NULL,
    subject          text,
    body             text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL;
CREATE INDEX outbox_execution ON outbox (execution_id);
