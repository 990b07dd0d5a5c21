-- The people of a tenant: admins and agents who sign in with a password
-- (argon2id, PHC string) or a one-time invite link. An email is unique
-- within its tenant; sign-in names the tenant when the email is in several.
CREATE TABLE members (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                TEXT NOT NULL,
    email             TEXT NOT NULL,
    name              TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash     TEXT,
    invite_hash       TEXT,
    invite_expires_at BIGINT,
    disabled_at       BIGINT,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX members_by_email ON members (tenant_id, email);
CREATE INDEX members_by_email_only ON members (email);
CREATE UNIQUE INDEX members_by_id ON members (id);

-- Browser sessions, kept server-side: the cookie holds `<id>.<secret>`, the
-- row only the secret's SHA-256. Signing out sets revoked_at; every request
-- reads the row, so a revocation holds on every node at once.
CREATE TABLE member_sessions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    member_id    TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX member_sessions_by_member ON member_sessions (tenant_id, member_id);

-- A member's personal API tokens are admin tokens that name their member
-- (and so act with the member's role); the tenant's own keep NULL and act
-- as admin. last_used_at is refreshed at most once a minute.
ALTER TABLE admin_tokens ADD COLUMN member_id TEXT;
ALTER TABLE admin_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX admin_tokens_by_member ON admin_tokens (tenant_id, member_id);
