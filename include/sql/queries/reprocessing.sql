-- Reprocessing: job hashes, campaigns, impact (emm_sdc/lifecycle.py, pipeline/reprocess.py, cli.py).

-- name: successful_run_with_hash
SELECT id, dag_id, dag_run_id, ended_at FROM processing_runs
WHERE input_hash = %(input_hash)s AND status = 'success'
ORDER BY id LIMIT 1;

-- name: record_run_inputs
INSERT INTO processing_run_inputs (processing_run_id, input_hash, file_name)
SELECT %(run_id)s, h, n FROM unnest(%(hashes)s::text[], %(names)s::text[]) AS t(h, n)
ON CONFLICT DO NOTHING;

-- name: inputs_already_made
-- Which of the given per-input hashes a successful run made, and the latest such run.
SELECT i.input_hash, max(r.id) AS run_id
FROM processing_run_inputs i JOIN processing_runs r ON r.id = i.processing_run_id
WHERE r.status = 'success' AND i.input_hash = ANY(%(hashes)s::text[])
GROUP BY i.input_hash;

-- name: active_run_with_hash
SELECT id, dag_id, dag_run_id, status FROM processing_runs
WHERE input_hash = %(input_hash)s AND status IN ('running', 'success') AND id <> %(run_id)s
ORDER BY id LIMIT 1;

-- name: set_run_identity
UPDATE processing_runs
SET input_hash = %(input_hash)s, hash_inputs = %(hash_inputs)s::jsonb, forced = %(forced)s, lane = %(lane)s,
    calibration_version = %(calibration_version)s, campaign_run_id = %(campaign_run_id)s
WHERE id = %(run_id)s;

-- name: record_skipped_job
INSERT INTO processing_runs (
    dag_id, dag_run_id, task_id, map_index, try_number, instrument_id, data_level, work_unit, runner,
    processor_name, processor_version, image, environment, reason, started_at, ended_at, status, message,
    input_hash, hash_inputs, lane, calibration_version, campaign_run_id
) VALUES (
    %(dag_id)s, %(dag_run_id)s, %(task_id)s, %(map_index)s, %(try_number)s, %(instrument_id)s,
    %(data_level)s, %(work_unit)s, %(runner)s, %(processor_name)s, %(processor_version)s, %(image)s,
    %(environment)s, %(reason)s, now(), now(), 'skipped', %(message)s,
    %(input_hash)s, %(hash_inputs)s::jsonb, %(lane)s, %(calibration_version)s, %(campaign_run_id)s
)
RETURNING id;

-- name: skip_run
-- Close an opened run as skipped (an identical job made the products first); a closed run stays as it is.
UPDATE processing_runs SET status = 'skipped', ended_at = now(), message = %(message)s
WHERE id = %(run_id)s AND status = 'running';

-- name: upsert_campaign
INSERT INTO campaigns (campaign_key, instrument_id, dag_id, kind, requested_by, reason, levels, force, dry_run,
                       image, processor, calibration)
VALUES (%(campaign_key)s, %(instrument_id)s, %(dag_id)s, %(kind)s, %(requested_by)s, %(reason)s,
        %(levels)s::jsonb, %(force)s, %(dry_run)s, %(image)s, %(processor)s, %(calibration)s)
ON CONFLICT (campaign_key) DO UPDATE SET campaign_key = EXCLUDED.campaign_key
RETURNING id;

-- name: open_campaign_run
INSERT INTO campaign_runs (campaign_id, dag_id, dag_run_id, clear_number, interval_start, interval_end, inputs)
VALUES (%(campaign_id)s, %(dag_id)s, %(dag_run_id)s, %(clear_number)s, %(interval_start)s, %(interval_end)s,
        %(inputs)s)
ON CONFLICT (dag_id, dag_run_id, clear_number) DO UPDATE
SET campaign_id = EXCLUDED.campaign_id, inputs = EXCLUDED.inputs, status = 'running', ended_at = NULL
RETURNING id;

-- name: campaign_run_by_dag_run
SELECT r.*, c.campaign_key, c.reason FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
WHERE r.dag_id = %(dag_id)s AND r.dag_run_id = %(dag_run_id)s
ORDER BY r.clear_number DESC LIMIT 1;

-- name: job_counts_of_campaign_run
-- The last attempt of each job (level x work unit) of one campaign run, counted by outcome.
SELECT
    count(*) FILTER (WHERE status = 'success') AS remade,
    count(*) FILTER (WHERE status = 'skipped') AS skipped,
    count(*) FILTER (WHERE status IN ('failed', 'running')) AS failed
FROM (
    SELECT DISTINCT ON (data_level, work_unit) status FROM processing_runs
    WHERE campaign_run_id = %(campaign_run_id)s
    ORDER BY data_level, work_unit, id DESC
) last_attempts;

-- name: close_campaign_run
UPDATE campaign_runs
SET status = %(status)s, inputs = %(inputs)s, remade = %(remade)s, skipped = %(skipped)s, failed = %(failed)s,
    planned = %(planned)s::jsonb, ended_at = now()
WHERE id = %(campaign_run_id)s;

-- name: campaigns_summary
SELECT c.id, c.campaign_key, c.instrument_id, c.dag_id, c.kind, c.requested_by, c.reason, c.levels, c.force,
       c.dry_run, c.image, c.processor, c.calibration, c.created_at,
       count(r.id) AS runs,
       min(r.interval_start) AS range_start, max(r.interval_end) AS range_end,
       coalesce(sum(r.inputs), 0) AS inputs, coalesce(sum(r.remade), 0) AS remade,
       coalesce(sum(r.skipped), 0) AS skipped, coalesce(sum(r.failed), 0) AS failed,
       min(r.started_at) AS started_at, max(r.ended_at) AS ended_at,
       CASE WHEN bool_or(r.status = 'running') THEN 'running'
            WHEN bool_or(r.status = 'failed') THEN 'failed'
            ELSE 'done' END AS status
FROM campaigns c LEFT JOIN campaign_runs r ON r.campaign_id = c.id
WHERE %(instrument_id)s::text IS NULL OR c.instrument_id = %(instrument_id)s
GROUP BY c.id
ORDER BY c.id DESC
LIMIT %(limit)s;

-- name: impact_of_file
-- Everything made from a file, transitively, with whether each is its root's latest version and whether
-- it is stale (one of its direct inputs has a newer version than the one it was made from).
WITH RECURSIVE d(id, depth) AS (
    SELECT l.product_id, 1 FROM lineage l
    JOIN science_files s ON s.id = l.input_id
    WHERE lower(s.file_name) = lower(%(file_name)s)
    UNION
    SELECT l.product_id, d.depth + 1 FROM lineage l JOIN d ON l.input_id = d.id
)
SELECT f.id, f.file_name, f.data_level, f.processing_run_id, min(d.depth) AS depth,
       EXISTS (SELECT 1 FROM science_files n WHERE lower(n.file_root) = lower(f.file_root)
               AND n.absolute_version > f.absolute_version) AS superseded,
       EXISTS (SELECT 1 FROM lineage li JOIN science_files i ON i.id = li.input_id
               JOIN science_files n ON lower(n.file_root) = lower(i.file_root)
                                    AND n.absolute_version > i.absolute_version
               WHERE li.product_id = f.id) AS stale
FROM d JOIN science_files f ON f.id = d.id
GROUP BY f.id
ORDER BY min(d.depth), f.file_name;

-- name: stale_latest_products
-- Latest products (of an instrument, or all) with an input that has a newer version: made from a
-- superseded input; a reprocessing run should remake them.
SELECT f.id, f.file_name, f.data_level, i.file_name AS input_name, n.file_name AS newer_input
FROM science_files_latest f
JOIN lineage li ON li.product_id = f.id
JOIN science_files i ON i.id = li.input_id
JOIN LATERAL (
    SELECT s.file_name FROM science_files s
    WHERE lower(s.file_root) = lower(i.file_root) AND s.absolute_version > i.absolute_version
    ORDER BY s.absolute_version DESC LIMIT 1
) n ON true
WHERE %(instrument_id)s::text IS NULL OR f.instrument_id = %(instrument_id)s
ORDER BY f.file_name;

-- name: observation_range
-- First and last L0 observation time of an instrument (for suggested backfill commands).
SELECT min(timetag) AS first, max(timetag) AS last, count(*) AS files FROM science_files
WHERE instrument_id = %(instrument_id)s AND data_level = 'l0';

-- name: campaign_runs_of
SELECT r.*, c.campaign_key FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
WHERE r.dag_id = %(dag_id)s ORDER BY r.id;

-- name: product_versions_in_use
-- Highest product version (VV) among an instrument's latest products, per level.
SELECT data_level, max(version) AS version, count(*) AS files FROM science_files_latest
WHERE instrument_id = %(instrument_id)s AND processing_run_id IS NOT NULL
GROUP BY data_level ORDER BY data_level;
