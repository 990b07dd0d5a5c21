-- The destination a directive delivers to (its `args.destination`), in a
-- column of its own, so claims can keep a destination to its concurrency
-- cap and skip one whose circuit breaker is open without parsing every
-- candidate's arguments. No index reads it, so on PostgreSQL a claim stays
-- a heap-only update. Finished directives are never claimed again and keep
-- NULL.
ALTER TABLE directives ADD COLUMN destination TEXT;
UPDATE directives SET destination = json_extract(args, '$.destination')
    WHERE finished_at IS NULL AND json_type(args, '$.destination') = 'text';
