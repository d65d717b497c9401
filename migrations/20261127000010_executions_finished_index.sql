-- no-transaction
-- Lists filtered by when executions finished (`finished_after`/`_before`)
-- and their counts read this instead of every row of the account. Built
-- CONCURRENTLY: writes go on while it builds on a large table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_finished
    ON workflow_executions (account_id, completed_at) WHERE completed_at IS NOT NULL;
