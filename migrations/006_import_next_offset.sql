-- 006_import_next_offset.sql - import pages follow Duo's next_offset.
--
-- Duo treats a page's limit as a request: it may answer fewer users, and its
-- metadata.next_offset says where the next page starts. A page that ends short of its
-- range adds a page for the rest (parent_offset names the page that found the gap, so a
-- replay of that page can publish it again); pages are identified by their offset,
-- which stays unique because a remainder starts strictly inside its parent's range.
-- total_at_end is Duo's total when the run finished, reported against what was seen.

ALTER TABLE import_page ADD COLUMN parent_offset bigint;
CREATE UNIQUE INDEX import_page_run_offset ON import_page (run_id, "offset");
ALTER TABLE import_run ADD COLUMN total_at_end bigint;
