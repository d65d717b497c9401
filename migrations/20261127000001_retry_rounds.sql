-- A manual retry is a new attempt: the attempt number goes on (a new
-- idempotency key `<execution>:<step>:<attempt>`), and the step's retry
-- policy counts attempts from the one the retry started at.
ALTER TABLE workflow_executions
    ADD COLUMN first_attempt integer NOT NULL DEFAULT 1 CHECK (first_attempt >= 1);
