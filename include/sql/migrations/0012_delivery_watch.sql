-- The delivery watch (emm_sdc/alerts.py) asks, every hour and per instrument, when the last delivery was
-- handled: an index answers that without scanning every delivery of the mission. Idempotent.

CREATE INDEX IF NOT EXISTS deliveries_instrument_received ON deliveries (instrument_id, received_at DESC);
