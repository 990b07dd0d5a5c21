-- An operator may discard a reply draft instead of sending it.
ALTER TABLE website_chat_drafts DROP CONSTRAINT website_chat_drafts_status_check;
ALTER TABLE website_chat_drafts ADD CONSTRAINT website_chat_drafts_status_check
    CHECK (status IN ('pending', 'approved', 'discarded'));
