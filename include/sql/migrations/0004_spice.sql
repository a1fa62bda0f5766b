-- SPICE kernels in use: series (for supersession), SPICE kind, and which meta-kernel each product used.

ALTER TABLE spice_kernels ADD COLUMN IF NOT EXISTS series TEXT;
ALTER TABLE spice_kernels ADD COLUMN IF NOT EXISTS kind TEXT;
ALTER TABLE spice_kernels ADD COLUMN IF NOT EXISTS dag_run_id TEXT;
CREATE INDEX IF NOT EXISTS spice_kernels_series ON spice_kernels (series, version DESC);

ALTER TABLE meta_kernels ADD COLUMN IF NOT EXISTS dag_run_id TEXT;
ALTER TABLE processing_runs ADD COLUMN IF NOT EXISTS meta_kernel_id BIGINT REFERENCES meta_kernels (id);

CREATE INDEX IF NOT EXISTS science_files_timetag ON science_files (timetag);

-- Kernel deliveries are logged like every other delivery.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS kernel_id BIGINT REFERENCES spice_kernels (id);
