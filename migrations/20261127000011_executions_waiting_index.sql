-- no-transaction
-- Lists filtered by `waiting_reason` (rate_limited, wait, ...) and their
-- counts: only rows with a reason are in it, so it stays small.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_waiting_keyset
    ON workflow_executions (account_id, waiting_reason, created_at DESC, id DESC)
    WHERE waiting_reason IS NOT NULL;
