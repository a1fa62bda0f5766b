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
