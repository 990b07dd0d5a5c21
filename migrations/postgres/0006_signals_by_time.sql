-- Replay pages through a tenant's signals in recording order, with or
-- without a type filter. With no index in that order each page sorted every
-- signal of the tenant (quadratic over a whole replay); this one lets a page
-- start at its cursor. It replaces the index by type, which only that
-- filter used: a filtered replay now reads the tenant's signals in order and
-- skips the other types, so every signal written still costs the same
-- number of index entries.
CREATE INDEX IF NOT EXISTS signals_by_time ON signals (tenant_id, recorded_at, id);
DROP INDEX IF EXISTS signals_by_type;
