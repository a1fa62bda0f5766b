-- Product write protocol (pipeline/process.py::collect_job): a job reserves the archive keys of its
-- products before uploading them; the reservation names the run, so a failed, crashed or swept job's
-- objects are found and removed, and two runs can never write the same key. One (file root, absolute
-- version) per file: a revision is never reused. Idempotent.

CREATE TABLE IF NOT EXISTS pending_objects (
    id                BIGSERIAL PRIMARY KEY,
    processing_run_id BIGINT      NOT NULL REFERENCES processing_runs (id),
    bucket            TEXT        NOT NULL,
    s3_key            TEXT        NOT NULL,
    md5checksum       CHAR(32)    NOT NULL,
    reserved_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (bucket, s3_key)
);
CREATE INDEX IF NOT EXISTS pending_objects_run ON pending_objects (processing_run_id);

CREATE UNIQUE INDEX IF NOT EXISTS science_files_root_version ON science_files (lower(file_root), absolute_version);
