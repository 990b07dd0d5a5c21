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
