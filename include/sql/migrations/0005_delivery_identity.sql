-- Delivery identity: one row per delivery (an exact upload of a file and its sidecar to the inbox),
-- so retries and concurrent runs log each delivery once; one catalog identity per file name, whatever
-- the case of its time separator (the naming standard accepts both 'T' and 't'). Idempotent.

ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS delivery_id TEXT;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS inbox_version TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_delivery_id ON deliveries (delivery_id) WHERE delivery_id IS NOT NULL;

ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS delivery_id TEXT;

-- Valid EMM names are lower case except the time separator (and EMUS' EMUnnn modes, whose lower-case
-- spelling is invalid), so lower(file_name) is the canonical identity.
CREATE UNIQUE INDEX IF NOT EXISTS science_files_identity ON science_files (lower(file_name));
