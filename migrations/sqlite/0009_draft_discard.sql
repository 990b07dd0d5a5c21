-- An operator may discard a reply draft instead of sending it. SQLite cannot
-- change a CHECK constraint in place: the table is rebuilt with the new one.
CREATE TABLE website_chat_drafts_new (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    content         TEXT NOT NULL,
    source          TEXT NOT NULL,
    model           TEXT,
    usage           TEXT,
    latency_ms      BIGINT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'discarded')),
    generated_by    TEXT NOT NULL,
    reply_directive TEXT,
    created_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, generated_by)
);
INSERT INTO website_chat_drafts_new (tenant_id, id, conversation_id, content, source, model, usage,
    latency_ms, status, generated_by, reply_directive, created_at, decided_at)
SELECT tenant_id, id, conversation_id, content, source, model, usage,
    latency_ms, status, generated_by, reply_directive, created_at, decided_at
FROM website_chat_drafts;
DROP TABLE website_chat_drafts;
ALTER TABLE website_chat_drafts_new RENAME TO website_chat_drafts;
CREATE INDEX website_chat_drafts_by_conversation
    ON website_chat_drafts (tenant_id, conversation_id, id);
