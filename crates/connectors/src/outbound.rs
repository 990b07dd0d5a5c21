//! The outbound policy: which addresses our HTTP requests may reach.
//!
//! A tenant chooses the URLs of its destinations, so without a policy any
//! tenant admin could make the server call its own neighbours: the
//! database port on loopback, the cloud metadata service on
//! `169.254.169.254`, anything on the company network. The policy refuses
//! every address that is not public unicast (loopback, private, link-local,
//! unique-local, CGNAT, multicast, unspecified, documentation and reserved
//! ranges, IPv4-mapped and other IPv4-embedding IPv6 forms judged by the
//! IPv4 address they carry) unless the operator allows it by CIDR
//! (`--allow-outbound`).
//!
//! It is checked twice: when a destination is created (its host is
//! resolved, and every address must be allowed), and on every connection,
//! by the resolver of the shared client ([`GuardedResolver`]), which drops
//! the addresses that are not allowed. The second check is the one that
//! counts: a name may resolve to something else by the time we connect
//! (DNS rebinding), and the operator's allowlist may have changed since.
//! IP-literal URLs never reach a resolver, so [`OutboundPolicy::check_url`]
//! checks them before a request is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// A request was refused because of where it would go.
///
/// The message names the host the tenant gave, never the address it
/// resolved to: the tenant learns nothing about our network from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    /// Every address of the host is internal and none is allowed.
    #[error(
        "destination_not_allowed: the address of {host} is not allowed (outbound requests may not reach loopback, private, link-local or other internal addresses)"
    )]
    Internal {
        /// The host as written in the URL.
        host: String,
    },
    /// The host did not resolve, so it could not be checked.
    #[error("destination_not_allowed: {host} does not resolve, so its address cannot be checked")]
    Unresolved {
        /// The host as written in the URL.
        host: String,
    },
    /// The URL has no host or is not http(s).
    #[error("destination_not_allowed: not an http(s) URL with a host")]
    BadUrl,
}

/// One CIDR of the operator's allowlist (`10.1.0.0/16`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is not a CIDR such as 10.1.0.0/16 or fd00::/8"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Internal ranges the operator allows anyway.
    allow: Vec<Cidr>,
}

/// Longest a creation-time lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl OutboundPolicy {
    /// Public addresses only, plus `allow`.
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// The operator's allowlist.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// Whether a connection to `ip` may be made.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.allow.iter().any(|c| c.0.contains(&ip)) {
            return true;
        }
        !is_internal(ip)
    }

    /// Checks a URL's scheme and, when its host is an IP literal (which no
    /// resolver sees), that address. A name is left to the resolver.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), NotAllowed> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NotAllowed::BadUrl);
        }
        let host = url.host_str().ok_or(NotAllowed::BadUrl)?;
        let Some(ip) = ip_literal(host) else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(NotAllowed::Internal {
                host: url.host_str().unwrap_or_default().to_owned(),
            })
        }
    }

    /// The check made when a destination is created: the URL's host is
    /// resolved now and every address it has must be allowed (a name that
    /// points inside at all is refused, not merely filtered).
    pub async fn check_destination(&self, url: &str) -> Result<(), NotAllowed> {
        let url = reqwest::Url::parse(url).map_err(|_| NotAllowed::BadUrl)?;
        self.check_url(&url)?;
        let host = url.host_str().unwrap_or_default();
        if ip_literal(host).is_some() {
            return Ok(());
        }
        let addrs = lookup(host).await.map_err(|_| NotAllowed::Unresolved {
            host: host.to_owned(),
        })?;
        if addrs.is_empty() {
            return Err(NotAllowed::Unresolved {
                host: host.to_owned(),
            });
        }
        if addrs.iter().all(|a| self.permits(a.ip())) {
            Ok(())
        } else {
            Err(NotAllowed::Internal {
                host: host.to_owned(),
            })
        }
    }
}

/// The address of an IP-literal host (`127.0.0.1`, `[::1]`), as the URL
/// parser normalised it.
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

async fn lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(found) => Ok(found?.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "DNS lookup timed out",
        )),
    }
}

/// Whether `ip` is anything but a public unicast address.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    const RANGES: &[([u8; 4], u8)] = &[
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0 included
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast included
    ];
    RANGES.iter().any(|&(net, len)| in_v4(ip, net, len))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96)
    // addresses reach the IPv4 address they carry.
    if s[..6] == [0; 6] {
        return ip.is_unspecified() || ip.is_loopback() || is_internal_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002:aabb:ccdd::/48) carries a.b.c.d in its prefix.
    if s[0] == 0x2002 {
        return is_internal_v4(embedded(s[1], s[2]));
    }
    let in_v6 = |net: u128, len: u32| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        u128::from(ip) & mask == net & mask
    };
    const RANGES: &[(u128, u32)] = &[
        (0x0064_ff9b_0001 << 80, 48), // local-use NAT64
        (0x0100 << 112, 64),          // discard-only
        (0x2001_0000 << 96, 32),      // Teredo (hides its IPv4 target)
        (0x2001_0db8 << 96, 32),      // documentation
        (0xfc00 << 112, 7),           // unique-local
        (0xfe80 << 112, 10),          // link-local
        (0xfec0 << 112, 10),          // site-local (deprecated)
        (0xff00 << 112, 8),           // multicast
    ];
    RANGES.iter().any(|&(net, len)| in_v6(net, len))
}

/// The shared client's resolver: resolves with the system resolver, then
/// keeps only the addresses the policy permits. When none is left the
/// connection fails with [`NotAllowed`], found again in the error's source
/// chain by [`not_allowed_in`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = lookup(&host).await?;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                tracing::warn!(host = %host, "outbound connection refused: no allowed address");
                return Err(Box::new(NotAllowed::Internal { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`NotAllowed`] somewhere in an error's source chain, if any.
pub fn not_allowed_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotAllowed> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(n) = err.downcast_ref::<NotAllowed>() {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let p = OutboundPolicy::default();
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.9",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!p.permits(ip(a)), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let p = OutboundPolicy::default();
        for a in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.permits(ip(a)), "{a} should pass");
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_its_ranges() {
        let p = OutboundPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(
            p.permits(ip("::ffff:127.0.0.1")),
            "mapped form of an allowed v4"
        );
        assert!(p.permits(ip("::1")));
        assert!(p.permits(ip("10.1.200.3")));
        assert!(!p.permits(ip("10.2.0.1")));
        assert!(!p.permits(ip("169.254.169.254")));
        assert!("nonsense".parse::<Cidr>().is_err());
        assert_eq!(
            "10.1.2.3/16".parse::<Cidr>().unwrap().to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn ip_literal_urls_are_checked_before_sending() {
        let p = OutboundPolicy::default();
        for u in [
            "http://127.0.0.1:5432/",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/",
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            assert!(
                matches!(p.check_url(&url), Err(NotAllowed::Internal { .. })),
                "{u}"
            );
        }
        let ok = reqwest::Url::parse("https://chat.example.com/hooks/x").unwrap();
        assert_eq!(p.check_url(&ok), Ok(()));
        let ftp = reqwest::Url::parse("ftp://1.1.1.1/").unwrap();
        assert_eq!(p.check_url(&ftp), Err(NotAllowed::BadUrl));
    }

    #[tokio::test]
    async fn names_are_resolved_at_creation() {
        let p = OutboundPolicy::default();
        assert!(matches!(
            p.check_destination("http://localhost:8080/").await,
            Err(NotAllowed::Internal { .. })
        ));
        let open =
            OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(
            open.check_destination("http://localhost:8080/").await,
            Ok(())
        );
        assert!(matches!(
            p.check_destination("http://does-not-exist.invalid/").await,
            Err(NotAllowed::Unresolved { .. })
        ));
    }
}
