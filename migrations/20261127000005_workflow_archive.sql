-- An archived workflow starts nothing and leaves the default listing;
-- its versions and executions stay.
ALTER TABLE workflows ADD COLUMN archived_at timestamptz;
