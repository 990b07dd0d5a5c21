-- The tables every visitor message writes to keep no foreign key to
-- tenants. A key check is a trigger per inserted row: a query, and a
-- FOR KEY SHARE lock on the one tenant row, which concurrent batches share
-- through multixacts. Tenant ids come only from server-side records, and
-- tenants are never deleted, so the key guarded against nothing that can
-- happen; the profile of the ingest benchmark put the checks at about a
-- twentieth of PostgreSQL's time.
ALTER TABLE signals DROP CONSTRAINT signals_tenant_id_fkey;
ALTER TABLE directives DROP CONSTRAINT directives_tenant_id_fkey;
ALTER TABLE website_chat_conversations DROP CONSTRAINT website_chat_conversations_tenant_id_fkey;
ALTER TABLE website_chat_messages DROP CONSTRAINT website_chat_messages_tenant_id_fkey;
