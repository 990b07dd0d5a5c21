//! What is kept about a visitor, reduced before it is stored: IP addresses
//! only as a keyed hash, user agents only as browser family and OS.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of an IP address under a per-tenant key, hex encoded. Keyed,
/// so the stored value cannot be reversed by hashing all 2^32 IPv4 addresses.
pub fn hash_ip(key: &[u8], ip: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(b"fleetprompt.ip.v1\n");
    m.update(ip.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A user agent reduced to browser family and OS; the rest (versions,
/// build ids) would help fingerprint a visitor and is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// `chrome`, `firefox`, `safari`, `edge`, `opera`, `other`.
    pub browser: &'static str,
    /// `windows`, `macos`, `ios`, `android`, `linux`, `chromeos`, `other`.
    pub os: &'static str,
}

/// Reduces a `User-Agent` header.
pub fn reduce_user_agent(ua: &str) -> Agent {
    let browser = if ua.contains("Edg/") || ua.contains("Edge/") {
        "edge"
    } else if ua.contains("OPR/") || ua.contains("Opera") {
        "opera"
    } else if ua.contains("Firefox/") || ua.contains("FxiOS/") {
        "firefox"
    } else if ua.contains("Chrome/") || ua.contains("CriOS/") || ua.contains("Chromium/") {
        "chrome"
    } else if ua.contains("Safari/") {
        "safari"
    } else {
        "other"
    };
    let os = if ua.contains("Android") {
        "android"
    } else if ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod") {
        "ios"
    } else if ua.contains("Windows") {
        "windows"
    } else if ua.contains("CrOS") {
        "chromeos"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macos"
    } else if ua.contains("Linux") {
        "linux"
    } else {
        "other"
    };
    Agent { browser, os }
}

pub use fleetprompt_core::member::check_email;

/// Prefix of visitor secrets, which the widget keeps to return as the same
/// visitor (recognisable in a leak scan like every token we issue).
pub const VISITOR_SECRET_PREFIX: &str = "fpv_";

/// A new visitor secret, `fpv_<random>`, and the hash that is stored.
pub fn issue_visitor_secret() -> (String, String) {
    let secret = format!(
        "{VISITOR_SECRET_PREFIX}{}",
        fleetprompt_core::secret::random_token(24)
    );
    let hash = fleetprompt_core::secret::hash_secret(&secret);
    (secret, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_secrets_verify_against_their_hash_only() {
        let (secret, hash) = issue_visitor_secret();
        assert!(secret.starts_with("fpv_"));
        assert!(fleetprompt_core::secret::verify_secret(&secret, &hash));
        assert!(!fleetprompt_core::secret::verify_secret(
            &issue_visitor_secret().0,
            &hash
        ));
    }

    #[test]
    fn ip_hashes_are_keyed() {
        let a = hash_ip(b"k1", "203.0.113.9");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("203"));
        assert_eq!(a, hash_ip(b"k1", "203.0.113.9"));
        assert_ne!(a, hash_ip(b"k2", "203.0.113.9"));
    }

    #[test]
    fn user_agents_keep_only_family_and_os() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(
            reduce_user_agent(chrome),
            Agent {
                browser: "chrome",
                os: "linux"
            }
        );
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(
            reduce_user_agent(iphone),
            Agent {
                browser: "safari",
                os: "ios"
            }
        );
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(
            reduce_user_agent(edge),
            Agent {
                browser: "edge",
                os: "windows"
            }
        );
        assert_eq!(
            reduce_user_agent("curl/8"),
            Agent {
                browser: "other",
                os: "other"
            }
        );
    }

    #[test]
    fn emails_are_checked() {
        assert!(check_email("ada@example.com").is_ok());
        for e in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@x.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(check_email(e).is_err(), "{e}");
        }
    }
}
