-- A staging check's processing runs point at their check with a foreign key, instead of being found by
-- "reason LIKE 'staging check <id> %'" (a free-text field an operator's reason could also match).
-- Runs of earlier checks are linked from that old reason text once. Idempotent: the column, the index and
-- the backfill (only rows still unlinked) can all run again.

ALTER TABLE processing_runs
    ADD COLUMN IF NOT EXISTS staging_check_id BIGINT REFERENCES staging_checks (id);

CREATE INDEX IF NOT EXISTS processing_runs_staging_check ON processing_runs (staging_check_id)
    WHERE staging_check_id IS NOT NULL;

UPDATE processing_runs r
SET staging_check_id = c.id
FROM staging_checks c
WHERE r.staging_check_id IS NULL
  AND r.environment = 'staging'
  AND r.reason LIKE 'staging check ' || c.id || ' %';
