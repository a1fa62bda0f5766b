-- Integrity reconciliation (core/reconcile.py, pipeline/reconcile.py; docs/reconciliation.md): every run of
-- emm_integrity_reconcile, the archive partitions (prefixes) it compared, each finding with the action an operator
-- takes and the repair made (or planned by a dry run), and the archive objects a repair marked missing. Idempotent.

CREATE TABLE IF NOT EXISTS reconciliation_runs (
    id             BIGSERIAL PRIMARY KEY,
    dag_id         TEXT        NOT NULL,
    dag_run_id     TEXT        NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at       TIMESTAMPTZ,
    status         TEXT        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'clean', 'findings', 'errors', 'failed')),
    params         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- Deep verification: the slice of the key hash space [start, start + fraction) re-read by this run.
    deep_start     DOUBLE PRECISION,
    deep_fraction  DOUBLE PRECISION,
    listing        TEXT,       -- 'listing' (ListObjectsV2) or 'inventory' (an S3 Inventory manifest)
    counts         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    stats          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    report_prefix  TEXT,
    UNIQUE (dag_id, dag_run_id)
);

-- One compared prefix (or the catalog checks, or one inbox) of a run: a mapped task instance.
CREATE TABLE IF NOT EXISTS reconciliation_partitions (
    run_id           BIGINT      NOT NULL REFERENCES reconciliation_runs (id),
    name             TEXT        NOT NULL,
    kind             TEXT        NOT NULL CHECK (kind IN ('archive', 'catalog', 'inbox')),
    objects          BIGINT      NOT NULL DEFAULT 0,
    catalog_rows     BIGINT      NOT NULL DEFAULT 0,
    verified_objects BIGINT      NOT NULL DEFAULT 0,
    verified_bytes   BIGINT      NOT NULL DEFAULT 0,
    findings         INTEGER     NOT NULL DEFAULT 0,
    seconds          DOUBLE PRECISION,
    ended_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);

CREATE TABLE IF NOT EXISTS reconciliation_findings (
    id             BIGSERIAL PRIMARY KEY,
    run_id         BIGINT      NOT NULL REFERENCES reconciliation_runs (id),
    partition_name TEXT        NOT NULL,
    kind           TEXT        NOT NULL CHECK (kind IN (
                       'orphan', 'phantom', 'size_mismatch', 'checksum_mismatch', 'duplicate_latest',
                       'lineage_missing_row', 'kernel_class_mismatch', 'quarantine_reason_missing', 'stale_inbox')),
    severity       TEXT        NOT NULL CHECK (severity IN ('error', 'warning')),
    area           TEXT        NOT NULL,
    bucket         TEXT,
    s3_key         TEXT,
    catalog_table  TEXT,
    catalog_id     BIGINT,
    instrument_id  TEXT,
    expected       TEXT,
    found          TEXT,
    action         TEXT        NOT NULL,
    details        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- Repairs (off by default): what the finding's repair is, and what a dry run planned or a repair did.
    repair         TEXT,
    repair_status  TEXT        CHECK (repair_status IN ('planned', 'applied', 'failed', 'not-repairable')),
    repair_result  TEXT,
    repaired_at    TIMESTAMPTZ,
    detected_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reconciliation_findings_run ON reconciliation_findings (run_id, partition_name);
CREATE INDEX IF NOT EXISTS reconciliation_findings_key ON reconciliation_findings (s3_key);

-- A phantom (a row whose object is gone, with no earlier version to restore) is marked missing here, per key:
-- later runs count it as known-missing instead of reporting it again; restoring the object clears the mark.
CREATE TABLE IF NOT EXISTS missing_objects (
    id            BIGSERIAL PRIMARY KEY,
    bucket        TEXT        NOT NULL,
    s3_key        TEXT        NOT NULL,
    catalog_table TEXT        NOT NULL,
    catalog_id    BIGINT,
    run_id        BIGINT REFERENCES reconciliation_runs (id),
    finding_id    BIGINT REFERENCES reconciliation_findings (id),
    marked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    restored_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS missing_objects_open ON missing_objects (bucket, s3_key) WHERE restored_at IS NULL;

-- The merge reads each table in S3's key order (bytes, i.e. the "C" collation), from an index.
CREATE INDEX IF NOT EXISTS science_files_key_c ON science_files (s3_key COLLATE "C");
CREATE INDEX IF NOT EXISTS spice_kernels_key_c ON spice_kernels (s3_key COLLATE "C");
CREATE INDEX IF NOT EXISTS calibration_files_key_c ON calibration_files (s3_key COLLATE "C");
CREATE INDEX IF NOT EXISTS quarantine_key_c ON quarantine (quarantine_key COLLATE "C");
