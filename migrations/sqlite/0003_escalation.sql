-- Escalation and replies: the Mattermost thread of each conversation (REST
-- mode posts follow-ups as replies to the first post) and reply drafts
-- (LLM or FAQ) waiting for an operator's approval.

CREATE TABLE website_chat_threads (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    conversation_id TEXT NOT NULL,
    destination     TEXT NOT NULL,
    root_id         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, destination)
);

CREATE TABLE website_chat_drafts (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    content         TEXT NOT NULL,
    source          TEXT NOT NULL,
    model           TEXT,
    usage           TEXT,
    latency_ms      BIGINT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved')),
    generated_by    TEXT NOT NULL,
    reply_directive TEXT,
    created_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, generated_by)
);
CREATE INDEX website_chat_drafts_by_conversation
    ON website_chat_drafts (tenant_id, conversation_id, id);
