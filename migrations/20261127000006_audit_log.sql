-- The audit trail: every state-changing API call and CLI admin command,
-- who (the API key, or the CLI), what, on what, when, and how it ended.
-- Append-only (a trigger refuses updates and deletes); partitioned by
-- month like the execution logs and dropped past the same retention.
CREATE SEQUENCE audit_log_id_seq;
CREATE TABLE audit_log (
    id          bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    account_id  uuid,
    key_id      uuid,
    actor       text NOT NULL CHECK (actor IN ('api', 'cli')),
    action      text NOT NULL CHECK (length(action) <= 300),
    target      text CHECK (length(target) <= 2000),
    result      integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_log_account ON audit_log (account_id, id DESC);
CREATE INDEX audit_log_recent ON audit_log (id DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
