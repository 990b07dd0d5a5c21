//! Who is on the other end: the client address that rate limits are keyed
//! by.
//!
//! The address is the TCP peer's. Only when the peer is one of the
//! operator's `--trusted-proxies` are `Forwarded` (RFC 7239) or, failing
//! that, `X-Forwarded-For` read: walking from the nearest hop outwards, the
//! first address that is not a trusted proxy is the client. Anyone else can
//! write those headers, so by default no proxy is trusted and they are
//! ignored. A header that does not parse is ignored as a whole (the peer
//! stays the client), so a confused chain never lets a client pick its
//! own key.
//!
//! The serve loop must record the peer as axum's `ConnectInfo<SocketAddr>`
//! extension (`into_make_service_with_connect_info`, or by hand in a custom
//! accept loop); [`ClientAddr`] is the one place that reads it.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        items
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| format!("`{s}` is not a CIDR (10.0.0.0/8) or an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind a request from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let Some(hops) = forwarded(headers).or_else(|| x_forwarded_for(headers)) else {
            return peer;
        };
        hops.iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One hop: an address, maybe with a port, maybe bracketed.
fn hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(canonical(ip))
}

/// Every value of `name`, joined as one comma-separated list; `None` when
/// absent or not text.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
    Some(parts?.join(","))
}

/// The `for=` hops of `Forwarded`, nearest last.
fn forwarded(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let all = joined(headers, "forwarded")?;
    all.split(',')
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v)
            })
        })
        .map(|v| hop(v?))
        .collect()
}

/// The hops of `X-Forwarded-For`, nearest last.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    joined(headers, "x-forwarded-for")?
        .split(',')
        .map(hop)
        .collect()
}

/// A process-wide random key, so limiter keys are not the addresses
/// themselves and cannot be reversed by hashing all of IPv4.
static SALT: LazyLock<String> = LazyLock::new(|| fleetprompt_core::secret::random_token(16));

/// The client's address, as decided by [`TrustedProxies::client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// A keyed hash of the address, for limiter keys. An IPv6 client is
    /// counted by its /64, the block one subscriber usually gets, so
    /// rotating addresses inside it gains nothing.
    pub fn limit_key(&self) -> String {
        let net = match self.0 {
            IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 64)
                .expect("64 is a valid IPv6 prefix")
                .trunc(),
        };
        let mut h = Sha256::new();
        h.update(SALT.as_bytes());
        h.update(net.to_string().as_bytes());
        hex::encode(&h.finalize()[..12])
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .ok_or_else(|| {
                ApiError::Internal("the server did not record the peer address".into())
            })?;
        Ok(Self(state.trusted_proxies.client(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(none.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let lo = TrustedProxies::parse(&["127.0.0.1/32"]).unwrap();
        assert_eq!(lo.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        assert_eq!(lo.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(
            lo.client(ip("::ffff:127.0.0.1"), &h),
            ip("203.0.113.9"),
            "IPv4-mapped peers are their IPv4 address"
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let p = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap();
        // The client wrote a fake first hop; our proxies appended the rest.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // Only proxies: the farthest one.
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("10.0.0.7"));
        // Garbage: the peer.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let p = TrustedProxies::parse(&["127.0.0.1/32"]).unwrap();
        let h = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = headers(&[("forwarded", "for=198.51.100.2:8080;by=127.0.0.1")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("198.51.100.2"));
    }

    #[test]
    fn bad_proxy_lists_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["localhost"]).is_err());
        assert!(TrustedProxies::parse(&[" ", ""]).unwrap().is_empty());
    }

    #[test]
    fn ipv6_clients_share_a_key_per_64() {
        let a = ClientAddr(ip("2001:db8:1:2::1")).limit_key();
        let b = ClientAddr(ip("2001:db8:1:2:ffff::9")).limit_key();
        let c = ClientAddr(ip("2001:db8:1:3::1")).limit_key();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!a.contains("2001"));
    }
}
