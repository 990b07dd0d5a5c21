-- Installations of every package in one table (Phase 2A): which package a
-- tenant has, at which version, configured how, and whether it is installed
-- now. Uninstalling keeps the row (status 'uninstalled') and every row of
-- the package's own tables, so reinstalling restores the tenant's data.
-- Today's website chat installations move here; the one website chat secret
-- they carried (the key that hashes visitor IPs) moves to a table of the
-- package's own.

CREATE TABLE installations (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    package      TEXT NOT NULL,
    version      TEXT NOT NULL,
    config       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('installed', 'uninstalled')),
    installed_at BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, package)
);

INSERT INTO installations (tenant_id, package, version, config, status, installed_at, updated_at)
SELECT tenant_id, package, '1.0.0', config, 'installed', installed_at, updated_at
FROM website_chat_installations;

CREATE TABLE website_chat_ip_keys (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    sealed_ip_key TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id)
);

INSERT INTO website_chat_ip_keys (tenant_id, sealed_ip_key, created_at)
SELECT tenant_id, sealed_ip_key, installed_at
FROM website_chat_installations
WHERE package = 'website_chat';

DROP TABLE website_chat_installations;
