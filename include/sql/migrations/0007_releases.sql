-- Quarterly public releases (core/release.py, pipeline/release.py; docs/releases.md). A release is a
-- batch (quarterly window, numbered from orbit insertion) or a special window; once published its
-- content is fixed. release_files keeps the MD5 each file was verified with and why it was selected
-- (in the window, or carried over from an earlier batch's window: a late product or a newer revision).
-- Every withdrawal is audited (who, when, why) per file. Idempotent.

ALTER TABLE releases ADD COLUMN IF NOT EXISTS batch INTEGER CHECK (batch > 0);
CREATE UNIQUE INDEX IF NOT EXISTS releases_batch ON releases (batch) WHERE batch IS NOT NULL;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS published_at TIMESTAMPTZ;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS rules JSONB NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS file_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS total_bytes BIGINT NOT NULL DEFAULT 0;
-- Selected files that were not released, with the reason (integrity check failed, changed meanwhile).
ALTER TABLE releases ADD COLUMN IF NOT EXISTS withheld JSONB NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS manifest_prefix TEXT;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS dag_id TEXT;
ALTER TABLE releases ADD COLUMN IF NOT EXISTS dag_run_id TEXT;

ALTER TABLE release_files ADD COLUMN IF NOT EXISTS md5checksum CHAR(32);
ALTER TABLE release_files ADD COLUMN IF NOT EXISTS selection TEXT NOT NULL DEFAULT 'window'
    CHECK (selection IN ('window', 'carry-over'));
-- A file is released once, by one release.
CREATE UNIQUE INDEX IF NOT EXISTS release_files_file ON release_files (file_id);

CREATE TABLE IF NOT EXISTS release_withdrawals (
    id           BIGSERIAL PRIMARY KEY,
    file_id      BIGINT      NOT NULL REFERENCES science_files (id),
    release_id   BIGINT REFERENCES releases (id),
    scope        TEXT        NOT NULL CHECK (scope IN ('file', 'release')),
    reason       TEXT        NOT NULL CHECK (btrim(reason) <> ''),
    requested_by TEXT        NOT NULL,
    dag_id       TEXT,
    dag_run_id   TEXT,
    withdrawn_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS release_withdrawals_file ON release_withdrawals (file_id);
CREATE INDEX IF NOT EXISTS release_withdrawals_run ON release_withdrawals (dag_id, dag_run_id);

-- What the public sees as "latest": the newest *released* version of every file root (a newer,
-- not yet released revision does not hide the released one).
CREATE OR REPLACE VIEW science_files_released_latest AS
SELECT DISTINCT ON (file_root) *
FROM science_files
WHERE released
ORDER BY file_root, absolute_version DESC, id DESC;
