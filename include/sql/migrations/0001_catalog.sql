-- Product catalog: files (EMM API record fields), processing runs, lineage,
-- quarantine and the delivery log. Idempotent: safe to run again.

CREATE TABLE IF NOT EXISTS processing_runs (
    id                BIGSERIAL PRIMARY KEY,
    dag_id            TEXT        NOT NULL,
    dag_run_id        TEXT        NOT NULL,
    task_id           TEXT        NOT NULL,
    map_index         INTEGER     NOT NULL DEFAULT -1,
    try_number        INTEGER     NOT NULL DEFAULT 1,
    instrument_id     TEXT        NOT NULL,
    data_level        TEXT        NOT NULL,
    work_unit         TEXT        NOT NULL,
    runner            TEXT        NOT NULL,
    processor_name    TEXT        NOT NULL,
    processor_version TEXT        NOT NULL,
    image             TEXT,
    environment       TEXT        NOT NULL,
    meta_kernel       TEXT,
    reason            TEXT,
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ,
    exit_status       INTEGER,
    status            TEXT        NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    message           TEXT,
    log_uri           TEXT
);
CREATE INDEX IF NOT EXISTS processing_runs_dag_run ON processing_runs (dag_id, dag_run_id);

CREATE TABLE IF NOT EXISTS science_files (
    id                BIGSERIAL PRIMARY KEY,
    file_name         TEXT        NOT NULL UNIQUE,
    directory_path    TEXT        NOT NULL,
    file_size         BIGINT      NOT NULL CHECK (file_size > 0),
    mod_date          TIMESTAMPTZ NOT NULL DEFAULT now(),
    instrument_id     TEXT        NOT NULL,
    data_level        TEXT        NOT NULL,
    timetag           TIMESTAMPTZ NOT NULL,
    descriptor        TEXT,
    mode              TEXT,
    orbit_number      INTEGER     NOT NULL,
    pred_rec          CHAR(1)     NOT NULL CHECK (pred_rec IN ('n', 'p', 'r', 'f')),
    version           SMALLINT    NOT NULL,
    revision          SMALLINT    NOT NULL,
    file_root         TEXT        NOT NULL,
    absolute_version  INTEGER     NOT NULL,
    md5checksum       CHAR(32)    NOT NULL,
    released          BOOLEAN     NOT NULL DEFAULT false,
    mars_ls           DOUBLE PRECISION,
    spacecraft_lst    DOUBLE PRECISION,  -- local solar time, hours 0-24
    subsolar_lat      DOUBLE PRECISION,
    subsolar_lon      DOUBLE PRECISION,
    spacecraft_lat    DOUBLE PRECISION,
    spacecraft_lon    DOUBLE PRECISION,
    spacecraft_alt    DOUBLE PRECISION,  -- km above the Mars reference ellipsoid
    product_type      TEXT        NOT NULL CHECK (product_type IN ('science', 'hk', 'quicklook')),
    bucket            TEXT        NOT NULL,
    s3_key            TEXT        NOT NULL UNIQUE,
    processing_run_id BIGINT      REFERENCES processing_runs (id),
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS science_files_root ON science_files (file_root, absolute_version DESC);
CREATE INDEX IF NOT EXISTS science_files_query ON science_files (instrument_id, data_level, timetag);
CREATE INDEX IF NOT EXISTS science_files_orbit ON science_files (instrument_id, orbit_number);

-- The newest version of every file root (the EMM API's latest=true).
CREATE OR REPLACE VIEW science_files_latest AS
SELECT DISTINCT ON (file_root) *
FROM science_files
ORDER BY file_root, absolute_version DESC, id DESC;

CREATE TABLE IF NOT EXISTS lineage (
    product_id BIGINT NOT NULL REFERENCES science_files (id) ON DELETE CASCADE,
    input_id   BIGINT NOT NULL REFERENCES science_files (id),
    PRIMARY KEY (product_id, input_id)
);
CREATE INDEX IF NOT EXISTS lineage_input ON lineage (input_id);

CREATE TABLE IF NOT EXISTS quarantine (
    id             BIGSERIAL PRIMARY KEY,
    instrument_id  TEXT        NOT NULL,
    original_key   TEXT        NOT NULL,
    quarantine_key TEXT        NOT NULL UNIQUE,
    reason_code    TEXT        NOT NULL,
    reason         TEXT        NOT NULL,
    details        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    md5checksum    CHAR(32),
    file_size      BIGINT,
    dag_id         TEXT,
    dag_run_id     TEXT,
    detected_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at    TIMESTAMPTZ,
    resolution     TEXT
);

-- Every file that left the inbox, and what became of it.
CREATE TABLE IF NOT EXISTS deliveries (
    id            BIGSERIAL PRIMARY KEY,
    instrument_id TEXT        NOT NULL,
    inbox_key     TEXT        NOT NULL,
    md5checksum   CHAR(32),
    file_size     BIGINT,
    outcome       TEXT        NOT NULL CHECK (outcome IN ('archived', 'duplicate', 'quarantined')),
    file_id       BIGINT REFERENCES science_files (id),
    quarantine_id BIGINT REFERENCES quarantine (id),
    dag_id        TEXT,
    dag_run_id    TEXT,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deliveries_run ON deliveries (dag_id, dag_run_id);
