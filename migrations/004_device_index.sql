-- 004_device_index.sql - drop a redundant unique index on duo_device.
--
-- UNIQUE (stage_id, duo_user_id) (index duo_device_stage_duo_user, 001) already makes
-- (stage_id, user_id, duo_user_id) unique; keeping both cost an extra index write per
-- imported device (a million of them in a large import).
ALTER TABLE duo_device DROP CONSTRAINT IF EXISTS duo_device_stage_id_user_id_duo_user_id_key;
