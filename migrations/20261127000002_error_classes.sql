-- Every failed or retried attempt has a class (what decides retrying) and a
-- fingerprint (what groups like failures); the execution keeps its last
-- ones, and when the current round of attempts of its step started
-- (`max_elapsed` counts from there).
ALTER TABLE workflow_executions
    ADD COLUMN error_class text CHECK (error_class IN ('transient', 'timeout', 'rate_limited',
        'provider_unavailable', 'permanent', 'invalid_config', 'contact_data', 'cancelled', 'internal')),
    ADD COLUMN fingerprint text CHECK (length(fingerprint) = 16),
    ADD COLUMN step_started_at timestamptz;

ALTER TABLE execution_logs
    ADD COLUMN error_class text,
    ADD COLUMN fingerprint text;

ALTER TABLE dead_letters
    ADD COLUMN error_class text,
    ADD COLUMN fingerprint text;

-- The execution list filters by them; only failing rows carry them, so
-- the partial indexes cost nothing on the success path.
CREATE INDEX workflow_executions_error_class ON workflow_executions (account_id, error_class, created_at DESC, id DESC)
    WHERE error_class IS NOT NULL;
CREATE INDEX workflow_executions_fingerprint ON workflow_executions (account_id, fingerprint, created_at DESC, id DESC)
    WHERE fingerprint IS NOT NULL;
