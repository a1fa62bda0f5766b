-- The science-files API (plugins/emm_sdc/api): its record format and the indexes of its typical queries.
--
-- Every row carries its EMM API record as JSON text (api_record, a stored generated column), so a query
-- only selects and joins them: the 25 fields in the real API's order and formats. emm_api_record() is the
-- one definition of that format: datetimes as Python's str() of an aware UTC datetime, floats always as
-- JSON floats (30000.0), LST as HH:MM:SS, '' for no mode/descriptor, file_root as the name without
-- _vVV-RR, the directory as s3://bucket/prefix. Its output depends only on its arguments (UTC is fixed,
-- no locale-dependent patterns), hence IMMUTABLE. A release flipping `released` rewrites the record.

CREATE OR REPLACE FUNCTION emm_json_float(x double precision) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE WHEN x = trunc(x) AND abs(x) < 1e15 THEN x::text || '.0' ELSE x::text END)::json
$$;

CREATE OR REPLACE FUNCTION emm_utc_text(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t = date_trunc('second', t)
                THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"+00:00"')
                ELSE to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US"+00:00"') END
$$;

CREATE OR REPLACE FUNCTION emm_api_record(
    id bigint, file_name text, bucket text, directory_path text, file_size bigint, mod_date timestamptz,
    instrument_id text, data_level text, timetag timestamptz, descriptor text, mode text, orbit_number integer,
    pred_rec text, version integer, revision integer, absolute_version integer, md5checksum text, released boolean,
    mars_ls double precision, spacecraft_lst double precision, subsolar_lat double precision,
    subsolar_lon double precision, spacecraft_lat double precision, spacecraft_lon double precision,
    spacecraft_alt double precision
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT json_build_object(
        'id', id,
        'file_name', file_name,
        'directory_path', 's3://' || bucket || '/' || directory_path,
        'file_size', file_size,
        'mod_date', emm_utc_text(mod_date),
        'instrument_id', instrument_id,
        'data_level', data_level,
        'timetag', emm_utc_text(timetag),
        'descriptor', coalesce(descriptor, ''),
        'mode', coalesce(mode, ''),
        'orbit_number', orbit_number,
        'pred_rec', pred_rec,
        'version', version,
        'revision', revision,
        -- valid names have dots only in their extension: cut the 7 characters _vVV-RR before it
        'file_root', left(file_name, strpos(file_name, '.') - 8) || substr(file_name, strpos(file_name, '.')),
        'absolute_version', absolute_version,
        'md5checksum', rtrim(md5checksum),
        'released', released,
        'mars_ls', emm_json_float(mars_ls),
        'spacecraft_lst', to_char(make_interval(secs => round(spacecraft_lst * 3600)::integer % 86400),
                                  'HH24:MI:SS'),
        'subsolar_lat', emm_json_float(subsolar_lat),
        'subsolar_lon', emm_json_float(subsolar_lon),
        'spacecraft_lat', emm_json_float(spacecraft_lat),
        'spacecraft_lon', emm_json_float(spacecraft_lon),
        'spacecraft_alt', emm_json_float(spacecraft_alt)
    )::text
$$;

ALTER TABLE science_files ADD COLUMN IF NOT EXISTS api_record text GENERATED ALWAYS AS (emm_api_record(
    id, file_name, bucket, directory_path, file_size, mod_date, instrument_id, data_level, timetag, descriptor, mode,
    orbit_number, pred_rec, version, revision, absolute_version, md5checksum, released, mars_ls, spacecraft_lst,
    subsolar_lat, subsolar_lon, spacecraft_lat, spacecraft_lon, spacecraft_alt)) STORED;

CREATE INDEX IF NOT EXISTS science_files_api_time ON science_files (instrument_id, data_level, timetag DESC);
CREATE INDEX IF NOT EXISTS science_files_api_timetag ON science_files (timetag DESC, id DESC);
CREATE INDEX IF NOT EXISTS science_files_api_ls ON science_files (mars_ls);
CREATE INDEX IF NOT EXISTS science_files_api_orbit ON science_files (orbit_number);
CREATE INDEX IF NOT EXISTS science_files_api_root_version ON science_files (file_root, absolute_version DESC);
