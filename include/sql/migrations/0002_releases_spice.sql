-- Room for public releases and SPICE kernels (filled by later capabilities).

CREATE TABLE IF NOT EXISTS releases (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT        NOT NULL UNIQUE,
    period_start DATE        NOT NULL,
    period_end   DATE        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    status       TEXT        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'withdrawn'))
);

CREATE TABLE IF NOT EXISTS release_files (
    release_id BIGINT NOT NULL REFERENCES releases (id),
    file_id    BIGINT NOT NULL REFERENCES science_files (id),
    PRIMARY KEY (release_id, file_id)
);

CREATE TABLE IF NOT EXISTS spice_kernels (
    id             BIGSERIAL PRIMARY KEY,
    file_name      TEXT        NOT NULL UNIQUE,
    kernel_type    TEXT        NOT NULL,
    kernel_class   CHAR(1)     NOT NULL CHECK (kernel_class IN ('p', 'r', 'f', 'n')),
    version        INTEGER     NOT NULL,
    coverage_start TIMESTAMPTZ,
    coverage_end   TIMESTAMPTZ,
    md5checksum    CHAR(32)    NOT NULL,
    file_size      BIGINT      NOT NULL,
    bucket         TEXT        NOT NULL,
    s3_key         TEXT        NOT NULL UNIQUE,
    superseded_by  BIGINT REFERENCES spice_kernels (id),
    ingested_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS kernel_coverage (
    kernel_id     BIGINT      NOT NULL REFERENCES spice_kernels (id) ON DELETE CASCADE,
    body_or_frame INTEGER     NOT NULL,
    start_time    TIMESTAMPTZ NOT NULL,
    end_time      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kernel_id, body_or_frame, start_time)
);

CREATE TABLE IF NOT EXISTS meta_kernels (
    id         BIGSERIAL PRIMARY KEY,
    version    INTEGER     NOT NULL UNIQUE,
    file_name  TEXT        NOT NULL UNIQUE,
    s3_key     TEXT        NOT NULL,
    kernels    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE science_files ADD COLUMN IF NOT EXISTS meta_kernel_id BIGINT REFERENCES meta_kernels (id);

CREATE OR REPLACE VIEW science_files_latest AS
SELECT DISTINCT ON (file_root) *
FROM science_files
ORDER BY file_root, absolute_version DESC, id DESC;
