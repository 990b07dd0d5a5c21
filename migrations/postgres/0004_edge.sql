-- Edge Connectors: processes a tenant runs next to its own mail server
-- (Proton Mail Bridge) that claim edge-lane tasks over HTTP. Each holds a
-- token (`fpe_<id>.<secret>`) whose secret is stored only as a SHA-256 hash;
-- last_seen_at is written by every heartbeat and read into the last-seen gauge.

CREATE TABLE edge_connectors (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT,
    version      TEXT,
    revoked_at   BIGINT,
    PRIMARY KEY (tenant_id, id)
);
-- Authentication finds a connector by its public id before it knows the tenant.
CREATE UNIQUE INDEX edge_connectors_by_id ON edge_connectors (id);

-- The queue's lanes. `platform` directives are claimed by the platform's
-- workers; `edge` ones (email.send) only by an Edge Connector of their
-- tenant. Each lane has its own partial index, and every queue query repeats
-- its lane's predicate word for word (SQLite uses a partial index only then):
-- the platform claim walks only platform rows, so edge tasks waiting for a
-- connector never slow it down; an edge claim walks one tenant's edge rows.
ALTER TABLE directives ADD COLUMN runner TEXT NOT NULL DEFAULT 'platform';
DROP INDEX directives_queue;
CREATE INDEX directives_queue ON directives (next_attempt_at)
    WHERE status IN ('pending', 'running') AND runner = 'platform';
CREATE INDEX directives_edge_queue ON directives (tenant_id, next_attempt_at)
    WHERE status IN ('pending', 'running') AND runner = 'edge';

-- email.send tasks were parked ten years ahead until a connector existed:
-- move them to the edge lane and make the parked ones due, oldest first.
UPDATE directives SET runner = 'edge' WHERE kind = 'email.send';
UPDATE directives SET next_attempt_at = created_at
    WHERE kind = 'email.send' AND status = 'pending' AND next_attempt_at > created_at + 31536000000;
