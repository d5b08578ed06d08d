-- 011_import_pace_per_run.sql - paced import pages never hold a worker.
--
-- A page whose Admin API slot is further away than the shortest retry delay is not held
-- by a worker: it is deferred through the broker's delay queues, and the slot it
-- reserved is kept on the page row (slot_at) until the page comes back and takes it
-- (the next page_begin clears it). A run may also have a page budget of its own (an
-- import.auto with pages_per_min, e.g. a tenant with a smaller Duo limit): its pace
-- never recovers above max_rate_per_min (NULL: the workers' IMPORT_PAGES_PER_MIN).
ALTER TABLE import_page ADD COLUMN slot_at timestamptz;
ALTER TABLE import_pace ADD COLUMN max_rate_per_min double precision
    CHECK (max_rate_per_min IS NULL OR max_rate_per_min > 0);
