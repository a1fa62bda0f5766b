-- Quarterly public releases (core/release.py). "Latest" below is science_files_latest's rule (no
-- version of the same file root is newer), written out so the (file_root, absolute_version) index
-- serves it and rows can be locked.

-- name: release_by_name
SELECT * FROM releases WHERE name = %(name)s;

-- name: release_candidates
-- The latest products of one instrument that its rules release, not released yet, never withdrawn:
-- those observed in the window, and (carry_over, quarterly batches) those observed in the window of
-- an earlier published batch: late products, newer revisions, products that now meet the rules.
SELECT f.id, f.file_name, f.instrument_id, f.data_level, f.timetag, f.pred_rec, f.file_size,
       f.md5checksum, f.bucket, f.s3_key,
       CASE WHEN f.timetag >= %(start)s THEN 'window' ELSE 'carry-over' END AS selection
FROM science_files f
WHERE f.instrument_id = %(instrument_id)s
  AND f.data_level = ANY(%(levels)s::text[])
  AND f.pred_rec = ANY(%(pred_rec)s::text[])
  AND NOT f.released
  AND f.timetag < %(end)s
  AND (f.timetag >= %(start)s
       OR (%(carry_over)s AND EXISTS (
           SELECT 1 FROM releases r
           WHERE r.batch IS NOT NULL
             AND f.timetag >= (r.period_start::timestamp AT TIME ZONE 'UTC')
             AND f.timetag < ((r.period_end + 1)::timestamp AT TIME ZONE 'UTC'))))
  AND NOT EXISTS (SELECT 1 FROM science_files n
                  WHERE n.file_root = f.file_root AND n.absolute_version > f.absolute_version)
  AND NOT EXISTS (SELECT 1 FROM release_withdrawals w WHERE w.file_id = f.id)
  AND NOT EXISTS (SELECT 1 FROM release_files rf WHERE rf.file_id = f.id)
ORDER BY f.data_level, f.file_name;

-- name: files_to_verify
SELECT id, file_name, instrument_id, data_level, bucket, s3_key, md5checksum, file_size
FROM science_files
WHERE id = ANY(%(ids)s::bigint[])
ORDER BY file_name;

-- name: lock_releasable
-- At publish time: the verified files that are still releasable (latest, unreleased, never withdrawn
-- nor released), locked until the release commits, so two releases never take one file.
SELECT f.id, f.file_name, f.file_size, f.md5checksum,
       CASE WHEN f.timetag >= %(start)s THEN 'window' ELSE 'carry-over' END AS selection
FROM science_files f
WHERE f.id = ANY(%(ids)s::bigint[])
  AND NOT f.released
  AND NOT EXISTS (SELECT 1 FROM science_files n
                  WHERE n.file_root = f.file_root AND n.absolute_version > f.absolute_version)
  AND NOT EXISTS (SELECT 1 FROM release_withdrawals w WHERE w.file_id = f.id)
  AND NOT EXISTS (SELECT 1 FROM release_files rf WHERE rf.file_id = f.id)
ORDER BY f.id
FOR UPDATE OF f;

-- name: insert_release
-- Nothing when the release (name or batch) exists: a concurrent run published it first.
INSERT INTO releases (name, batch, period_start, period_end, status, published_at, rules, file_count,
                      total_bytes, withheld, manifest_prefix, dag_id, dag_run_id)
VALUES (%(name)s, %(batch)s, %(period_start)s, %(period_end)s, 'published', now(), %(rules)s::jsonb,
        %(file_count)s, %(total_bytes)s, %(withheld)s::jsonb, %(manifest_prefix)s, %(dag_id)s, %(dag_run_id)s)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: insert_release_files
INSERT INTO release_files (release_id, file_id, md5checksum, selection)
SELECT %(release_id)s, u.file_id, u.md5, u.selection
FROM unnest(%(file_ids)s::bigint[], %(md5s)s::text[], %(selections)s::text[]) AS u(file_id, md5, selection);

-- name: flag_released
UPDATE science_files SET released = true
WHERE id IN (SELECT file_id FROM release_files WHERE release_id = %(release_id)s) AND NOT released
RETURNING id;

-- name: release_manifest
-- A release's files as its manifest lists them (MD5 as verified when released); released = now public.
SELECT f.id AS file_id, f.file_name, f.instrument_id, f.data_level, f.product_type, f.timetag,
       f.orbit_number, f.pred_rec, f.version, f.revision, f.absolute_version, f.file_size,
       rf.md5checksum, f.bucket, f.s3_key, rf.selection, f.released
FROM release_files rf JOIN science_files f ON f.id = rf.file_id
WHERE rf.release_id = %(release_id)s
ORDER BY f.instrument_id, f.data_level, f.file_name;

-- name: release_state_of_files
-- Files by name with the release that released them (if any).
SELECT f.id, f.file_name, f.released, f.bucket, f.s3_key, f.md5checksum, rf.release_id, r.name AS release_name
FROM science_files f
LEFT JOIN release_files rf ON rf.file_id = f.id
LEFT JOIN releases r ON r.id = rf.release_id
WHERE f.file_name = ANY(%(file_names)s::text[])
ORDER BY f.file_name;

-- name: withdraw_files
-- Withdraw the given files that are released, at once, with one audit row each; others are left alone.
WITH gone AS (
    UPDATE science_files SET released = false
    WHERE id = ANY(%(file_ids)s::bigint[]) AND released
    RETURNING id
)
INSERT INTO release_withdrawals (file_id, release_id, scope, reason, requested_by, dag_id, dag_run_id)
SELECT g.id, rf.release_id, %(scope)s, %(reason)s, %(requested_by)s, %(dag_id)s, %(dag_run_id)s
FROM gone g LEFT JOIN release_files rf ON rf.file_id = g.id
RETURNING id, file_id, release_id;

-- name: mark_release_withdrawn
UPDATE releases SET status = 'withdrawn' WHERE id = %(release_id)s;

-- name: withdrawals_of_run
SELECT w.id, w.file_id, w.release_id, w.scope, w.reason, w.requested_by, w.dag_id, w.dag_run_id,
       w.withdrawn_at, f.file_name, f.bucket, f.s3_key, f.md5checksum, r.name AS release_name
FROM release_withdrawals w
JOIN science_files f ON f.id = w.file_id
LEFT JOIN releases r ON r.id = w.release_id
WHERE w.dag_id = %(dag_id)s AND w.dag_run_id = %(dag_run_id)s
ORDER BY w.id;

-- name: withdrawals_of_file
SELECT * FROM release_withdrawals WHERE file_id = %(file_id)s ORDER BY id;

-- name: release_preview
-- A dry run's would-be manifest rows.
SELECT f.id AS file_id, f.file_name, f.instrument_id, f.data_level, f.product_type, f.timetag, f.orbit_number,
       f.pred_rec, f.version, f.revision, f.absolute_version, f.file_size, f.md5checksum, f.s3_key,
       CASE WHEN f.timetag >= %(start)s THEN 'window' ELSE 'carry-over' END AS selection
FROM science_files f
WHERE f.id = ANY(%(ids)s::bigint[]);

-- name: release_flags
SELECT file_name, released FROM science_files ORDER BY file_name;
