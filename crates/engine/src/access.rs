//! Who may act for a tenant, and as what: members, their sign-in and
//! sessions, personal API tokens, and the tenant's own token.
//!
//! Every request resolves its credential against the database (no cache),
//! so a revoked token, a signed-out session or a disabled member is refused
//! on every node at once. Admin changes are recorded as signals on the
//! tenant's own subject, `tenant:<id>`, which makes its audit log.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use fleetprompt_core::member::{Role, check_name, normalize_email};
use fleetprompt_core::secret::{
    INVITE_PREFIX, IssuedToken, SESSION_PREFIX, csrf_token, generate_password, hash_password,
    issue_credential, parse_admin_token, parse_credential, verify_password, verify_secret,
};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{MemberId, Origin, TenantId, TokenId};
use fleetprompt_store::member::{self, MemberPatch, MemberRow, NewMember};
use fleetprompt_store::tenant::{self, Tenant, TokenRow};
use serde_json::json;

use crate::{Engine, EngineError};

/// How long sessions live, set by `serve --session-idle-secs` and
/// `--session-max-age-secs`.
#[derive(Debug, Clone, Copy)]
pub struct AccessConfig {
    /// A session unused this long is expired.
    pub session_idle: Duration,
    /// A session older than this is expired, however busy.
    pub session_max_age: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(12 * 3600),
            session_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How long an invite link stays valid.
pub const INVITE_TTL_MS: Millis = 7 * 24 * 3600 * 1000;

/// Last-use times (of tokens, sessions) are written at most this often, so
/// a busy client does not turn every read into a write.
const TOUCH_EVERY_MS: Millis = 60_000;

/// The window over which failed sign-ins are counted.
pub const THROTTLE_WINDOW_MS: Millis = 15 * 60 * 1000;
/// Failed sign-ins per account within the window before it is refused.
pub const FAILURES_PER_ACCOUNT: usize = 5;
/// Failed sign-ins per client address within the window before it is
/// refused (higher: several people may share an address).
pub const FAILURES_PER_ADDRESS: usize = 20;

/// What authenticated a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An admin token: the tenant's own, or a member's personal one.
    Token(TokenId),
    /// A browser session, by its public id.
    Session(String),
}

/// Who is calling, resolved from server-side records only.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant acted for.
    pub tenant: Tenant,
    /// What the caller may do.
    pub role: Role,
    /// The member, unless the tenant's own token is used.
    pub member: Option<MemberRow>,
    /// What authenticated the call.
    pub credential: Credential,
}

impl Caller {
    /// Who is acting, as directives and signals record it.
    pub fn origin(&self) -> Origin {
        let token_id = match &self.credential {
            Credential::Token(id) => Some(*id),
            Credential::Session(_) => None,
        };
        match (&self.member, token_id) {
            (Some(m), token_id) => Origin::Member {
                member_id: m.id,
                name: m.name.clone(),
                token_id,
            },
            (None, Some(token_id)) => Origin::Api { token_id },
            // A session always has a member; this arm is unreachable but
            // kept total rather than panicking.
            (None, None) => Origin::System {
                component: "session".into(),
            },
        }
    }
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many failures for the account or the address; retry after the
    /// given seconds.
    #[error("too many failed sign-ins; retry in {0} s")]
    Throttled(u64),
    /// The email, password or invite is wrong, or the member is disabled
    /// (alike, so a caller learns nothing from which).
    #[error("the email or password is wrong")]
    BadCredentials,
    /// The email is a member of several tenants: the sign-in must name one.
    #[error("this email is a member of several tenants; name the tenant")]
    TenantRequired,
    /// Anything else.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<fleetprompt_store::StoreError> for SignInError {
    fn from(e: fleetprompt_store::StoreError) -> Self {
        Self::Engine(e.into())
    }
}

/// Failed sign-ins per key (an account or an address) over the last
/// [`THROTTLE_WINDOW_MS`], in this process.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Millis>>>,
}

/// Most keys kept; past it, keys with no failure in the window are dropped.
const THROTTLE_KEYS_MAX: usize = 100_000;

impl Throttle {
    /// Seconds to wait if any key has reached its limit.
    fn check(&self, keys: &[(&str, usize)], now: Millis) -> Option<u64> {
        let map = self.failures.lock().expect("throttle lock");
        keys.iter()
            .filter_map(|(k, limit)| {
                let q = map.get(*k)?;
                let recent: Vec<Millis> = q
                    .iter()
                    .copied()
                    .filter(|t| *t > now - THROTTLE_WINDOW_MS)
                    .collect();
                (recent.len() >= *limit).then(|| {
                    // Free again when the oldest failure that counts leaves
                    // the window.
                    let oldest = recent[recent.len() - limit];
                    ((oldest + THROTTLE_WINDOW_MS - now).max(1000) as u64).div_ceil(1000)
                })
            })
            .max()
    }

    fn fail(&self, keys: &[(&str, usize)], now: Millis) {
        let mut map = self.failures.lock().expect("throttle lock");
        if map.len() >= THROTTLE_KEYS_MAX {
            map.retain(|_, q| q.back().is_some_and(|t| *t > now - THROTTLE_WINDOW_MS));
        }
        for (k, limit) in keys {
            let q = map.entry((*k).to_owned()).or_default();
            q.push_back(now);
            while q.len() > *limit || q.front().is_some_and(|t| *t <= now - THROTTLE_WINDOW_MS) {
                q.pop_front();
            }
        }
    }

    fn clear(&self, key: &str) {
        self.failures.lock().expect("throttle lock").remove(key);
    }
}

/// A new session: its cookie value and CSRF token, given to the client once.
#[derive(Debug)]
pub struct SignedIn {
    /// The cookie value, `fps_<id>.<secret>`.
    pub cookie: String,
    /// The token unsafe requests carry in `X-CSRF-Token`.
    pub csrf_token: String,
    /// The session's public id.
    pub session_id: String,
    /// Who signed in.
    pub member: MemberRow,
    /// Their tenant.
    pub tenant: Tenant,
}

/// Argon2id is deliberately slow: off the async workers.
async fn hash_blocking(password: String) -> Result<String, EngineError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| EngineError::InvalidState(format!("password hashing failed: {e}")))
}

async fn verify_blocking(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
        .await
        .unwrap_or(false)
}

/// The shortest password a member may choose.
pub const PASSWORD_MIN: usize = 12;

fn check_password(p: &str) -> Result<(), EngineError> {
    if p.chars().count() < PASSWORD_MIN || p.len() > 1024 {
        return Err(fleetprompt_core::signal::ValidationError::Invalid {
            field: "password",
            reason: format!("must be {PASSWORD_MIN} to 1024 characters"),
        }
        .into());
    }
    Ok(())
}

/// What a new member is given to sign in with, shown once.
#[derive(Debug)]
pub enum FirstSecret {
    /// A one-time password (to be changed by a reset later).
    Password(String),
    /// An invite token (`fpi_…`): redeemed with a password of their own.
    Invite(String),
}

/// Adds a member with a generated password, or an invite when `invite`.
pub async fn add_member(
    engine: &Engine,
    tenant: TenantId,
    email: &str,
    name: Option<&str>,
    role: Role,
    invite: bool,
    actor: &Origin,
) -> Result<(MemberRow, FirstSecret), EngineError> {
    let email = normalize_email(email)?;
    let name = check_name(name.unwrap_or_else(|| email.split('@').next().unwrap_or(&email)))?;
    let (secret, hash, issued) = if invite {
        let c = issue_credential(INVITE_PREFIX);
        (FirstSecret::Invite(c.token.clone()), None, Some(c))
    } else {
        let p = generate_password();
        let h = hash_blocking(p.clone()).await?;
        (FirstSecret::Password(p), Some(h), None)
    };
    let mut tx = engine.db().begin().await?;
    let row = member::create(
        &mut tx,
        tenant,
        &NewMember {
            email: &email,
            name: &name,
            role,
            password_hash: hash.as_deref(),
            invite: issued.as_ref().map(|c| {
                (
                    c.id.as_str(),
                    c.secret_hash.as_str(),
                    now_ms() + INVITE_TTL_MS,
                )
            }),
        },
    )
    .await?;
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        "member.added",
        json!({ "member_id": row.id, "name": row.name, "role": role, "invited": invite }),
        format!("member_added:{}", row.id),
        actor,
    )
    .await?;
    tx.commit().await?;
    Ok((row, secret))
}

/// A tenant's members.
pub async fn list_members(
    engine: &Engine,
    tenant: TenantId,
) -> Result<Vec<MemberRow>, EngineError> {
    Ok(member::list(engine.db(), tenant).await?)
}

/// A member found by id (`mem_…`) or email.
pub async fn find_member(
    engine: &Engine,
    tenant: TenantId,
    key: &str,
) -> Result<MemberRow, EngineError> {
    let found = match key.parse::<MemberId>() {
        Ok(id) => member::get(engine.db(), tenant, id).await,
        Err(_) => member::get_by_email(engine.db(), tenant, &normalize_email(key)?).await,
    };
    found.map_err(|e| match e {
        fleetprompt_store::StoreError::NotFound { .. } => EngineError::NotFound("member".into()),
        other => other.into(),
    })
}

/// Changes a member's name, role or disabled state. Disabling revokes the
/// member's sessions; their tokens stop working while they are disabled.
pub async fn update_member(
    engine: &Engine,
    tenant: TenantId,
    id: MemberId,
    mut patch: MemberPatch,
    actor: &Origin,
) -> Result<MemberRow, EngineError> {
    if let Some(n) = &patch.name {
        patch.name = Some(check_name(n)?);
    }
    let before = find_member(engine, tenant, &id.to_string()).await?;
    let mut tx = engine.db().begin().await?;
    let now = now_ms();
    member::update(&mut tx, tenant, id, &patch, now).await?;
    let kind = match patch.disabled {
        Some(true) if before.disabled_at.is_none() => "member.disabled",
        Some(false) if before.disabled_at.is_some() => "member.enabled",
        _ => "member.updated",
    };
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        kind,
        json!({
            "member_id": id,
            "name": patch.name,
            "role": patch.role,
            "disabled": patch.disabled,
        }),
        format!("member_updated:{id}:{}", crate::audit::once()),
        actor,
    )
    .await?;
    tx.commit().await?;
    find_member(engine, tenant, &id.to_string()).await
}

/// Sets a new one-time password for a member and signs them out
/// everywhere; returns the password, shown once.
pub async fn reset_password(
    engine: &Engine,
    tenant: TenantId,
    id: MemberId,
    actor: &Origin,
) -> Result<String, EngineError> {
    find_member(engine, tenant, &id.to_string()).await?;
    let p = generate_password();
    let h = hash_blocking(p.clone()).await?;
    let mut tx = engine.db().begin().await?;
    member::set_password(&mut tx, tenant, id, &h, now_ms()).await?;
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        "member.password_reset",
        json!({ "member_id": id }),
        format!("member_password_reset:{id}:{}", crate::audit::once()),
        actor,
    )
    .await?;
    tx.commit().await?;
    Ok(p)
}

/// A new invite for a member (replacing any earlier one); returns its token.
pub async fn reinvite(
    engine: &Engine,
    tenant: TenantId,
    id: MemberId,
) -> Result<String, EngineError> {
    let c = issue_credential(INVITE_PREFIX);
    let mut tx = engine.db().begin().await?;
    member::set_invite(
        &mut tx,
        tenant,
        id,
        (&c.id, &c.secret_hash, now_ms() + INVITE_TTL_MS),
    )
    .await?;
    tx.commit().await?;
    Ok(c.token)
}

/// Signs a member in with email and password. `tenant` (a slug) is needed
/// only when the email is a member of several tenants. Failures are counted
/// per account and per client address; past the limits, the answer is
/// [`SignInError::Throttled`] before any password is checked.
pub async fn sign_in(
    engine: &Engine,
    tenant: Option<&str>,
    email: &str,
    password: &str,
    client: IpAddr,
) -> Result<SignedIn, SignInError> {
    let now = now_ms();
    let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    // By email alone, whatever tenant is named: naming another tenant
    // does not buy more guesses.
    let account = format!("account:{email}");
    let address = format!("address:{client}");
    let keys = [
        (account.as_str(), FAILURES_PER_ACCOUNT),
        (address.as_str(), FAILURES_PER_ADDRESS),
    ];
    if let Some(secs) = engine.throttle().check(&keys, now) {
        return Err(SignInError::Throttled(secs));
    }
    let mut found = member::credentials(engine.db(), tenant, &email).await?;
    if found.len() > 1 {
        return Err(SignInError::TenantRequired);
    }
    let cred = found.pop();
    let stored = cred.as_ref().and_then(|c| c.password_hash.clone());
    let ok = verify_blocking(password.to_owned(), stored).await;
    let cred = match cred {
        Some(c) if ok && c.member.disabled_at.is_none() => c,
        _ => {
            engine.throttle().fail(&keys, now);
            return Err(SignInError::BadCredentials);
        }
    };
    engine.throttle().clear(&account);
    Ok(start_session(engine, cred.tenant, cred.member).await?)
}

/// Redeems an invite: sets the member's password and signs them in. A used,
/// expired or wrong invite is [`SignInError::BadCredentials`]; failures
/// count against the client address.
pub async fn redeem_invite(
    engine: &Engine,
    invite: &str,
    password: &str,
    client: IpAddr,
) -> Result<SignedIn, SignInError> {
    let now = now_ms();
    let address = format!("address:{client}");
    let keys = [(address.as_str(), FAILURES_PER_ADDRESS)];
    if let Some(secs) = engine.throttle().check(&keys, now) {
        return Err(SignInError::Throttled(secs));
    }
    check_password(password)?;
    let found = match parse_credential(INVITE_PREFIX, invite.trim()) {
        Some((id, secret)) => member::find_invite(engine.db(), id)
            .await?
            .filter(|(_, hash, expires)| *expires > now && verify_secret(secret, hash)),
        None => None,
    };
    let Some((m, _, _)) = found else {
        engine.throttle().fail(&keys, now);
        return Err(SignInError::BadCredentials);
    };
    let h = hash_blocking(password.to_owned()).await?;
    let mut tx = engine.db().begin().await?;
    member::set_password(&mut tx, m.tenant_id, m.id, &h, now).await?;
    tx.commit().await?;
    let tenant = tenant::find_by_id(engine.db(), m.tenant_id).await?;
    Ok(start_session(engine, tenant, m).await?)
}

async fn start_session(
    engine: &Engine,
    tenant: Tenant,
    member: MemberRow,
) -> Result<SignedIn, EngineError> {
    let c = issue_credential(SESSION_PREFIX);
    let mut tx = engine.db().begin().await?;
    member::create_session(
        &mut tx,
        tenant.id,
        member.id,
        &c.id,
        &c.secret_hash,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(SignedIn {
        csrf_token: csrf_token(engine.key(), &c.id),
        cookie: c.token,
        session_id: c.id,
        member,
        tenant,
    })
}

/// The CSRF token of a session.
pub fn session_csrf(engine: &Engine, session_id: &str) -> String {
    csrf_token(engine.key(), session_id)
}

/// Records a last use, best effort: a read must not fail because the
/// database takes no writes just now (read-only, full); a missed touch only
/// makes a last use look older.
fn untouched(r: fleetprompt_store::Result<()>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "last use not recorded");
    }
}

async fn touch_session(engine: &Engine, id: &str, now: Millis) -> fleetprompt_store::Result<()> {
    let mut tx = engine.db().begin().await?;
    member::touch_session(&mut tx, id, now).await?;
    tx.commit().await
}

async fn touch_token(engine: &Engine, id: TokenId, now: Millis) -> fleetprompt_store::Result<()> {
    let mut tx = engine.db().begin().await?;
    tenant::touch_token(&mut tx, id, now).await?;
    tx.commit().await
}

/// Resolves a session cookie's value: `None` for an unknown, revoked,
/// expired or wrong one, or one whose member is disabled.
pub async fn authenticate_session(
    engine: &Engine,
    cookie: &str,
) -> Result<Option<Caller>, EngineError> {
    let Some((id, secret)) = parse_credential(SESSION_PREFIX, cookie.trim()) else {
        return Ok(None);
    };
    let Some(s) = member::session(engine.db(), id).await? else {
        let _ = verify_secret(secret, "");
        return Ok(None);
    };
    if !verify_secret(secret, &s.secret_hash) || s.member.disabled_at.is_some() {
        return Ok(None);
    }
    let now = now_ms();
    let cfg = engine.config().access;
    let idle = cfg.session_idle.as_millis() as Millis;
    let max_age = cfg.session_max_age.as_millis() as Millis;
    if now >= s.created_at + max_age || now >= s.last_seen_at + idle {
        return Ok(None);
    }
    if now - s.last_seen_at >= TOUCH_EVERY_MS.min(idle / 2) {
        untouched(touch_session(engine, &s.id, now).await);
    }
    Ok(Some(Caller {
        tenant: s.tenant,
        role: s.member.role,
        member: Some(s.member),
        credential: Credential::Session(s.id),
    }))
}

/// Resolves a bearer admin token: the tenant's own act as admin, a
/// member's with the member's role. `None` for an unknown, revoked or
/// wrong token, or one whose member is disabled.
pub async fn authenticate_token(
    engine: &Engine,
    token: &str,
) -> Result<Option<Caller>, EngineError> {
    let Some((id, secret)) = parse_admin_token(token.trim()) else {
        return Ok(None);
    };
    let Some(owner) = tenant::authenticate(engine.db(), id, secret).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if owner.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
        untouched(touch_token(engine, id, now).await);
    }
    Ok(Some(Caller {
        tenant: owner.tenant,
        role: owner.member.as_ref().map_or(Role::Admin, |m| m.role),
        member: owner.member,
        credential: Credential::Token(id),
    }))
}

/// Signs a session out: revoked at once, on every node.
pub async fn sign_out(engine: &Engine, session_id: &str) -> Result<bool, EngineError> {
    let mut tx = engine.db().begin().await?;
    let done = member::revoke_session(&mut tx, session_id, now_ms()).await?;
    tx.commit().await?;
    Ok(done)
}

fn check_token_name(name: &str) -> Result<String, EngineError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(fleetprompt_core::signal::ValidationError::Invalid {
            field: "name",
            reason: "must be 1 to 100 printable characters".into(),
        }
        .into());
    }
    Ok(n.to_owned())
}

/// Issues a personal token for `member`; the token is shown once.
pub async fn create_token(
    engine: &Engine,
    tenant: TenantId,
    member: MemberId,
    name: &str,
    actor: &Origin,
) -> Result<(TokenRow, IssuedToken), EngineError> {
    let name = check_token_name(name)?;
    let mut tx = engine.db().begin().await?;
    let token = tenant::add_member_token(&mut tx, tenant, member, &name).await?;
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        "token.created",
        json!({ "token_id": token.id, "member_id": member, "name": name }),
        format!("token_created:{}", token.id),
        actor,
    )
    .await?;
    tx.commit().await?;
    let row = tenant::list_tokens(engine.db(), tenant, Some(member))
        .await?
        .into_iter()
        .find(|t| t.id == token.id)
        .ok_or_else(|| EngineError::NotFound("token".into()))?;
    Ok((row, token))
}

/// A member's personal tokens, or the tenant's own (`None`).
pub async fn list_tokens(
    engine: &Engine,
    tenant: TenantId,
    member: Option<MemberId>,
) -> Result<Vec<TokenRow>, EngineError> {
    Ok(tenant::list_tokens(engine.db(), tenant, member).await?)
}

/// Revokes a token of the tenant (with `owner`, only that member's): it
/// stops working at once, on every node.
pub async fn revoke_token(
    engine: &Engine,
    tenant: TenantId,
    id: TokenId,
    owner: Option<MemberId>,
    actor: &Origin,
) -> Result<(), EngineError> {
    let mut tx = engine.db().begin().await?;
    if !tenant::revoke_token(&mut tx, tenant, id, owner, now_ms()).await? {
        return Err(EngineError::NotFound("token".into()));
    }
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        "token.revoked",
        json!({ "token_id": id }),
        format!("token_revoked:{id}"),
        actor,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces the tenant's own admin token(s) with a new one, shown once;
/// the old ones stop working at once.
pub async fn rotate_tenant_token(
    engine: &Engine,
    tenant: TenantId,
    actor: &Origin,
) -> Result<IssuedToken, EngineError> {
    let mut tx = engine.db().begin().await?;
    let (token, revoked) = tenant::rotate_token(&mut tx, tenant, now_ms()).await?;
    crate::audit::record(
        engine,
        &mut tx,
        tenant,
        "tenant.token_rotated",
        json!({ "token_id": token.id, "revoked": revoked }),
        format!("tenant_token_rotated:{}", token.id),
        actor,
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_refuses_past_the_limit_and_says_when_to_retry() {
        let t = Throttle::default();
        let keys = [("a", 3), ("b", 100)];
        let now = 1_000_000_000;
        for i in 0..3 {
            assert_eq!(t.check(&keys, now + i), None);
            t.fail(&keys, now + i);
        }
        let wait = t.check(&keys, now + 10).expect("throttled");
        assert!(wait > 800 && wait <= 900, "{wait}");
        assert_eq!(t.check(&keys, now + THROTTLE_WINDOW_MS + 10), None);
        t.clear("a");
        assert_eq!(t.check(&keys, now + 10), None);
    }
}
