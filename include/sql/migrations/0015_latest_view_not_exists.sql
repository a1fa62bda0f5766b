-- The latest version of every product (file_root) as "no newer version exists" instead of DISTINCT ON over
-- the whole table. Same rows (highest absolute_version, then highest id), but PostgreSQL can push a query's own
-- conditions (instrument, level, orbit, time) into it and answer from the (file_root, absolute_version) index:
-- at a Martian year of catalog (docs/scaling.md) the processing plan's and the SPICE refresh's lookups went from
-- 60-100 ms, growing with the table, to under 1 ms. Idempotent: CREATE OR REPLACE keeps the columns in order.
CREATE OR REPLACE VIEW science_files_latest AS
SELECT *
FROM science_files f
WHERE NOT EXISTS (
    SELECT 1
    FROM science_files n
    WHERE n.file_root = f.file_root
      AND (n.absolute_version > f.absolute_version
           OR (n.absolute_version = f.absolute_version AND n.id > f.id))
);
