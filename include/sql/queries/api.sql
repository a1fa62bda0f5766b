-- Named queries of the EMM science-files API (plugins/emm_sdc/api). Every filter is optional: a NULL
-- parameter switches its condition off. Statements are sent unprepared, so PostgreSQL plans each one
-- with the actual values and drops the switched-off conditions (indexes stay usable).

-- name: api_science_files
-- The EMM API's /science-files-metadata: newest timetag first, at most %(limit)s rows, each with its record
-- (api_record, written by emm_api_record() of migration 0008).
SELECT f.api_record AS record, f.file_name, f.bucket, f.s3_key, f.file_size, f.mod_date, f.md5checksum
FROM science_files f
WHERE f.product_type <> 'hk'
  AND (%(instrument_ids)s::text[] IS NULL OR f.instrument_id = ANY(%(instrument_ids)s::text[]))
  AND (%(data_levels)s::text[] IS NULL OR f.data_level = ANY(%(data_levels)s::text[]))
  AND (%(modes)s::text[] IS NULL OR f.mode = ANY(%(modes)s::text[]))
  AND (%(pred_recs)s::text[] IS NULL OR f.pred_rec = ANY(%(pred_recs)s::text[]))
  AND (%(orbits)s::int[] IS NULL OR f.orbit_number = ANY(%(orbits)s::int[]))
  AND (%(file_names)s::text[] IS NULL OR f.file_name = ANY(%(file_names)s::text[]))
  AND (%(start_time)s::timestamptz IS NULL OR f.timetag >= %(start_time)s::timestamptz)
  AND (%(end_time)s::timestamptz IS NULL OR f.timetag < %(end_time)s::timestamptz)
  AND (%(lst_lo)s::float8 IS NULL OR (
        CASE WHEN %(lst_lo)s::float8 <= %(lst_hi)s::float8
             THEN f.spacecraft_lst BETWEEN %(lst_lo)s::float8 AND %(lst_hi)s::float8
             ELSE f.spacecraft_lst >= %(lst_lo)s::float8 OR f.spacecraft_lst <= %(lst_hi)s::float8 END))
  AND (%(ls_lo)s::float8 IS NULL OR f.mars_ls >= %(ls_lo)s::float8)
  AND (%(ls_hi)s::float8 IS NULL OR f.mars_ls <= %(ls_hi)s::float8)
  AND (%(lat_lo)s::float8 IS NULL OR f.spacecraft_lat >= %(lat_lo)s::float8)
  AND (%(lat_hi)s::float8 IS NULL OR f.spacecraft_lat <= %(lat_hi)s::float8)
  AND (%(lon_lo)s::float8 IS NULL OR f.spacecraft_lon >= %(lon_lo)s::float8)
  AND (%(lon_hi)s::float8 IS NULL OR f.spacecraft_lon <= %(lon_hi)s::float8)
  AND (%(alt_lo)s::float8 IS NULL OR f.spacecraft_alt >= %(alt_lo)s::float8)
  AND (%(alt_hi)s::float8 IS NULL OR f.spacecraft_alt <= %(alt_hi)s::float8)
  AND (%(sslat_lo)s::float8 IS NULL OR f.subsolar_lat >= %(sslat_lo)s::float8)
  AND (%(sslat_hi)s::float8 IS NULL OR f.subsolar_lat <= %(sslat_hi)s::float8)
  AND (%(sslon_lo)s::float8 IS NULL OR f.subsolar_lon >= %(sslon_lo)s::float8)
  AND (%(sslon_hi)s::float8 IS NULL OR f.subsolar_lon <= %(sslon_hi)s::float8)
  -- who may see what: released files for everyone, everything for the team, an ITF's own instrument
  AND (%(see_all)s OR f.released OR f.instrument_id = ANY(%(own_instruments)s::text[]))
  -- latest=true: no newer version of the same file root that this caller may see (the public's latest is the
  -- newest *released* version, even while a newer revision waits for the next release)
  AND (NOT %(latest)s OR NOT EXISTS (
        SELECT 1 FROM science_files n
        WHERE n.file_root = f.file_root AND n.absolute_version > f.absolute_version
          AND (%(see_all)s OR n.released OR n.instrument_id = ANY(%(own_instruments)s::text[]))))
ORDER BY f.timetag DESC, f.id DESC
LIMIT %(limit)s;

-- name: api_processing_runs
-- Processing runs (with their archived logs) of the given instruments, newest first.
SELECT id, dag_id, dag_run_id, instrument_id, data_level, work_unit, runner, processor_name, processor_version,
       status, started_at, ended_at, exit_status, message, log_uri
FROM processing_runs
WHERE instrument_id = ANY(%(instrument_ids)s::text[])
  AND (%(run_id)s::bigint IS NULL OR id = %(run_id)s::bigint)
ORDER BY started_at DESC, id DESC
LIMIT %(limit)s;

-- name: api_versions_of
-- Every version of a file's root that the caller may see, newest first.
SELECT v.file_name, v.version, v.revision, v.absolute_version, v.pred_rec, v.released
FROM science_files v
WHERE v.file_root = (SELECT file_root FROM science_files WHERE file_name = %(file_name)s)
  AND (%(see_all)s OR v.released OR v.instrument_id = ANY(%(own_instruments)s::text[]))
ORDER BY v.absolute_version DESC, v.id DESC;

-- name: api_lineage_of
-- The inputs a file was made from and the products made from it, that the caller may see.
SELECT 'input' AS direction, i.file_name FROM lineage l JOIN science_files i ON i.id = l.input_id
WHERE l.product_id = %(id)s AND (%(see_all)s OR i.released OR i.instrument_id = ANY(%(own_instruments)s::text[]))
UNION ALL
SELECT 'output' AS direction, o.file_name FROM lineage l JOIN science_files o ON o.id = l.product_id
WHERE l.input_id = %(id)s AND (%(see_all)s OR o.released OR o.instrument_id = ANY(%(own_instruments)s::text[]))
ORDER BY 1, 2;

-- name: api_run_of
-- The processing run that made a file (none for MOC deliveries).
SELECT r.id, r.dag_id, r.dag_run_id, r.processor_name, r.processor_version, r.image, r.runner, r.status,
       r.started_at, r.ended_at, r.meta_kernel, f.pred_rec AS kernel_class
FROM science_files f JOIN processing_runs r ON r.id = f.processing_run_id
WHERE f.id = %(id)s;

-- name: api_quicklooks_of
-- For each named file, the newest PNG quicklook of the same observation (instrument, start time and, where the
-- quicklook has one, descriptor) that the caller may see; a PNG quicklook is its own.
SELECT DISTINCT ON (f.file_name) f.file_name, q.file_name AS quicklook, q.bucket, q.s3_key
FROM science_files f
JOIN science_files q ON q.instrument_id = f.instrument_id AND q.timetag = f.timetag
                    AND q.product_type = 'quicklook' AND q.file_name LIKE '%%.png'
                    AND (q.descriptor IS NULL OR q.descriptor = f.descriptor)
WHERE f.file_name = ANY(%(file_names)s::text[])
  AND (%(see_all)s OR f.released OR f.instrument_id = ANY(%(own_instruments)s::text[]))
  AND (%(see_all)s OR q.released OR q.instrument_id = ANY(%(own_instruments)s::text[]))
ORDER BY f.file_name, (q.file_name = f.file_name) DESC, q.absolute_version DESC;
