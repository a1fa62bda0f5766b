-- name: last_delivery
-- When the instrument's last delivery (of any outcome) was handled, and what it was.
SELECT received_at, inbox_key, outcome FROM deliveries
WHERE instrument_id = %(instrument_id)s
ORDER BY received_at DESC
LIMIT 1;
