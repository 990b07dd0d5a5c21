-- Engine core: tenants, admin tokens, destinations, signals, directives (the queue), attempts.
-- Every tenant-owned table's primary and unique keys begin with tenant_id, so the
-- schema can be distributed by tenant later without a rewrite.
-- Times are BIGINT milliseconds since the epoch; ids are their prefixed string form.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (tenant_id, id)
);
-- Authentication finds a token by its public id before it knows the tenant.
CREATE UNIQUE INDEX admin_tokens_by_id ON admin_tokens (id);

CREATE TABLE destinations (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    sealed_config TEXT NOT NULL,
    public_config TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE signals (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    caused_by   TEXT,
    occurred_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX signals_by_subject ON signals (tenant_id, subject, recorded_at);
CREATE INDEX signals_by_type ON signals (tenant_id, type, recorded_at);

CREATE TABLE directives (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    args            TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL,
    subject         TEXT,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    retry_policy    TEXT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    locked_by       TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    result          TEXT,
    origin          TEXT NOT NULL,
    rule_id         TEXT,
    caused_by       TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, dedupe_key)
);
-- The queue. A claim sets next_attempt_at to the lease's end, so one index
-- serves both claims (due pending rows) and the reaper (running rows whose
-- lease ran out). Every index here is rewritten at each claim and completion,
-- so there are as few as the timeline and the queue need: listings walk the
-- primary key, whose UUIDv7 ids are in creation order.
CREATE INDEX directives_queue ON directives (next_attempt_at) WHERE status IN ('pending', 'running');
CREATE INDEX directives_by_subject ON directives (tenant_id, subject, created_at);
CREATE INDEX directives_by_cause ON directives (tenant_id, caused_by) WHERE caused_by IS NOT NULL;

-- Why a rule did or did not act on a signal: the "rule X matched signal Y" /
-- "rule Z skipped: condition false" lines of the audit timeline.
CREATE TABLE rule_evaluations (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    signal_id    TEXT NOT NULL,
    subject      TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    file_hash    TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    evaluated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX rule_evaluations_by_subject ON rule_evaluations (tenant_id, subject, evaluated_at);

-- The last tick each schedule rule fired for each tenant: the compare-and-set
-- that makes a tick fire once across nodes, and what catch-up starts from.
CREATE TABLE cron_ticks (
    tenant_id TEXT NOT NULL,
    rule_id   TEXT NOT NULL,
    last_tick BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, rule_id)
);

CREATE TABLE directive_attempts (
    tenant_id    TEXT NOT NULL,
    directive_id TEXT NOT NULL,
    number       INTEGER NOT NULL,
    worker       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    error        TEXT,
    http_status  INTEGER,
    external_ref TEXT,
    PRIMARY KEY (tenant_id, directive_id, number)
);

-- The queue table is updated in place at every claim and completion: leave room
-- on each page for HOT updates and vacuum it eagerly.
ALTER TABLE directives SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
