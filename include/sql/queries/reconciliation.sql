-- Integrity reconciliation (core/reconcile.py). The recon_rows_* queries give, for one archive area, every
-- object the catalog expects between two keys, in S3's key order (COLLATE "C" = byte order), one row per
-- expected object: key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at (instrument_id
-- NULL = from the key; created_at only where a row is committed before its object is written: release documents).
-- role: 'object' (must exist; size/MD5 compared when known), 'reason' (a quarantine reason object),
-- 'optional' (may exist), 'prefix' (every object under the key belongs to the row).

-- name: recon_rows_data
SELECT s3_key AS key, 'science_files' AS catalog_table, id AS catalog_id, file_size, rtrim(md5checksum) AS md5,
       'object' AS role, NULL::text AS instrument_id, NULL::timestamptz AS created_at
FROM science_files
WHERE bucket = %(bucket)s AND s3_key COLLATE "C" >= %(lo)s AND s3_key COLLATE "C" < %(hi)s
ORDER BY s3_key COLLATE "C";

-- name: recon_rows_spice
SELECT key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at FROM (
    SELECT s3_key AS key, 'spice_kernels' AS catalog_table, id AS catalog_id, file_size,
           rtrim(md5checksum) AS md5, 'object' AS role, NULL::text AS instrument_id, ingested_at AS created_at
    FROM spice_kernels WHERE bucket = %(bucket)s
    UNION ALL
    SELECT s3_key, 'meta_kernels', id, NULL::bigint, NULL::text, 'object', NULL::text, created_at
    FROM meta_kernels
) k
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C";

-- name: recon_rows_quarantine
-- A quarantined file, its reason object (required) and its sidecar copy (when the delivery had one).
SELECT key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at FROM (
    SELECT quarantine_key AS key, 'quarantine' AS catalog_table, id AS catalog_id, file_size,
           rtrim(md5checksum) AS md5, 'object' AS role, instrument_id, detected_at AS created_at FROM quarantine
    UNION ALL
    SELECT quarantine_key || '.reason.json', 'quarantine', id, NULL, NULL, 'reason', instrument_id, detected_at
    FROM quarantine
    UNION ALL
    SELECT quarantine_key || '.md5', 'quarantine', id, NULL, NULL, 'optional', instrument_id, detected_at
    FROM quarantine
) q
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C", role;

-- name: recon_rows_logs
-- Processing logs: the object each run's log_uri names (no size or MD5 is recorded for logs).
SELECT key, 'processing_runs' AS catalog_table, catalog_id, NULL::bigint AS file_size, NULL::text AS md5,
       'object' AS role, instrument_id, created_at FROM (
    SELECT substr(log_uri, length('s3://' || %(bucket)s || '/') + 1) AS key, id AS catalog_id, instrument_id,
           coalesce(ended_at, started_at) AS created_at
    FROM processing_runs
    WHERE log_uri LIKE 's3://' || %(bucket)s || '/%%'
) r
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C", catalog_id;

-- name: recon_rows_calibration
SELECT s3_key AS key, 'calibration_files' AS catalog_table, id AS catalog_id, file_size, rtrim(md5checksum) AS md5,
       'object' AS role, instrument_id, delivered_at AS created_at
FROM calibration_files
WHERE bucket = %(bucket)s AND s3_key COLLATE "C" >= %(lo)s AND s3_key COLLATE "C" < %(hi)s
ORDER BY s3_key COLLATE "C";

-- name: recon_rows_releases
-- A release owns its folder; a published one must hold its manifest (JSON, CSV) and release notes.
SELECT key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at FROM (
    SELECT manifest_prefix AS key, 'releases' AS catalog_table, id AS catalog_id, NULL::bigint AS file_size,
           NULL::text AS md5, 'prefix' AS role, NULL::text AS instrument_id, created_at
    FROM releases WHERE manifest_prefix IS NOT NULL
    UNION ALL
    SELECT manifest_prefix || doc, 'releases', id, NULL, NULL, 'object', NULL, published_at
    FROM releases, unnest(ARRAY['manifest.csv', 'manifest.json', 'release_notes.md']) AS doc
    WHERE manifest_prefix IS NOT NULL AND published_at IS NOT NULL
) r
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C", role DESC;

-- name: recon_rows_staging
-- A staging check owns emm/staging/<inst>/<check id>/; a finished one must hold its report.
SELECT key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at FROM (
    SELECT 'emm/staging/' || instrument_id || '/' || id || '/' AS key, 'staging_checks' AS catalog_table,
           id AS catalog_id, NULL::bigint AS file_size, NULL::text AS md5, 'prefix' AS role, instrument_id,
           started_at AS created_at
    FROM staging_checks
    UNION ALL
    SELECT substr(report_uri, length('s3://' || %(bucket)s || '/') + 1), 'staging_checks', id, NULL, NULL,
           'object', instrument_id, coalesce(ended_at, started_at)
    FROM staging_checks WHERE report_uri LIKE 's3://' || %(bucket)s || '/%%'
) s
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C", role DESC;

-- name: recon_rows_reports
-- Reconciliation reports: a finished run owns its report folder, which must hold report.json and findings.csv.
SELECT key, catalog_table, catalog_id, file_size, md5, role, instrument_id, created_at FROM (
    SELECT report_prefix AS key, 'reconciliation_runs' AS catalog_table, id AS catalog_id, NULL::bigint AS file_size,
           NULL::text AS md5, 'prefix' AS role, NULL::text AS instrument_id, started_at AS created_at
    FROM reconciliation_runs WHERE report_prefix IS NOT NULL
    UNION ALL
    SELECT report_prefix || doc, 'reconciliation_runs', id, NULL, NULL, 'object', NULL, ended_at
    FROM reconciliation_runs, unnest(ARRAY['findings.csv', 'report.json']) AS doc
    WHERE report_prefix IS NOT NULL AND ended_at IS NOT NULL
) r
WHERE key COLLATE "C" >= %(lo)s AND key COLLATE "C" < %(hi)s
ORDER BY key COLLATE "C", role DESC;

-- name: recon_pending_keys
-- Archive keys a processing run reserved and may be writing right now (not orphans).
SELECT s3_key FROM pending_objects WHERE bucket = %(bucket)s AND s3_key COLLATE "C" >= %(lo)s
  AND s3_key COLLATE "C" < %(hi)s;

-- name: recon_missing_marks
-- Keys a repair marked missing (phantoms with nothing to restore): counted, not reported again.
SELECT id, s3_key FROM missing_objects WHERE bucket = %(bucket)s AND restored_at IS NULL
  AND s3_key COLLATE "C" >= %(lo)s AND s3_key COLLATE "C" < %(hi)s;

-- name: recon_clear_missing_mark
UPDATE missing_objects SET restored_at = now() WHERE id = %(id)s AND restored_at IS NULL;

-- name: recon_mark_missing
INSERT INTO missing_objects (bucket, s3_key, catalog_table, catalog_id, run_id, finding_id)
VALUES (%(bucket)s, %(s3_key)s, %(catalog_table)s, %(catalog_id)s, %(run_id)s, %(finding_id)s)
ON CONFLICT (bucket, s3_key) WHERE restored_at IS NULL DO NOTHING
RETURNING id;

-- name: recon_key_indexed
-- Is a key indexed now (outside the run's snapshot)? Confirms an orphan before it is reported.
SELECT 1 AS indexed WHERE
    EXISTS (SELECT 1 FROM science_files WHERE bucket = %(bucket)s AND s3_key = %(key)s)
 OR EXISTS (SELECT 1 FROM spice_kernels WHERE bucket = %(bucket)s AND s3_key = %(key)s)
 OR EXISTS (SELECT 1 FROM meta_kernels WHERE s3_key = %(key)s)
 OR EXISTS (SELECT 1 FROM calibration_files WHERE bucket = %(bucket)s AND s3_key = %(key)s)
 OR EXISTS (SELECT 1 FROM quarantine WHERE quarantine_key = %(key)s OR quarantine_key || '.md5' = %(key)s
                                         OR quarantine_key || '.reason.json' = %(key)s)
 OR EXISTS (SELECT 1 FROM processing_runs WHERE log_uri = 's3://' || %(bucket)s || '/' || %(key)s)
 OR EXISTS (SELECT 1 FROM pending_objects WHERE bucket = %(bucket)s AND s3_key = %(key)s);

-- name: recon_duplicate_latest
-- File roots (as the names say, case-insensitively) with more than one "latest" row: a stored file_root that
-- disagrees with its name (or spells the time separator against the instrument's) splits one root in
-- science_files_latest (the API's latest=true) into two. Only such suspect rows are looked at closely (cheap
-- tests on every row, no sort of the table); their groups are then resolved as the view does.
WITH suspects AS (
    SELECT id, lower(regexp_replace(file_name, '_[nprf]_v[0-9]{2}-[0-9]{2}[.].*$', '')) AS root
    FROM science_files
    WHERE (NOT starts_with(file_name, file_root || '_') OR (instrument_id = 'exi') = (strpos(file_root, 'T') = 0))
      AND (cardinality(%(instruments)s::text[]) = 0 OR instrument_id = ANY(%(instruments)s::text[]))
), members AS (
    SELECT s.root, f.id, f.file_name, f.file_root, f.absolute_version, f.instrument_id, f.s3_key
    FROM suspects s JOIN science_files f ON f.id = s.id
    UNION
    SELECT s.root, f.id, f.file_name, f.file_root, f.absolute_version, f.instrument_id, f.s3_key
    FROM (SELECT DISTINCT root FROM suspects) s JOIN science_files f ON lower(f.file_root) = s.root
), latest AS (
    SELECT DISTINCT ON (root, file_root) * FROM members ORDER BY root, file_root, absolute_version DESC, id DESC
)
SELECT root, array_agg(id ORDER BY absolute_version DESC, id DESC) AS ids,
       array_agg(file_name ORDER BY absolute_version DESC, id DESC) AS file_names,
       array_agg(file_root ORDER BY absolute_version DESC, id DESC) AS file_roots,
       min(instrument_id) AS instrument_id, min(s3_key) AS s3_key
FROM latest
GROUP BY root
HAVING count(*) > 1
ORDER BY root;

-- name: recon_lineage_missing_rows
-- Lineage rows naming a product or an input that is not in science_files.
SELECT l.product_id, l.input_id, p.file_name AS product_name, p.s3_key, p.instrument_id,
       (p.id IS NULL) AS product_missing, (i.id IS NULL) AS input_missing
FROM lineage l
LEFT JOIN science_files p ON p.id = l.product_id
LEFT JOIN science_files i ON i.id = l.input_id
WHERE (p.id IS NULL OR i.id IS NULL)
  AND (cardinality(%(instruments)s::text[]) = 0 OR p.instrument_id = ANY(%(instruments)s::text[]) OR p.id IS NULL)
ORDER BY l.product_id, l.input_id;

-- name: recon_kernel_class_mismatch
-- Products whose recorded kernel class (pred_rec) is not the kernel letter of their name; kernels whose
-- recorded class is not their name's (Hope SPK/CK: emm_<spk|ck>_<p|r|f>_...; generic kernels: n).
-- (In a valid name '_v' starts only the version, so the kernel letter is the character before it: no regex per row.)
SELECT 'science_files' AS catalog_table, id, file_name, s3_key, instrument_id, pred_rec::text AS recorded,
       substring(file_name FROM '_([nprf])_v[0-9]{2}-[0-9]{2}[.]') AS named
FROM science_files
WHERE substr(file_name, strpos(file_name, '_v') - 1, 1) <> pred_rec::text
  AND (cardinality(%(instruments)s::text[]) = 0 OR instrument_id = ANY(%(instruments)s::text[]))
UNION ALL
SELECT 'spice_kernels', id, file_name, s3_key, NULL, kernel_class::text,
       coalesce(substring(file_name FROM '^emm_(?:spk|ck)_([prf])_'), 'n')
FROM spice_kernels
WHERE cardinality(%(instruments)s::text[]) = 0
  AND kernel_class::text IS DISTINCT FROM coalesce(substring(file_name FROM '^emm_(?:spk|ck)_([prf])_'), 'n')
ORDER BY 1, 2;

-- name: recon_inbox_handled
-- Deliveries logged for inbox keys (a stale file that a run handled but could not remove says so).
SELECT inbox_key, inbox_version, outcome, dag_run_id, received_at FROM deliveries
WHERE inbox_key = ANY(%(keys)s) ORDER BY received_at;

-- name: recon_known_delivery
-- A logged delivery of this file (case-insensitive name) with these bytes: an orphan that may be re-indexed.
SELECT id, inbox_key, outcome, md5checksum, file_size, dag_run_id, received_at FROM deliveries
WHERE lower(regexp_replace(inbox_key, '^.*/', '')) = lower(%(file_name)s)
  AND rtrim(md5checksum) = %(md5)s AND file_size = %(size)s AND outcome IN ('archived', 'duplicate')
ORDER BY received_at LIMIT 1;

-- name: recon_link_delivery
-- A re-indexed orphan: the logged delivery that made it points at its row again (only when it points nowhere).
UPDATE deliveries SET file_id = %(file_id)s
WHERE id = %(delivery_id)s AND (file_id IS NULL OR NOT EXISTS (SELECT 1 FROM science_files WHERE id = file_id));

-- name: recon_rows_of_root
SELECT id, file_name, file_root, absolute_version FROM science_files WHERE id = ANY(%(ids)s) ORDER BY id;

-- name: recon_set_file_root
UPDATE science_files SET file_root = %(file_root)s WHERE id = %(id)s AND file_root <> %(file_root)s RETURNING id;

-- name: recon_last_run
-- The latest finished run of the DAG (its deep-verification slice continues from there).
SELECT id, started_at, deep_start, deep_fraction FROM reconciliation_runs
WHERE dag_id = %(dag_id)s AND ended_at IS NOT NULL AND deep_fraction IS NOT NULL
  AND NOT coalesce((params->>'scoped')::boolean, false)
ORDER BY started_at DESC LIMIT 1;

-- name: recon_open_run
INSERT INTO reconciliation_runs (dag_id, dag_run_id, params, deep_start, deep_fraction, listing)
VALUES (%(dag_id)s, %(dag_run_id)s, %(params)s::jsonb, %(deep_start)s, %(deep_fraction)s, %(listing)s)
ON CONFLICT (dag_id, dag_run_id) DO UPDATE SET params = EXCLUDED.params
RETURNING id, deep_start, deep_fraction, listing, started_at;

-- name: recon_run
SELECT * FROM reconciliation_runs WHERE id = %(run_id)s;

-- name: recon_clear_partition
DELETE FROM reconciliation_findings WHERE run_id = %(run_id)s AND partition_name = %(name)s;

-- name: recon_insert_finding
INSERT INTO reconciliation_findings (
    run_id, partition_name, kind, severity, area, bucket, s3_key, catalog_table, catalog_id, instrument_id,
    expected, found, action, details, repair
) VALUES (
    %(run_id)s, %(partition_name)s, %(kind)s, %(severity)s, %(area)s, %(bucket)s, %(s3_key)s, %(catalog_table)s,
    %(catalog_id)s, %(instrument_id)s, %(expected)s, %(found)s, %(action)s, %(details)s::jsonb, %(repair)s
);

-- name: recon_save_partition
INSERT INTO reconciliation_partitions (run_id, name, kind, objects, catalog_rows, verified_objects, verified_bytes,
                                       findings, seconds)
VALUES (%(run_id)s, %(name)s, %(kind)s, %(objects)s, %(catalog_rows)s, %(verified_objects)s, %(verified_bytes)s,
        %(findings)s, %(seconds)s)
ON CONFLICT (run_id, name) DO UPDATE SET objects = EXCLUDED.objects, catalog_rows = EXCLUDED.catalog_rows,
    verified_objects = EXCLUDED.verified_objects, verified_bytes = EXCLUDED.verified_bytes,
    findings = EXCLUDED.findings, seconds = EXCLUDED.seconds, ended_at = now();

-- name: recon_findings
SELECT * FROM reconciliation_findings WHERE run_id = %(run_id)s ORDER BY kind, area, s3_key, catalog_id, id;

-- name: recon_partitions
SELECT * FROM reconciliation_partitions WHERE run_id = %(run_id)s ORDER BY name;

-- name: recon_set_repair
UPDATE reconciliation_findings SET repair_status = %(status)s, repair_result = %(result)s,
    repaired_at = CASE WHEN %(status)s = 'applied' THEN now() ELSE repaired_at END
WHERE id = %(id)s;

-- name: recon_close_run
UPDATE reconciliation_runs SET ended_at = now(), status = %(status)s, counts = %(counts)s::jsonb,
    stats = %(stats)s::jsonb, report_prefix = %(report_prefix)s
WHERE id = %(run_id)s;

-- name: recon_quarantine_row
SELECT * FROM quarantine WHERE id = %(id)s;

-- name: recon_demo_victim
-- ./sdc demo: the first product, which the demo overwrites behind the SDC's back before reconciling.
SELECT s3_key, file_size FROM science_files WHERE processing_run_id IS NOT NULL ORDER BY id LIMIT 1;
