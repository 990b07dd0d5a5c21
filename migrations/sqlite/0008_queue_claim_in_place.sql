-- A claim no longer moves its directive in the queue: it writes the lease
-- (status 'running', locked_by, lease_until, attempts) into columns no index
-- reads, so on PostgreSQL a claim is a heap-only update that adds no index
-- entry (the claim used to add one to each of the table's four indexes, a
-- quarter of the engine's index writes). The queue indexes therefore select
-- unfinished rows by finished_at, which only a directive's end sets, instead
-- of by status, which every claim changes; running rows stay at their due
-- time in the index, and the reaper finds expired ones by lease_until.

-- Every finished directive already has finished_at; this makes sure of it
-- for rows of any older version, as the new predicate relies on it.
UPDATE directives SET finished_at = updated_at
    WHERE status NOT IN ('pending', 'running') AND finished_at IS NULL;
UPDATE directives SET finished_at = NULL
    WHERE status IN ('pending', 'running') AND finished_at IS NOT NULL;

DROP INDEX directives_queue;
DROP INDEX directives_edge_queue;
CREATE INDEX directives_queue ON directives (next_attempt_at)
    WHERE finished_at IS NULL AND runner = 'platform';
CREATE INDEX directives_edge_queue ON directives (tenant_id, next_attempt_at)
    WHERE finished_at IS NULL AND runner = 'edge';
