-- Saved replies: a tenant's own snippets, which members insert into the
-- reply box beside the FAQ's answers. Titles are unique within a tenant,
-- so the picker names each one once.
CREATE TABLE website_chat_saved_replies (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    id         TEXT NOT NULL,
    title      TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, title)
);
