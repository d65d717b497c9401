-- no-transaction
-- Executions not yet ended per workflow version and step: the analytics
-- funnel's "in step now" and the suggestions read it. Partial, so it holds
-- only the open rows.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_open_steps
    ON workflow_executions (account_id, workflow_id, workflow_version, current_step_id)
    WHERE status IN ('QUEUED', 'RUNNING', 'WAITING', 'RETRYING');
