//! Secrets: sealing at rest, and tokens verified in constant time.
//!
//! Stored secrets are sealed with XChaCha20-Poly1305 under the master key, with
//! the owning row's identity as associated data, so a ciphertext copied into
//! another tenant's row fails to open. Tokens are stored as SHA-256 hashes of
//! their secret half and compared with `subtle`, so a timing side channel does
//! not tell how much of a guess was right.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::id::{EdgeConnectorId, TokenId};

/// Failures of sealing, opening, or parsing secret material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The master key is not 32 bytes of hex or base64.
    #[error("master key must be 32 bytes, as 64 hex characters or base64")]
    BadMasterKey,
    /// A sealed value is damaged, or belongs to another row or key.
    #[error("sealed secret cannot be opened (wrong key or damaged)")]
    CannotOpen,
}

/// The 32-byte key that seals every stored secret.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

const SEALED_PREFIX: &str = "v1:";

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Self(k)
    }

    /// Parses a key given as 64 hex characters or as base64 of 32 bytes.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let s = s.trim();
        let bytes = hex::decode(s)
            .ok()
            .or_else(|| STANDARD.decode(s).ok())
            .ok_or(SecretError::BadMasterKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadMasterKey)?;
        Ok(Self(arr))
    }

    /// The key as hex, for writing the key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Seals `plaintext`, binding it to `context` (e.g. `destination:<tenant>:<name>`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// A 32-byte key for one purpose (`context`), derived from this key, so
    /// that a MAC key never doubles as the sealing key and every node
    /// derives the same one.
    pub fn derive(&self, context: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        m.update(b"fleetprompt.derive.v1\n");
        m.update(context.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// Opens a value sealed with the same key and context.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(SecretError::CannotOpen)?;
        if raw.len() < 24 {
            return Err(SecretError::CannotOpen);
        }
        let (nonce, ct) = raw.split_at(24);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::CannotOpen)
    }
}

/// `n` random bytes as URL-safe base64.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 of a secret, hex encoded: what is stored instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn verify_secret(presented: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(presented);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Prefix of admin API tokens, so they are recognisable in a leak scan.
pub const ADMIN_TOKEN_PREFIX: &str = "fpa_";

/// A freshly minted admin token: shown once, stored as `(id, secret_hash)`.
pub struct IssuedToken {
    /// The public half, used to find the stored hash.
    pub id: TokenId,
    /// The whole token string, `fpa_<id>.<secret>`.
    pub token: String,
    /// What is stored.
    pub secret_hash: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Mints an admin token.
pub fn issue_admin_token() -> IssuedToken {
    let id = TokenId::new();
    let secret = random_token(32);
    IssuedToken {
        token: format!("{ADMIN_TOKEN_PREFIX}{id}.{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented admin token into its id and secret half.
pub fn parse_admin_token(token: &str) -> Option<(TokenId, &str)> {
    let rest = token.strip_prefix(ADMIN_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    Some((id.parse().ok()?, secret))
}

/// Prefix of Edge Connector tokens: another prefix than admin tokens, so
/// neither can be mistaken for the other and a leak scan tells them apart.
pub const EDGE_TOKEN_PREFIX: &str = "fpe_";

/// A freshly minted Edge Connector token: shown once, stored as
/// `(id, secret_hash)`.
pub struct IssuedEdgeToken {
    /// The connector's id, the public half of the token.
    pub id: EdgeConnectorId,
    /// The whole token string, `fpe_<id>.<secret>`.
    pub token: String,
    /// What is stored.
    pub secret_hash: String,
}

impl fmt::Debug for IssuedEdgeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedEdgeToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Mints an Edge Connector token (and so the connector's id).
pub fn issue_edge_token() -> IssuedEdgeToken {
    let id = EdgeConnectorId::new();
    let secret = random_token(32);
    IssuedEdgeToken {
        token: format!("{EDGE_TOKEN_PREFIX}{id}.{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented Edge Connector token into its id and secret half.
pub fn parse_edge_token(token: &str) -> Option<(EdgeConnectorId, &str)> {
    let rest = token.strip_prefix(EDGE_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    Some((id.parse().ok()?, secret))
}

/// Hashes a member's password with argon2id (the crate's default, OWASP's
/// minimum: 19 MiB, 2 passes) and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters hashes any password")
        .to_string()
}

/// Checks a password against its PHC string (the comparison is constant
/// time). A missing hash (a member who has not set a password yet) spends
/// the same work as a real check and fails.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("no password is set"));
    let (phc, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// A one-time password for a new member or a reset: 20 random characters.
pub fn generate_password() -> String {
    random_token(15)
}

/// Prefix of browser session cookies' values.
pub const SESSION_PREFIX: &str = "fps_";

/// Prefix of one-time invite tokens (a sign-in link's secret).
pub const INVITE_PREFIX: &str = "fpi_";

/// A new session or invite credential: `<prefix><id>.<secret>`; only the
/// id and the SHA-256 of the secret are stored.
pub struct IssuedCredential {
    /// The public half, used to find the stored hash.
    pub id: String,
    /// The whole string, given to the client once.
    pub token: String,
    /// What is stored.
    pub secret_hash: String,
}

impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Mints a credential with `prefix` (`fps_` or `fpi_`).
pub fn issue_credential(prefix: &str) -> IssuedCredential {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let secret = random_token(32);
    IssuedCredential {
        token: format!("{prefix}{id}.{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented credential with `prefix` into its id and secret.
pub fn parse_credential<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let (id, secret) = token.strip_prefix(prefix)?.split_once('.')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, secret))
}

/// The CSRF token of a session: an HMAC of the session's id under a key
/// derived from the master key, so every node computes the same one and
/// none is stored. A page learns it at sign-in or from `GET /session`.
pub fn csrf_token(key: &MasterKey, session_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.derive("csrf"))
        .expect("HMAC accepts keys of any length");
    m.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Compares two strings in constant time (for their common length).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_are_stable() {
        let key = MasterKey::generate();
        assert_eq!(key.derive("a"), key.derive("a"));
        assert_ne!(key.derive("a"), key.derive("b"));
        assert_ne!(key.derive("a"), MasterKey::generate().derive("a"));
    }

    #[test]
    fn sealed_secrets_open_only_in_their_context() {
        let key = MasterKey::generate();
        let sealed = key.seal("destination:t1:hook", b"https://example.test/hook?key=abc");
        assert!(!sealed.contains("example"));
        assert_eq!(
            key.open("destination:t1:hook", &sealed).unwrap(),
            b"https://example.test/hook?key=abc"
        );
        assert!(key.open("destination:t2:hook", &sealed).is_err());
        assert!(
            MasterKey::generate()
                .open("destination:t1:hook", &sealed)
                .is_err()
        );
        assert!(key.open("destination:t1:hook", "v1:AAAA").is_err());
    }

    #[test]
    fn master_key_parses_hex_and_base64() {
        let key = MasterKey::generate();
        let hex = key.to_hex();
        assert_eq!(MasterKey::parse(&hex).unwrap().0, key.0);
        assert_eq!(MasterKey::parse(&STANDARD.encode(key.0)).unwrap().0, key.0);
        assert!(MasterKey::parse("short").is_err());
    }

    #[test]
    fn admin_tokens_verify_only_with_their_secret() {
        let t = issue_admin_token();
        let (id, secret) = parse_admin_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert!(verify_secret(secret, &t.secret_hash));
        assert!(!verify_secret("guess", &t.secret_hash));
        assert!(parse_admin_token("fpa_nope").is_none());
        assert!(!format!("{t:?}").contains(secret));
    }

    #[test]
    fn edge_tokens_verify_only_with_their_secret_and_are_not_admin_tokens() {
        let t = issue_edge_token();
        assert!(t.token.starts_with("fpe_edge_"), "{}", t.token);
        let (id, secret) = parse_edge_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert!(verify_secret(secret, &t.secret_hash));
        assert!(!verify_secret("guess", &t.secret_hash));
        assert!(parse_admin_token(&t.token).is_none());
        assert!(parse_edge_token(&issue_admin_token().token).is_none());
        assert!(!format!("{t:?}").contains(secret));
    }

    #[test]
    fn passwords_verify_only_with_themselves() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("correct horsf", Some(&h)));
        assert!(!verify_password("no password is set", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }

    #[test]
    fn credentials_parse_and_verify() {
        let c = issue_credential(SESSION_PREFIX);
        let (id, secret) = parse_credential(SESSION_PREFIX, &c.token).unwrap();
        assert_eq!(id, c.id);
        assert!(verify_secret(secret, &c.secret_hash));
        assert!(parse_credential(INVITE_PREFIX, &c.token).is_none());
        assert!(parse_credential(SESSION_PREFIX, "fps_short.x").is_none());
        let key = MasterKey::generate();
        assert_eq!(csrf_token(&key, &c.id), csrf_token(&key, &c.id));
        assert_ne!(csrf_token(&key, &c.id), csrf_token(&key, "other"));
    }
}
