-- Reprocessing (issue 12): content-hash idempotency of jobs, reprocessing campaigns, lanes. Idempotent.

-- A job's input hash covers its inputs (names and MD5s), the processor's identity, the chain step's
-- parameters, the calibration set and the meta-kernel's kernel set (emm_sdc/lifecycle.py). At most one
-- successful, unforced run per hash: two identical jobs at once cannot both index a revision.
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS input_hash TEXT;
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS hash_inputs JSONB;
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS forced BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS lane TEXT NOT NULL DEFAULT 'daily';
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS calibration_version INTEGER;
ALTER TABLE processing_runs DROP CONSTRAINT IF EXISTS processing_runs_status_check;
ALTER TABLE processing_runs ADD CONSTRAINT processing_runs_status_check
    CHECK (status IN ('running', 'success', 'failed', 'skipped'));
CREATE UNIQUE INDEX IF NOT EXISTS processing_runs_one_success_per_hash ON processing_runs (input_hash)
    WHERE status = 'success' AND NOT forced AND input_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS processing_runs_hash ON processing_runs (input_hash);

-- Per input of a job: the hash of (that input, the job's context). Products are made per input (the
-- contract's lineage; daily processing already drops inputs that have products), so a reprocessing
-- job drops inputs whose hash a successful run already made: a day of a backfill skips what the daily
-- run of its orbit made from the same inputs, processor, parameters, calibration and kernels.
CREATE TABLE IF NOT EXISTS processing_run_inputs (
    processing_run_id BIGINT NOT NULL REFERENCES processing_runs (id),
    input_hash        TEXT   NOT NULL,
    file_name         TEXT   NOT NULL,
    PRIMARY KEY (processing_run_id, input_hash)
);
CREATE INDEX IF NOT EXISTS processing_run_inputs_hash ON processing_run_inputs (input_hash);

-- A campaign: one reprocessing request (a backfill, a manual run, a SPICE refresh's run).
CREATE TABLE IF NOT EXISTS campaigns (
    id            BIGSERIAL PRIMARY KEY,
    campaign_key  TEXT        NOT NULL UNIQUE,
    instrument_id TEXT        NOT NULL,
    dag_id        TEXT        NOT NULL,
    kind          TEXT        NOT NULL CHECK (kind IN ('backfill', 'manual', 'triggered')),
    requested_by  TEXT,
    reason        TEXT        NOT NULL,
    levels        JSONB       NOT NULL DEFAULT '[]'::jsonb,
    force         BOOLEAN     NOT NULL DEFAULT false,
    dry_run       BOOLEAN     NOT NULL DEFAULT false,
    image         TEXT,
    processor     TEXT,
    calibration   TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One execution of one DAG run of a campaign (a cleared and re-run day is a new execution).
CREATE TABLE IF NOT EXISTS campaign_runs (
    id             BIGSERIAL PRIMARY KEY,
    campaign_id    BIGINT      NOT NULL REFERENCES campaigns (id),
    dag_id         TEXT        NOT NULL,
    dag_run_id     TEXT        NOT NULL,
    clear_number   INTEGER     NOT NULL DEFAULT 0,
    interval_start TIMESTAMPTZ,
    interval_end   TIMESTAMPTZ,
    status         TEXT        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'success', 'failed')),
    inputs         INTEGER     NOT NULL DEFAULT 0,
    remade         INTEGER     NOT NULL DEFAULT 0,
    skipped        INTEGER     NOT NULL DEFAULT 0,
    failed         INTEGER     NOT NULL DEFAULT 0,
    planned        JSONB,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at       TIMESTAMPTZ,
    UNIQUE (dag_id, dag_run_id, clear_number)
);
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS campaign_run_id BIGINT REFERENCES campaign_runs (id);
CREATE INDEX IF NOT EXISTS processing_runs_campaign_run ON processing_runs (campaign_run_id);
