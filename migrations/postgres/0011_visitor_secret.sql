-- A returning visitor proves who they are with a secret issued at their
-- first bootstrap; only its SHA-256 is kept. NULL marks a visitor from
-- before this migration: their next bootstrap adopts the id and sets it.
ALTER TABLE website_chat_identities ADD COLUMN secret_hash TEXT;

-- Proof-of-work challenges already spent, kept until they expire, so that
-- one solution mints one visitor on any node.
CREATE TABLE website_chat_challenges (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    challenge_id TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, challenge_id)
);
CREATE INDEX website_chat_challenges_by_expiry
    ON website_chat_challenges (tenant_id, expires_at);
