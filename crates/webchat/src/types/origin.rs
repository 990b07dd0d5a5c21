//! Origins (`scheme://host[:port]`) and the exact matching of a request's
//! `Origin` header against a site's allowlist.
//!
//! Matching is exact on scheme, host and port after normalisation (lowercase,
//! default ports dropped): no wildcards, no suffix matching, and the opaque
//! origin `null` (sandboxed frames, `file:` pages) never matches.

use std::fmt;

/// A normalised web origin.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(String);

/// Why a string is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin like https://shop.example.com or http://localhost:3000")]
pub struct OriginError(pub String);

fn host_ok(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Origin {
    /// Parses a full origin: `http` or `https`, a host, an optional port, and
    /// nothing else (no path, query, user info or trailing slash but one).
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let err = || OriginError(s.chars().take(200).collect());
        let lower = s.trim().to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(err)?;
        let default_port = match scheme {
            "http" => "80",
            "https" => "443",
            _ => return Err(err()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(err());
        }
        // Split off a port, minding IPv6 brackets.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if !host_ok(host) {
            return Err(err());
        }
        let port = match port {
            Some(p) => {
                let n: u16 = p.parse().map_err(|_| err())?;
                if n == 0 {
                    return Err(err());
                }
                Some(n.to_string())
            }
            None => None,
        };
        Ok(Self(match port {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        }))
    }

    /// Reads an allowlist entry: a full origin, or a bare host (with an
    /// optional port), which means `https://host`.
    pub fn from_domain(s: &str) -> Result<Self, OriginError> {
        if s.contains("://") {
            Self::parse(s)
        } else {
            Self::parse(&format!("https://{s}"))
        }
    }

    /// The origin as a string, as browsers send it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Whether a request's `Origin` header value is in `allowed`. `null` and
/// anything unparsable never are.
pub fn is_allowed(allowed: &[Origin], header: &str) -> bool {
    if header.trim() == "null" {
        return false;
    }
    match Origin::parse(header) {
        Ok(o) => allowed.contains(&o),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(xs: &[&str]) -> Vec<Origin> {
        xs.iter().map(|x| Origin::from_domain(x).unwrap()).collect()
    }

    #[test]
    fn normalises_case_and_default_ports() {
        assert_eq!(
            Origin::parse("HTTPS://Shop.Example.com:443")
                .unwrap()
                .as_str(),
            "https://shop.example.com"
        );
        assert_eq!(
            Origin::parse("http://localhost:80/").unwrap().as_str(),
            "http://localhost"
        );
        assert_eq!(
            Origin::parse("http://127.0.0.1:3000").unwrap().as_str(),
            "http://127.0.0.1:3000"
        );
        assert_eq!(
            Origin::parse("http://[::1]:8080").unwrap().as_str(),
            "http://[::1]:8080"
        );
        assert_eq!(
            Origin::from_domain("shop.example.com").unwrap().as_str(),
            "https://shop.example.com"
        );
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for s in [
            "null",
            "",
            "shop.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://*.x.com",
            "https://x..com",
            "javascript://x.com",
        ] {
            assert!(Origin::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn matching_is_exact_on_scheme_host_and_port() {
        let allowed = list(&["shop.example.com", "http://localhost:3000"]);
        assert!(is_allowed(&allowed, "https://shop.example.com"));
        assert!(is_allowed(&allowed, "https://shop.example.com:443"));
        assert!(is_allowed(&allowed, "http://localhost:3000"));
        assert!(!is_allowed(&allowed, "http://shop.example.com"));
        assert!(!is_allowed(&allowed, "https://evil.shop.example.com"));
        assert!(!is_allowed(&allowed, "https://shop.example.com.evil.com"));
        assert!(!is_allowed(&allowed, "https://example.com"));
        assert!(!is_allowed(&allowed, "http://localhost:3001"));
        assert!(!is_allowed(&allowed, "http://localhost"));
        assert!(!is_allowed(&allowed, "null"));
        assert!(!is_allowed(&allowed, "garbage"));
    }
}
