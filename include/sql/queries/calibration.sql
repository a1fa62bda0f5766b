-- Named queries of calibration data (core/calibration.py). Each block starts with "-- name: <name>".
-- Parameters use the DB-API pyformat style %(name)s; values are never spliced in.

-- name: lock_calibration_versions
-- Serialises version allocation of one instrument's calibration files until the transaction ends
-- (released by commit, rollback, or the session ending with a dead worker).
SELECT pg_advisory_xact_lock(hashtextextended('emm_sdc.calibration:' || %(instrument_id)s, 0));

-- name: latest_calibration_version
SELECT * FROM calibration_files
WHERE instrument_id = %(instrument_id)s AND file_name = %(file_name)s
ORDER BY version DESC
LIMIT 1;

-- name: latest_calibration_set_version
SELECT max(set_version) AS set_version FROM calibration_files WHERE instrument_id = %(instrument_id)s;

-- name: insert_calibration_file
INSERT INTO calibration_files (instrument_id, file_name, version, set_version, md5checksum, file_size, bucket,
                               s3_key, delivery_id, dag_id, dag_run_id)
VALUES (%(instrument_id)s, %(file_name)s, %(version)s, %(set_version)s, %(md5checksum)s, %(file_size)s,
        %(bucket)s, %(s3_key)s, %(delivery_id)s, %(dag_id)s, %(dag_run_id)s)
RETURNING *;

-- name: insert_calibration_delivery
-- A delivery of a calibration file; one row per delivery, as insert_delivery.
INSERT INTO deliveries (
    instrument_id, inbox_key, md5checksum, file_size, outcome, calibration_id, dag_id, dag_run_id,
    delivery_id, inbox_version
) VALUES (
    %(instrument_id)s, %(inbox_key)s, %(md5checksum)s, %(file_size)s, %(outcome)s, %(calibration_id)s,
    %(dag_id)s, %(dag_run_id)s, %(delivery_id)s, %(inbox_version)s
)
ON CONFLICT (delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: calibration_set_files
-- Calibration set N of an instrument: the latest version of every file name with set_version <= N.
SELECT DISTINCT ON (file_name) * FROM calibration_files
WHERE instrument_id = %(instrument_id)s AND set_version <= %(set_version)s
ORDER BY file_name, set_version DESC;

-- name: calibration_files_of
-- Every version of every calibration file of an instrument, in the order they were archived.
SELECT * FROM calibration_files WHERE instrument_id = %(instrument_id)s ORDER BY set_version;

-- name: calibration_archived_in_run
SELECT file_name, version, set_version FROM calibration_files
WHERE dag_id = %(dag_id)s AND dag_run_id = %(dag_run_id)s ORDER BY set_version;
