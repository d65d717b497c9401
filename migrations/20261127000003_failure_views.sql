-- Failure groups are read from the log rows that carry a fingerprint; the
-- workflow and version ride on each log row so that grouping needs no
-- join (NULL on rows written before this migration).
ALTER TABLE execution_logs
    ADD COLUMN workflow_id uuid,
    ADD COLUMN workflow_version integer;

-- Only failed and retried attempts carry a fingerprint: small indexes, one
-- for the window a grouping scans (covering what it groups and filters
-- by, so the scan never visits the table once autovacuum has marked the
-- pages visible), one for each group's latest attempts.
CREATE INDEX execution_logs_failures ON execution_logs (account_id, created_at)
    INCLUDE (fingerprint, workflow_id, error_class) WHERE fingerprint IS NOT NULL;
CREATE INDEX execution_logs_fingerprint ON execution_logs (account_id, fingerprint, created_at)
    WHERE fingerprint IS NOT NULL;

CREATE INDEX dead_letters_fingerprint ON dead_letters (account_id, fingerprint)
    WHERE fingerprint IS NOT NULL;
