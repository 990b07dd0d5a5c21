-- Every visitor message moves its conversation's last_message_at. While that
-- column was a key of two indexes, each move was a full new row version with
-- four new index entries, and the dead versions piled up in the few pages
-- of busy conversations (the ingest benchmark put the moves at a quarter of
-- PostgreSQL's time). The indexes now key on the minute of the last message,
-- which a move changes at most once a minute: the other moves change no
-- indexed value and are heap-only (HOT) updates, which need room on the
-- row's own page, hence the fill factor. Queries order by the minute, then
-- by the exact time, which is the same order.
ALTER TABLE website_chat_conversations SET (fillfactor = 70);
ALTER TABLE website_chat_conversations
    ADD COLUMN last_message_minute BIGINT GENERATED ALWAYS AS (last_message_at - last_message_at % 60000) STORED;
DROP INDEX website_chat_conversations_idle;
DROP INDEX website_chat_conversations_recent;
CREATE INDEX website_chat_conversations_idle
    ON website_chat_conversations (last_message_minute) WHERE status = 'open';
CREATE INDEX website_chat_conversations_recent
    ON website_chat_conversations (tenant_id, last_message_minute);
