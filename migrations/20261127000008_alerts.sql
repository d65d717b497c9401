-- Admin alerts: rules (per account, or global for admin keys), the alerts
-- they raise, and an outbox of deliveries, one per alert and channel.
-- An alert and its first delivery are written in one transaction with what
-- triggered them, so a crash between trigger and send still sends; the
-- dispatcher sends each delivery once and records it.
CREATE TABLE alert_rules (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: a global rule (admin keys), over every account.
    account_id       uuid REFERENCES accounts (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind             text NOT NULL CHECK (kind IN
                         ('execution_failed', 'failure_rate', 'breaker_open', 'queue_stalled', 'dead_letters')),
    -- The kind's parameters (workflows, classes, thresholds, windows).
    params           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    -- Channels in escalation order: the first is told at once, each next
    -- one when the alert is not acknowledged within escalate_after.
    channels         jsonb NOT NULL CHECK (jsonb_typeof(channels) = 'array'),
    dedup_window_s   integer NOT NULL DEFAULT 300 CHECK (dedup_window_s BETWEEN 1 AND 604800),
    escalate_after_s integer NOT NULL DEFAULT 900 CHECK (escalate_after_s BETWEEN 1 AND 604800),
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_account ON alert_rules (account_id, created_at DESC, id DESC);

CREATE TABLE alerts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id             uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    account_id          uuid REFERENCES accounts (id) ON DELETE CASCADE,
    -- What the rule deduplicates on (a fingerprint, a queue, a provider).
    key                 text NOT NULL,
    state               text NOT NULL DEFAULT 'firing' CHECK (state IN ('firing', 'acknowledged')),
    summary             text NOT NULL,
    details             jsonb NOT NULL DEFAULT '{}',
    -- Occurrences folded into it within the rule's window.
    occurrences         integer NOT NULL DEFAULT 1,
    -- When the first occurrence happened (the failure's time), was seen,
    -- and the last one was.
    occurred_at         timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    -- The channel last told (index into the rule's channels), and when the
    -- next one is, unless acknowledged first.
    level               integer NOT NULL DEFAULT 0,
    next_escalation_at  timestamptz,
    acknowledged_at     timestamptz,
    acknowledged_by     uuid,
    CHECK ((state = 'acknowledged') = (acknowledged_at IS NOT NULL))
);
CREATE INDEX alerts_account_keyset ON alerts (account_id, created_at DESC, id DESC);
CREATE INDEX alerts_recent ON alerts (created_at DESC, id DESC);
CREATE INDEX alerts_rule_key ON alerts (rule_id, key, created_at DESC);
CREATE INDEX alerts_escalation ON alerts (next_escalation_at) WHERE state = 'firing';

CREATE TABLE alert_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_id         uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel          integer NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('email', 'sms', 'slack', 'webhook')),
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A dispatcher holds a delivery while it sends; a dead one's lapses.
    locked_until     timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    UNIQUE (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';

-- Failures the alert evaluator has not looked at yet (those recorded
-- before alerts existed count as looked at).
ALTER TABLE dead_letters ADD COLUMN alert_checked_at timestamptz DEFAULT now();
ALTER TABLE dead_letters ALTER COLUMN alert_checked_at SET DEFAULT NULL;
CREATE INDEX dead_letters_alert_unchecked ON dead_letters (created_at) WHERE alert_checked_at IS NULL;
-- A dead-letters rule counts those of its window, over every account for a
-- global rule.
CREATE INDEX dead_letters_created ON dead_letters (created_at);

-- Alert emails and SMS of global rules belong to no account, and none to
-- an execution.
ALTER TABLE outbox ALTER COLUMN account_id DROP NOT NULL;

-- A failure-rate rule counts the log rows of its window: by account with
-- execution_logs_account_time, over every account (a global rule) with
-- this, which costs next to nothing to keep on an append-ordered table.
CREATE INDEX execution_logs_created_brin ON execution_logs USING brin (created_at);
