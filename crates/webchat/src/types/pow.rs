//! Proof-of-work challenges for the widget's bootstrap, in the style of
//! Altcha: no third party, nothing stored when a challenge is issued.
//!
//! The server picks a secret number `n` in `0..=max_number` and a salt
//! (`<id>.<expires_at>`), and sends `challenge = hex(SHA-256(salt ‖ n))`
//! with an HMAC signature over the site, salt, challenge and `max_number`.
//! The widget finds `n` by trying every number from 0 (on average
//! `max_number / 2` hashes); the server checks the answer with one hash
//! and the signature. Spending the challenge's id (a store row until its
//! expiry) makes every solution single use; raising `max_number` raises
//! the work.

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use fleetprompt_core::time::Millis;

/// The only hash the widget is asked to use.
pub const ALGORITHM: &str = "SHA-256";
/// The largest `max_number` ever signed: bounds a client's worst case.
pub const MAX_NUMBER_CAP: u64 = 50_000_000;

/// A puzzle as sent to the widget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Challenge {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// `<id>.<expires_at ms>`, prepended to the number before hashing.
    pub salt: String,
    /// Hex SHA-256 of `salt` followed by the secret number in decimal.
    pub challenge: String,
    /// The secret number is at most this.
    pub max_number: u64,
    /// Hex HMAC-SHA256 over site, salt, challenge and `max_number`.
    pub signature: String,
}

/// What the widget sends back: the challenge as it was, and the number.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Solution {
    /// As in the challenge.
    pub salt: String,
    /// As in the challenge.
    pub challenge: String,
    /// As in the challenge.
    pub max_number: u64,
    /// As in the challenge.
    pub signature: String,
    /// The number found.
    pub number: u64,
}

/// Why a solution is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// Not signed by us for this site, or malformed.
    #[error("the challenge was not issued by this server for this site")]
    Forged,
    /// Past its expiry.
    #[error("the challenge has expired")]
    Expired,
    /// The number does not solve it.
    #[error("the number does not solve the challenge")]
    Wrong,
}

/// A verified solution: its challenge id, to spend, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Unique per challenge.
    pub id: String,
    /// When the challenge expires.
    pub expires_at: Millis,
}

fn sign(key: &[u8], site: &str, salt: &str, challenge: &str, max_number: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(format!("fleetprompt.pow.v1\n{site}\n{salt}\n{challenge}\n{max_number}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

fn digest(salt: &str, number: u64) -> String {
    hex::encode(Sha256::digest(format!("{salt}{number}").as_bytes()))
}

/// The work asked of an address that took `recent` challenges in the
/// current minute: `base`, doubled for every ten, up to 64 times.
pub fn scaled(base: u64, recent: u32) -> u64 {
    base.saturating_mul(1 << (recent / 10).min(6))
        .min(MAX_NUMBER_CAP)
}

/// A new challenge for `site`, valid until `expires_at`.
pub fn issue(key: &[u8], site: &str, max_number: u64, expires_at: Millis) -> Challenge {
    let max_number = max_number.clamp(1, MAX_NUMBER_CAP);
    let mut rng = rand::rng();
    let id: [u8; 12] = rng.random();
    let salt = format!("{}.{expires_at}", hex::encode(id));
    let number = rng.random_range(0..=max_number);
    let challenge = digest(&salt, number);
    Challenge {
        algorithm: ALGORITHM.into(),
        signature: sign(key, site, &salt, &challenge, max_number),
        salt,
        challenge,
        max_number,
    }
}

/// Checks a solution for `site` at `now`. It still has to be spent.
pub fn verify(key: &[u8], site: &str, s: &Solution, now: Millis) -> Result<Verified, PowError> {
    let expected = sign(key, site, &s.salt, &s.challenge, s.max_number);
    if !bool::from(expected.as_bytes().ct_eq(s.signature.as_bytes())) {
        return Err(PowError::Forged);
    }
    let (id, expires) = s.salt.split_once('.').ok_or(PowError::Forged)?;
    let expires_at: Millis = expires.parse().map_err(|_| PowError::Forged)?;
    if now >= expires_at {
        return Err(PowError::Expired);
    }
    if s.number > s.max_number || digest(&s.salt, s.number) != s.challenge {
        return Err(PowError::Wrong);
    }
    Ok(Verified {
        id: id.to_owned(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(c: &Challenge) -> Solution {
        let number = (0..=c.max_number)
            .find(|n| digest(&c.salt, *n) == c.challenge)
            .expect("a challenge has a solution");
        Solution {
            salt: c.salt.clone(),
            challenge: c.challenge.clone(),
            max_number: c.max_number,
            signature: c.signature.clone(),
            number,
        }
    }

    #[test]
    fn a_solved_challenge_verifies_once_per_site_and_key() {
        let key = [7u8; 32];
        let c = issue(&key, "site_a", 500, 10_000);
        let s = solve(&c);
        let v = verify(&key, "site_a", &s, 5_000).unwrap();
        assert_eq!(v.expires_at, 10_000);
        assert_eq!(format!("{}.10000", v.id), c.salt);
        assert_eq!(verify(&key, "site_b", &s, 5_000), Err(PowError::Forged));
        assert_eq!(
            verify(&[8u8; 32], "site_a", &s, 5_000),
            Err(PowError::Forged)
        );
        assert_eq!(verify(&key, "site_a", &s, 10_000), Err(PowError::Expired));
    }

    #[test]
    fn tampering_is_refused() {
        let key = [7u8; 32];
        let c = issue(&key, "s", 200, 10_000);
        let good = solve(&c);
        let mut wrong = good.clone();
        wrong.number = (good.number + 1) % 201;
        assert_eq!(verify(&key, "s", &wrong, 0), Err(PowError::Wrong));
        let mut easier = good.clone();
        easier.max_number = 10;
        assert_eq!(verify(&key, "s", &easier, 0), Err(PowError::Forged));
        let mut later = good.clone();
        later.salt = format!("{}.99999999", c.salt.split('.').next().unwrap());
        assert_eq!(verify(&key, "s", &later, 0), Err(PowError::Forged));
    }

    #[test]
    fn work_doubles_with_the_recent_rate_up_to_a_cap() {
        assert_eq!(scaled(1000, 0), 1000);
        assert_eq!(scaled(1000, 9), 1000);
        assert_eq!(scaled(1000, 10), 2000);
        assert_eq!(scaled(1000, 35), 8000);
        assert_eq!(scaled(1000, 1000), 64_000);
        assert_eq!(scaled(10_000_000, 1000), MAX_NUMBER_CAP);
    }
}
