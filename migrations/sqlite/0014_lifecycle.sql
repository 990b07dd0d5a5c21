-- Settings that change after they are made.
--
-- A site's version orders concurrent edits: every change (register,
-- update, rotate, disable, enable) bumps it, and an edit that names the
-- version it read is refused when another change came first.
ALTER TABLE website_chat_sites ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- The member a conversation is assigned to (`mem_…`), NULL when nobody is.
-- The inbox filters by it, within a tenant.
ALTER TABLE website_chat_conversations ADD COLUMN assignee TEXT;
CREATE INDEX website_chat_conversations_by_assignee
    ON website_chat_conversations (tenant_id, assignee, last_message_minute);
