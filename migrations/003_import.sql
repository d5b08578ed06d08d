-- 003_import.sql - the import run remembers whether its final message went out, so a
-- worker that dies between finishing a run and sending it lets a redelivered page job
-- send it instead (at least once, never lost).
ALTER TABLE import_run ADD COLUMN final_sent_at timestamptz;
