-- Every visitor message moves its conversation's last_message_at. The
-- indexes now key on the minute of the last message, which a move changes
-- at most once a minute, so most moves rewrite no index entry (on
-- PostgreSQL they become heap-only updates). Queries order by the minute,
-- then by the exact time, which is the same order.
ALTER TABLE website_chat_conversations
    ADD COLUMN last_message_minute BIGINT GENERATED ALWAYS AS (last_message_at - last_message_at % 60000) VIRTUAL;
DROP INDEX website_chat_conversations_idle;
DROP INDEX website_chat_conversations_recent;
CREATE INDEX website_chat_conversations_idle
    ON website_chat_conversations (last_message_minute) WHERE status = 'open';
CREATE INDEX website_chat_conversations_recent
    ON website_chat_conversations (tenant_id, last_message_minute);
