-- Named queries of the product catalog. Each block starts with "-- name: <name>".
-- Parameters use the DB-API pyformat style %(name)s; values are never spliced in.

-- name: schema_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: migration_lock
SELECT pg_advisory_xact_lock(724201);

-- name: applied_migrations
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: file_by_name
SELECT * FROM science_files WHERE file_name = %(file_name)s;

-- name: file_by_identity
-- The file a name denotes, whatever the case of its time separator (see migration 0005).
SELECT * FROM science_files WHERE lower(file_name) = lower(%(file_name)s);

-- name: files_by_names
SELECT * FROM science_files WHERE file_name = ANY(%(file_names)s) ORDER BY file_name;

-- name: insert_file_if_new
-- Nothing (no row returned) when the name, its identity or its key is already indexed.
INSERT INTO science_files (
    file_name, directory_path, file_size, instrument_id, data_level, timetag, descriptor, mode,
    orbit_number, pred_rec, version, revision, file_root, absolute_version, md5checksum,
    product_type, bucket, s3_key, processing_run_id, meta_kernel_id,
    mars_ls, spacecraft_lst, subsolar_lat, subsolar_lon, spacecraft_lat, spacecraft_lon, spacecraft_alt
) VALUES (
    %(file_name)s, %(directory_path)s, %(file_size)s, %(instrument_id)s, %(data_level)s, %(timetag)s,
    %(descriptor)s, %(mode)s, %(orbit_number)s, %(pred_rec)s, %(version)s, %(revision)s, %(file_root)s,
    %(absolute_version)s, %(md5checksum)s, %(product_type)s, %(bucket)s, %(s3_key)s, %(processing_run_id)s,
    %(meta_kernel_id)s, %(mars_ls)s, %(spacecraft_lst)s, %(subsolar_lat)s, %(subsolar_lon)s, %(spacecraft_lat)s,
    %(spacecraft_lon)s, %(spacecraft_alt)s
)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_lineage
INSERT INTO lineage (product_id, input_id) VALUES (%(product_id)s, %(input_id)s)
ON CONFLICT DO NOTHING;

-- name: insert_quarantine
INSERT INTO quarantine (
    instrument_id, original_key, quarantine_key, reason_code, reason, details, md5checksum, file_size,
    dag_id, dag_run_id, delivery_id
) VALUES (
    %(instrument_id)s, %(original_key)s, %(quarantine_key)s, %(reason_code)s, %(reason)s,
    %(details)s::jsonb, %(md5checksum)s, %(file_size)s, %(dag_id)s, %(dag_run_id)s, %(delivery_id)s
)
-- A retried quarantine of the same delivery keeps its first row (the no-op update returns its id).
ON CONFLICT (quarantine_key) DO UPDATE SET quarantine_key = quarantine.quarantine_key
RETURNING id;

-- name: insert_delivery
-- One row per delivery: a retry or a concurrent run handling the same delivery adds nothing.
INSERT INTO deliveries (
    instrument_id, inbox_key, md5checksum, file_size, outcome, file_id, kernel_id, quarantine_id, dag_id, dag_run_id,
    delivery_id, inbox_version
) VALUES (
    %(instrument_id)s, %(inbox_key)s, %(md5checksum)s, %(file_size)s, %(outcome)s, %(file_id)s, %(kernel_id)s,
    %(quarantine_id)s, %(dag_id)s, %(dag_run_id)s, %(delivery_id)s, %(inbox_version)s
)
ON CONFLICT (delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: delivery_by_id
SELECT d.*, q.quarantine_key, q.reason_code FROM deliveries d
LEFT JOIN quarantine q ON q.id = d.quarantine_id
WHERE d.delivery_id = %(delivery_id)s;

-- name: start_run
-- try_number: the Airflow task instance's own try; staging_check_id: set for a staging check's jobs only.
INSERT INTO processing_runs (
    dag_id, dag_run_id, task_id, map_index, try_number, instrument_id, data_level, work_unit, runner,
    processor_name, processor_version, image, environment, meta_kernel, reason, started_at, status,
    staging_check_id
) VALUES (
    %(dag_id)s, %(dag_run_id)s, %(task_id)s, %(map_index)s, %(try_number)s, %(instrument_id)s,
    %(data_level)s, %(work_unit)s, %(runner)s, %(processor_name)s, %(processor_version)s, %(image)s,
    %(environment)s, %(meta_kernel)s, %(reason)s, %(started_at)s, 'running', %(staging_check_id)s
)
RETURNING id;

-- name: finish_run
UPDATE processing_runs
SET status = %(status)s, ended_at = %(ended_at)s, exit_status = %(exit_status)s,
    message = %(message)s, log_uri = %(log_uri)s
WHERE id = %(run_id)s;

-- name: unprocessed_inputs
-- Archived files of a level that no product of target_level lists as an input.
SELECT f.*
FROM science_files_latest f
WHERE f.instrument_id = %(instrument_id)s
  AND f.data_level = %(input_level)s
  AND NOT EXISTS (
      SELECT 1 FROM lineage l JOIN science_files p ON p.id = l.product_id
      WHERE l.input_id = f.id AND p.data_level = %(target_level)s
  )
ORDER BY f.timetag, f.file_name;

-- name: counts_by_level
SELECT instrument_id, data_level, product_type, count(*) AS files, sum(file_size) AS bytes
FROM science_files
GROUP BY instrument_id, data_level, product_type
ORDER BY instrument_id, data_level;

-- name: quarantine_list
SELECT id, instrument_id, original_key, quarantine_key, reason_code, reason, detected_at
FROM quarantine
ORDER BY id;

-- name: delivery_outcomes
SELECT instrument_id, outcome, count(*) AS files
FROM deliveries
GROUP BY instrument_id, outcome
ORDER BY instrument_id, outcome;

-- name: table_counts
SELECT 'science_files' AS table_name, count(*) AS rows FROM science_files
UNION ALL SELECT 'processing_runs', count(*) FROM processing_runs
UNION ALL SELECT 'lineage', count(*) FROM lineage
UNION ALL SELECT 'quarantine', count(*) FROM quarantine
UNION ALL SELECT 'deliveries', count(*) FROM deliveries;

-- name: products_of_run
SELECT f.* FROM science_files f
JOIN processing_runs r ON r.id = f.processing_run_id
WHERE r.dag_id = %(dag_id)s AND r.dag_run_id = %(dag_run_id)s AND f.data_level = %(data_level)s
ORDER BY f.file_name;

-- name: files_of_run
SELECT f.file_name, f.s3_key, f.data_level FROM deliveries d
JOIN science_files f ON f.id = d.file_id
WHERE d.dag_id = %(dag_id)s AND d.dag_run_id = %(dag_run_id)s AND d.outcome = 'archived'
  AND f.data_level = %(data_level)s
ORDER BY f.file_name;

-- name: run_deliveries
SELECT d.inbox_key, d.outcome, d.md5checksum, d.file_size, q.reason_code, q.reason, q.quarantine_key
FROM deliveries d
LEFT JOIN quarantine q ON q.id = d.quarantine_id
WHERE d.dag_id = %(dag_id)s AND d.dag_run_id = %(dag_run_id)s
ORDER BY d.id;

-- name: children_at_level
-- Direct products of a level made from the given inputs, with the input each came from.
SELECT l.input_id, f.*
FROM lineage l JOIN science_files f ON f.id = l.product_id
WHERE l.input_id = ANY(%(input_ids)s::bigint[]) AND f.data_level = %(data_level)s
ORDER BY f.file_name;

-- name: science_l0_by_orbit
SELECT * FROM science_files_latest
WHERE instrument_id = %(instrument_id)s AND data_level = 'l0' AND orbit_number = ANY(%(orbits)s::int[])
ORDER BY timetag, file_name;

-- name: science_l0_by_time
SELECT * FROM science_files_latest
WHERE instrument_id = %(instrument_id)s AND data_level = 'l0'
  AND timetag >= %(start)s AND timetag < %(end)s
ORDER BY timetag, file_name;

-- name: run_status_counts
SELECT status, count(*) AS runs FROM processing_runs GROUP BY status ORDER BY status;

-- name: sample_lineage
-- A few product -> input pairs, highest level first, for summaries.
SELECT p.file_name AS product, i.file_name AS input
FROM lineage l
JOIN science_files p ON p.id = l.product_id
JOIN science_files i ON i.id = l.input_id
ORDER BY p.data_level DESC, p.file_name
LIMIT 4;

-- name: all_files_brief
SELECT file_name, md5checksum, s3_key, data_level, revision FROM science_files ORDER BY file_name;

-- name: products_without_lineage_or_run
-- Integrity check: every processed product has a processing run and at least one input.
SELECT f.file_name
FROM science_files f
WHERE f.data_level NOT IN ('l0', 'hk')
  AND (f.processing_run_id IS NULL OR NOT EXISTS (SELECT 1 FROM lineage l WHERE l.product_id = f.id));

-- name: delivery_outcomes_total
SELECT outcome, count(*) AS files FROM deliveries GROUP BY outcome ORDER BY outcome;

-- name: latest_of_level
SELECT * FROM science_files_latest
WHERE instrument_id = %(instrument_id)s AND data_level = %(data_level)s
ORDER BY file_name;

-- name: runs_of_level
SELECT * FROM processing_runs
WHERE instrument_id = %(instrument_id)s AND data_level = %(data_level)s
ORDER BY id;

-- name: descendants_at_level
-- Every file (all versions) at a level that descends from the given files.
WITH RECURSIVE d(id) AS (
    SELECT unnest(%(root_ids)s::bigint[])
    UNION
    SELECT l.product_id FROM lineage l JOIN d ON l.input_id = d.id
)
SELECT f.* FROM science_files f
WHERE f.id IN (SELECT id FROM d) AND f.data_level = %(data_level)s
ORDER BY f.file_name;

-- name: start_staging_check
INSERT INTO staging_checks (instrument_id, candidate_image, production_image, dag_id, dag_run_id,
                            reference_inputs, status)
VALUES (%(instrument_id)s, %(candidate_image)s, %(production_image)s, %(dag_id)s, %(dag_run_id)s,
        %(reference_inputs)s::jsonb, 'running')
ON CONFLICT (dag_id, dag_run_id) DO UPDATE SET candidate_image = EXCLUDED.candidate_image
RETURNING id;

-- name: finish_staging_check
UPDATE staging_checks SET status = %(status)s, ended_at = now(), summary = %(summary)s, report_uri = %(report_uri)s
WHERE id = %(check_id)s;

-- name: latest_passed_check
SELECT * FROM staging_checks
WHERE instrument_id = %(instrument_id)s AND candidate_image = %(image)s AND status = 'passed'
ORDER BY ended_at DESC LIMIT 1;

-- name: production_image
-- The instrument's current production image: its most recent promotion.
SELECT * FROM image_promotions WHERE instrument_id = %(instrument_id)s ORDER BY promoted_at DESC, id DESC LIMIT 1;

-- name: record_promotion
INSERT INTO image_promotions (instrument_id, image, previous_image, staging_check_id, promoted_by, reason)
VALUES (%(instrument_id)s, %(image)s, %(previous_image)s, %(staging_check_id)s, %(promoted_by)s, %(reason)s)
RETURNING id;

-- name: staging_checks_of
SELECT * FROM staging_checks WHERE instrument_id = %(instrument_id)s ORDER BY id;

-- name: set_run_processor
UPDATE processing_runs SET processor_name = %(processor_name)s, processor_version = %(processor_version)s
WHERE id = %(run_id)s;

-- name: runs_of_staging_check
SELECT * FROM processing_runs WHERE staging_check_id = %(check_id)s ORDER BY id;

-- name: latest_science_l0
-- The L0 files of the instrument's most recent archived orbit (staging-check reference inputs).
SELECT * FROM science_files_latest
WHERE instrument_id = %(instrument_id)s AND data_level = 'l0'
  AND orbit_number = (SELECT max(orbit_number) FROM science_files
                      WHERE instrument_id = %(instrument_id)s AND data_level = 'l0')
ORDER BY file_name;

-- name: runs_by_runner
SELECT instrument_id, runner, coalesce(image, '-') AS image, environment, status, count(*) AS runs
FROM processing_runs
GROUP BY instrument_id, runner, image, environment, status
ORDER BY instrument_id, environment, status;

-- name: kernel_by_name
SELECT * FROM spice_kernels WHERE file_name = %(file_name)s;

-- name: insert_kernel
INSERT INTO spice_kernels (file_name, kernel_type, kernel_class, version, coverage_start, coverage_end,
                           md5checksum, file_size, bucket, s3_key, series, kind, dag_run_id)
VALUES (%(file_name)s, %(kernel_type)s, %(kernel_class)s, %(version)s, %(coverage_start)s, %(coverage_end)s,
        %(md5checksum)s, %(file_size)s, %(bucket)s, %(s3_key)s, %(series)s, %(kind)s, %(dag_run_id)s)
ON CONFLICT DO NOTHING  -- already indexed (a retry, or a concurrent run): the caller decides
RETURNING id;

-- name: insert_kernel_coverage
INSERT INTO kernel_coverage (kernel_id, body_or_frame, start_time, end_time)
VALUES (%(kernel_id)s, %(body_or_frame)s, %(start_time)s, %(end_time)s)
ON CONFLICT DO NOTHING;

-- name: supersede_series
-- Older versions of a series give way to the new one.
UPDATE spice_kernels SET superseded_by = %(kernel_id)s
WHERE series = %(series)s AND version < %(version)s AND superseded_by IS NULL;

-- name: active_kernels
SELECT * FROM spice_kernels WHERE superseded_by IS NULL ORDER BY kernel_type, file_name;

-- name: kernels_of_run
SELECT * FROM spice_kernels WHERE dag_run_id = %(dag_run_id)s ORDER BY file_name;

-- name: hope_coverage
-- Coverage of Hope's trajectory (SPK, body -62) by kernel class, from active kernels.
SELECT k.kernel_class, c.start_time, c.end_time, k.file_name
FROM kernel_coverage c JOIN spice_kernels k ON k.id = c.kernel_id
WHERE k.kernel_type = 'spk' AND c.body_or_frame = -62 AND k.superseded_by IS NULL
ORDER BY c.start_time;

-- name: latest_meta_kernel
SELECT * FROM meta_kernels ORDER BY version DESC LIMIT 1;

-- name: insert_meta_kernel
INSERT INTO meta_kernels (version, file_name, s3_key, kernels, dag_run_id)
VALUES (%(version)s, %(file_name)s, %(s3_key)s, %(kernels)s::jsonb, %(dag_run_id)s)
RETURNING id;

-- name: products_to_upgrade
-- Latest products of the given levels whose kernel class is worse than a class now covering their time.
SELECT f.id, f.file_name, f.instrument_id, f.data_level, f.timetag, f.pred_rec
FROM science_files_latest f
WHERE f.instrument_id = %(instrument_id)s
  AND f.data_level = ANY(%(levels)s)
  AND f.pred_rec = ANY(%(worse)s)
  AND f.timetag >= %(start)s AND f.timetag <= %(end)s
ORDER BY f.timetag;

-- name: l0_roots
-- The L0 files a set of products descends from.
WITH RECURSIVE up(id) AS (
    SELECT unnest(%(product_ids)s::bigint[])
    UNION
    SELECT l.input_id FROM lineage l JOIN up ON l.product_id = up.id
)
SELECT DISTINCT f.file_name FROM science_files f
WHERE f.id IN (SELECT id FROM up) AND f.data_level = 'l0'
ORDER BY f.file_name;

-- name: hope_coverage_history
-- Every Hope SPK coverage interval with the run that archived its kernel (for before/after comparisons).
SELECT k.kernel_class, c.start_time, c.end_time, k.file_name, k.dag_run_id, k.superseded_by
FROM kernel_coverage c JOIN spice_kernels k ON k.id = c.kernel_id
WHERE k.kernel_type = 'spk' AND c.body_or_frame = -62
ORDER BY c.start_time;

-- name: set_run_meta_kernel
UPDATE processing_runs SET meta_kernel_id = %(meta_kernel_id)s WHERE id = %(run_id)s;

-- name: latest_by_kernel_class
SELECT instrument_id, data_level, pred_rec, revision, count(*) AS files
FROM science_files_latest
WHERE data_level NOT IN ('l0', 'hk')
GROUP BY instrument_id, data_level, pred_rec, revision
ORDER BY instrument_id, data_level, pred_rec, revision;

-- name: sample_geometry
SELECT file_name, mars_ls, spacecraft_lst, spacecraft_lat, spacecraft_lon, spacecraft_alt, subsolar_lat, subsolar_lon
FROM science_files_latest
WHERE mars_ls IS NOT NULL
ORDER BY pred_rec = 'r' DESC, timetag, file_name
LIMIT 1;

-- name: meta_kernels
SELECT version, file_name, kernels, dag_run_id, created_at FROM meta_kernels ORDER BY version;

-- name: reserve_object
-- A job reserves an archive key before it uploads there; nothing if another run holds it.
INSERT INTO pending_objects (processing_run_id, bucket, s3_key, md5checksum)
VALUES (%(run_id)s, %(bucket)s, %(s3_key)s, %(md5checksum)s)
ON CONFLICT (bucket, s3_key) DO NOTHING
RETURNING id;

-- name: reservation_of_key
SELECT p.*, r.status AS run_status, r.dag_id, r.dag_run_id FROM pending_objects p
JOIN processing_runs r ON r.id = p.processing_run_id
WHERE p.bucket = %(bucket)s AND p.s3_key = %(s3_key)s;

-- name: reservations_of_run
SELECT p.*, f.id AS file_id FROM pending_objects p
LEFT JOIN science_files f ON f.bucket = p.bucket AND f.s3_key = p.s3_key
WHERE p.processing_run_id = %(run_id)s
ORDER BY p.s3_key;

-- name: release_reservations
DELETE FROM pending_objects WHERE processing_run_id = %(run_id)s;

-- name: release_reservation
DELETE FROM pending_objects WHERE id = %(id)s;

-- name: run_by_id
SELECT * FROM processing_runs WHERE id = %(run_id)s;

-- name: stale_runs
-- Runs still 'running' of one DAG run (all its tasks are done), or of any DAG run older than a bound.
SELECT * FROM processing_runs
WHERE status = 'running'
  AND ((dag_id = %(dag_id)s AND dag_run_id = %(dag_run_id)s) OR started_at < %(older_than)s)
ORDER BY id;

-- name: versions_of_roots
-- Ids of every version of the given files' roots (e.g. an L0 and its corrected re-delivery).
SELECT id FROM science_files
WHERE lower(file_root) IN (SELECT lower(file_root) FROM science_files WHERE id = ANY(%(ids)s::bigint[]));

-- name: products_of_run_id
SELECT * FROM science_files WHERE processing_run_id = %(run_id)s ORDER BY file_name;

-- name: fail_stale_run
-- Close a run that will never close itself; a run that finished meanwhile is left as it is.
UPDATE processing_runs
SET status = 'failed', ended_at = %(ended_at)s, message = %(message)s
WHERE id = %(run_id)s AND status = 'running';

-- name: insert_packet_sequence_check
-- One delivery's CCSDS sequence-count check (migration 0013); a retry of the same delivery keeps the first row.
INSERT INTO packet_sequence_checks (delivery_id, instrument_id, file_name, rule, verdict, packets, gaps, missing,
                                    repeats, out_of_order, summary, dag_id, dag_run_id)
VALUES (%(delivery_id)s, %(instrument_id)s, %(file_name)s, %(rule)s, %(verdict)s, %(packets)s, %(gaps)s,
        %(missing)s, %(repeats)s, %(out_of_order)s, %(summary)s, %(dag_id)s, %(dag_run_id)s)
ON CONFLICT (delivery_id) DO NOTHING
RETURNING delivery_id;

-- name: insert_packet_sequence_apid
INSERT INTO packet_sequence_apids (delivery_id, apid, packets, first_count, last_count, gaps, missing, repeats,
                                   out_of_order)
VALUES (%(delivery_id)s, %(apid)s, %(packets)s, %(first_count)s, %(last_count)s, %(gaps)s, %(missing)s,
        %(repeats)s, %(out_of_order)s)
ON CONFLICT (delivery_id, apid) DO NOTHING;

-- name: run_packet_sequence_anomalies
-- Deliveries handled by one ingest run whose sequence counts have gaps, repeats or out-of-order packets.
SELECT d.inbox_key, d.outcome, c.file_name, c.rule, c.verdict, c.packets, c.gaps, c.missing, c.repeats,
       c.out_of_order, c.summary
FROM deliveries d
JOIN packet_sequence_checks c ON c.delivery_id = d.delivery_id
WHERE d.dag_id = %(dag_id)s AND d.dag_run_id = %(dag_run_id)s AND c.verdict <> 'continuous'
ORDER BY d.id;

-- name: packet_sequence_of_file
-- The sequence-count check of the delivery that archived a file, with its APIDs (null before migration 0013's
-- checks, and for files that are not CCSDS packets).
SELECT c.*, (SELECT coalesce(jsonb_agg(to_jsonb(a) - 'delivery_id' ORDER BY a.apid), '[]'::jsonb)
             FROM packet_sequence_apids a WHERE a.delivery_id = c.delivery_id) AS apids
FROM science_files f
JOIN deliveries d ON d.file_id = f.id AND d.outcome = 'archived'
JOIN packet_sequence_checks c ON c.delivery_id = d.delivery_id
WHERE f.file_name = %(file_name)s;
