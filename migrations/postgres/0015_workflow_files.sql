-- Rule files a tenant publishes over the admin API, next to the ones under
-- `--workflows DIR`. `workflow_files` holds the live version of each file;
-- `workflow_file_versions` every publish and delete, in order, with who did
-- it (the origin, as directives record it), so a file's history survives
-- its deletion. Nodes reload published rules when the number of version
-- rows changes, so history rows are never deleted or rewritten.

CREATE TABLE workflow_files (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE workflow_file_versions (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    action     TEXT NOT NULL,
    body       TEXT,
    sha256     TEXT,
    actor      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
