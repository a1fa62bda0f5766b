-- Packet integrity at ingest (docs/l0_format.md, "Sequence-count check"): the CCSDS sequence counts of every
-- L0/HK delivery whose packets frame cleanly, per APID, and what the ITF's rule ingest.packet_sequence made of
-- them. Keyed by the delivery (deliveries.delivery_id, quarantine.delivery_id), written before the delivery's
-- outcome so a retry finds it. Idempotent.

CREATE TABLE IF NOT EXISTS packet_sequence_checks (
    delivery_id   TEXT        PRIMARY KEY,
    instrument_id TEXT        NOT NULL,
    file_name     TEXT        NOT NULL,  -- as delivered
    rule          TEXT        NOT NULL CHECK (rule IN ('quarantine', 'warn', 'ignore')),
    -- continuous: no anomaly; warned / ignored: archived with anomalies (per the rule); quarantined
    verdict       TEXT        NOT NULL CHECK (verdict IN ('continuous', 'warned', 'ignored', 'quarantined')),
    packets       BIGINT      NOT NULL CHECK (packets >= 0),
    gaps          INTEGER     NOT NULL CHECK (gaps >= 0),
    missing       BIGINT      NOT NULL CHECK (missing >= 0),  -- packets missing in the gaps
    repeats       INTEGER     NOT NULL CHECK (repeats >= 0),
    out_of_order  INTEGER     NOT NULL CHECK (out_of_order >= 0),
    summary       TEXT        NOT NULL,  -- one line: per APID, then the first anomalies by byte offset
    dag_id        TEXT,
    dag_run_id    TEXT,
    checked_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS packet_sequence_checks_run ON packet_sequence_checks (dag_id, dag_run_id);
CREATE INDEX IF NOT EXISTS packet_sequence_checks_anomalous ON packet_sequence_checks (instrument_id, checked_at)
    WHERE verdict <> 'continuous';

CREATE TABLE IF NOT EXISTS packet_sequence_apids (
    delivery_id  TEXT    NOT NULL REFERENCES packet_sequence_checks (delivery_id) ON DELETE CASCADE,
    apid         INTEGER NOT NULL CHECK (apid BETWEEN 0 AND 2047),
    packets      BIGINT  NOT NULL CHECK (packets > 0),
    first_count  INTEGER NOT NULL CHECK (first_count BETWEEN 0 AND 16383),
    last_count   INTEGER NOT NULL CHECK (last_count BETWEEN 0 AND 16383),
    gaps         INTEGER NOT NULL CHECK (gaps >= 0),
    missing      BIGINT  NOT NULL CHECK (missing >= 0),
    repeats      INTEGER NOT NULL CHECK (repeats >= 0),
    out_of_order INTEGER NOT NULL CHECK (out_of_order >= 0),
    PRIMARY KEY (delivery_id, apid)
);
