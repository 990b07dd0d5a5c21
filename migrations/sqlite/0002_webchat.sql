-- Website chat package (native mode): installations, sites, conversations,
-- messages and visitor identities. Every primary and unique key begins with
-- tenant_id; the one lookup without a tenant is a site's public widget key,
-- which is how a widget request finds its tenant.

CREATE TABLE website_chat_installations (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    package       TEXT NOT NULL,
    config        TEXT NOT NULL,
    sealed_ip_key TEXT NOT NULL,
    installed_at  BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, package)
);

CREATE TABLE website_chat_sites (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    id                 TEXT NOT NULL,
    public_key         TEXT NOT NULL,
    mode               TEXT NOT NULL,
    status             TEXT NOT NULL,
    allowed_origins    TEXT NOT NULL,
    settings           TEXT NOT NULL,
    key_id             INTEGER NOT NULL,
    sealed_secret      TEXT NOT NULL,
    prev_key_id        INTEGER,
    prev_sealed_secret TEXT,
    prev_valid_until   BIGINT,
    idle_timeout_ms    BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, public_key)
);
-- The widget's bootstrap finds a site by its public key before it knows the tenant.
CREATE UNIQUE INDEX website_chat_sites_by_key ON website_chat_sites (public_key);

CREATE TABLE website_chat_identities (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    site_id       TEXT NOT NULL,
    visitor_id    TEXT NOT NULL,
    email         TEXT,
    name          TEXT,
    ip_hash       TEXT,
    browser       TEXT,
    os            TEXT,
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, site_id, visitor_id)
);

CREATE TABLE website_chat_conversations (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    visitor_id      TEXT NOT NULL,
    status          TEXT NOT NULL,
    page_url        TEXT,
    started_at      BIGINT NOT NULL,
    last_message_at BIGINT NOT NULL,
    ended_at        BIGINT,
    ended_reason    TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX website_chat_conversations_by_visitor
    ON website_chat_conversations (tenant_id, site_id, visitor_id, started_at);
-- The idle sweep scans open conversations by last activity, across tenants.
CREATE INDEX website_chat_conversations_idle
    ON website_chat_conversations (last_message_at) WHERE status = 'open';
CREATE INDEX website_chat_conversations_recent
    ON website_chat_conversations (tenant_id, last_message_at);

CREATE TABLE website_chat_messages (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                TEXT NOT NULL,
    conversation_id   TEXT NOT NULL,
    site_id           TEXT NOT NULL,
    visitor_id        TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('visitor', 'assistant', 'agent')),
    content           TEXT NOT NULL,
    client_message_id TEXT,
    signal_id         TEXT,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, site_id, visitor_id, client_message_id)
);
CREATE INDEX website_chat_messages_by_conversation
    ON website_chat_messages (tenant_id, conversation_id, id);
