-- Erasing a contact keeps its row (executions point at it) but empties it
-- and marks it erased: reads no longer see it.
ALTER TABLE contacts ADD COLUMN erased_at timestamptz;
