-- When each member last opened each conversation: the inbox marks a
-- conversation unread for a member when the visitor wrote after that.
-- Written only when a member opens a conversation with something new.
-- Keyed by conversation first, so pruning a conversation finds its marks.
CREATE TABLE website_chat_reads (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    member_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    read_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, member_id)
);
