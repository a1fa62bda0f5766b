-- Calibration data delivered by the ITFs (core/calibration.py, docs/calibration.md). Every delivery of a
-- file name with new bytes is a new version of that file (1, 2, 3 ... per instrument and name), archived
-- write-once at emm/calibration/<inst>/<file>/v<NNNN>/<file>, and makes a new calibration set of its
-- instrument: set N+1 = set N with this file added or replaced. A set is never stored as such: set N is
-- the latest version of every file name with set_version <= N. Idempotent.

CREATE TABLE IF NOT EXISTS calibration_files (
    id            BIGSERIAL PRIMARY KEY,
    instrument_id TEXT        NOT NULL,
    file_name     TEXT        NOT NULL,
    version       INTEGER     NOT NULL CHECK (version >= 1),
    set_version   INTEGER     NOT NULL CHECK (set_version >= 1),
    md5checksum   CHAR(32)    NOT NULL,
    file_size     BIGINT      NOT NULL CHECK (file_size > 0),
    bucket        TEXT        NOT NULL,
    s3_key        TEXT        NOT NULL UNIQUE,
    delivery_id   TEXT,
    dag_id        TEXT,
    dag_run_id    TEXT,
    delivered_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (instrument_id, file_name, version),
    UNIQUE (instrument_id, set_version)
);
-- One version per delivery: a retried or concurrent handling of one delivery never makes a second.
CREATE UNIQUE INDEX IF NOT EXISTS calibration_files_delivery ON calibration_files (delivery_id)
    WHERE delivery_id IS NOT NULL;

-- Calibration deliveries are logged like every other delivery.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS calibration_id BIGINT REFERENCES calibration_files (id);
