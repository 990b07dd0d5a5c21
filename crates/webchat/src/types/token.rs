//! Widget tokens: short-lived, HMAC-SHA256 signed with the site's secret.
//!
//! Form: `fpw_<payload>.<mac>`, both base64url. The payload names the
//! tenant, site, visitor, issue and expiry times and the key id, so a
//! verifier can find the one site record (and the one secret) to check it
//! against; nothing in it is trusted before the MAC is. The `fpw_` prefix is
//! one the signal validator refuses, so a token can never enter a signal.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::id::{SiteId, VisitorId};
use fleetprompt_core::id::TenantId;
use fleetprompt_core::time::Millis;

/// Prefix of widget tokens, so they are recognisable in a leak scan.
pub const TOKEN_PREFIX: &str = "fpw_";

/// Domain separation: a MAC made for something else with the same secret
/// can never pass as a token.
const DOMAIN: &[u8] = b"fleetprompt.widget-token.v1\n";

/// What a token asserts once its MAC has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The site's tenant.
    pub tenant: TenantId,
    /// The site the token was issued for.
    pub site: SiteId,
    /// The visitor it was issued to.
    pub visitor: VisitorId,
    /// When it was issued.
    pub issued_at: Millis,
    /// When it stops being valid.
    pub expires_at: Millis,
    /// Which of the site's signing secrets signed it.
    pub key_id: i32,
}

/// Why a token was refused. Deliberately coarse: clients learn only that
/// the token is not good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a widget token at all.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match (tampered, or signed with another secret).
    #[error("bad token signature")]
    BadSignature,
    /// Past its expiry (or issued in the future).
    #[error("token expired")]
    Expired,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], payload: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    m.update(DOMAIN);
    m.update(payload);
    m
}

fn payload(c: &Claims) -> String {
    format!(
        "{}.{}.{}.{}.{}.{}",
        c.tenant, c.site, c.visitor, c.issued_at, c.expires_at, c.key_id
    )
}

/// Signs `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let p = payload(claims);
    let tag = mac(secret, p.as_bytes()).finalize().into_bytes();
    format!(
        "{TOKEN_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(p.as_bytes()),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// A parsed token whose MAC has not been checked yet. It exposes only what
/// a verifier needs to find the secret to check it with.
#[derive(Debug, Clone)]
pub struct Unverified {
    claims: Claims,
    payload: Vec<u8>,
    tag: Vec<u8>,
}

impl Unverified {
    /// Parses a token's shape.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Malformed)?;
        if rest.len() > 1024 {
            return Err(TokenError::Malformed);
        }
        let (p, t) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| TokenError::Malformed)?;
        let text = std::str::from_utf8(&payload).map_err(|_| TokenError::Malformed)?;
        let parts: Vec<&str> = text.split('.').collect();
        let [tenant, site, visitor, iat, exp, kid] = parts[..] else {
            return Err(TokenError::Malformed);
        };
        let bad = |_| TokenError::Malformed;
        let claims = Claims {
            tenant: tenant.parse().map_err(bad)?,
            site: site.parse().map_err(bad)?,
            visitor: visitor.parse().map_err(bad)?,
            issued_at: iat.parse().map_err(|_| TokenError::Malformed)?,
            expires_at: exp.parse().map_err(|_| TokenError::Malformed)?,
            key_id: kid.parse().map_err(|_| TokenError::Malformed)?,
        };
        Ok(Self {
            claims,
            payload,
            tag,
        })
    }

    /// The tenant whose site record holds the secret to check with.
    pub fn tenant(&self) -> TenantId {
        self.claims.tenant
    }

    /// The site whose record holds the secret to check with.
    pub fn site(&self) -> SiteId {
        self.claims.site
    }

    /// Which of the site's secrets to check with.
    pub fn key_id(&self) -> i32 {
        self.claims.key_id
    }

    /// Checks the MAC in constant time, then the validity window.
    pub fn verify(self, secret: &[u8], now: Millis) -> Result<Claims, TokenError> {
        mac(secret, &self.payload)
            .verify_slice(&self.tag)
            .map_err(|_| TokenError::BadSignature)?;
        // A minute of clock skew between nodes is tolerated at the start.
        if now >= self.claims.expires_at || self.claims.issued_at > now + 60_000 {
            return Err(TokenError::Expired);
        }
        Ok(self.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: Millis) -> Claims {
        Claims {
            tenant: TenantId::new(),
            site: SiteId::new(),
            visitor: VisitorId::new(),
            issued_at: now,
            expires_at: now + 60_000,
            key_id: 1,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_secret() {
        let c = claims(1_000);
        let t = sign(b"secret-one", &c);
        assert!(t.starts_with(TOKEN_PREFIX));
        let u = Unverified::parse(&t).unwrap();
        assert_eq!((u.tenant(), u.site(), u.key_id()), (c.tenant, c.site, 1));
        assert_eq!(u.verify(b"secret-one", 2_000).unwrap(), c);
    }

    #[test]
    fn another_secret_is_refused() {
        let t = sign(b"secret-one", &claims(1_000));
        let u = Unverified::parse(&t).unwrap();
        assert_eq!(
            u.verify(b"secret-two", 2_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_payloads_are_refused() {
        let c = claims(1_000);
        let t = sign(b"s", &c);
        // Re-encode the payload with another site, keeping the old MAC.
        let forged = Claims {
            site: SiteId::new(),
            ..c
        };
        let (_, tag) = t.rsplit_once('.').unwrap();
        let p = URL_SAFE_NO_PAD.encode(payload(&forged));
        let t2 = format!("{TOKEN_PREFIX}{p}.{tag}");
        assert_eq!(
            Unverified::parse(&t2).unwrap().verify(b"s", 2_000),
            Err(TokenError::BadSignature)
        );
        // A longer expiry is a tamper too.
        let later = Claims {
            expires_at: c.expires_at + 1,
            ..c
        };
        let p = URL_SAFE_NO_PAD.encode(payload(&later));
        assert_eq!(
            Unverified::parse(&format!("{TOKEN_PREFIX}{p}.{tag}"))
                .unwrap()
                .verify(b"s", 2_000),
            Err(TokenError::BadSignature)
        );
        // A flipped MAC byte.
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let t3 = String::from_utf8(bytes).unwrap();
        assert!(Unverified::parse(&t3).unwrap().verify(b"s", 2_000).is_err());
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let t = sign(b"s", &claims(1_000));
        let u = || Unverified::parse(&t).unwrap();
        assert_eq!(u().verify(b"s", 61_000), Err(TokenError::Expired));
        assert_eq!(u().verify(b"s", 100_000), Err(TokenError::Expired));
        let early = sign(b"s", &claims(500_000));
        assert_eq!(
            Unverified::parse(&early).unwrap().verify(b"s", 1_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for t in [
            "",
            "fpw_",
            "fpw_abc",
            "fpa_x.y",
            "fpw_!!.!!",
            "fpw_YWJj.YWJj",
            "Bearer fpw_x.y",
        ] {
            assert_eq!(
                Unverified::parse(t).err(),
                Some(TokenError::Malformed),
                "{t}"
            );
        }
    }

    #[test]
    fn tokens_are_refused_by_the_signal_validator() {
        let t = sign(b"s", &claims(1_000));
        let p = serde_json::json!({ "note": t });
        assert!(fleetprompt_core::signal::check_payload("payload", &p).is_err());
    }
}
