-- ITF processor images: staging checks of candidates and the promotions that made them production.

CREATE TABLE IF NOT EXISTS staging_checks (
    id               BIGSERIAL PRIMARY KEY,
    instrument_id    TEXT        NOT NULL,
    candidate_image  TEXT        NOT NULL,
    production_image TEXT,                -- NULL: first image of an instrument (validated, not compared)
    dag_id           TEXT        NOT NULL,
    dag_run_id       TEXT        NOT NULL,
    reference_inputs JSONB       NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at         TIMESTAMPTZ,
    status           TEXT        NOT NULL CHECK (status IN ('running', 'passed', 'failed')),
    summary          TEXT,
    report_uri       TEXT,
    UNIQUE (dag_id, dag_run_id)
);

CREATE TABLE IF NOT EXISTS image_promotions (
    id               BIGSERIAL PRIMARY KEY,
    instrument_id    TEXT        NOT NULL,
    image            TEXT        NOT NULL,
    previous_image   TEXT,
    staging_check_id BIGINT      NOT NULL REFERENCES staging_checks (id),
    promoted_by      TEXT        NOT NULL,
    reason           TEXT,
    promoted_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS image_promotions_inst ON image_promotions (instrument_id, promoted_at DESC);
