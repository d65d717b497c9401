-- Per-account rate limits of outbound calls (account-wide, email, SMS,
-- webhook per host), as `domain::Limits` JSON; `{}` takes every limit from
-- the installation's defaults.
ALTER TABLE accounts ADD COLUMN limits jsonb NOT NULL DEFAULT '{}'::jsonb;
