//! Where webhook deliveries may connect. Unless `--webhook-allow-private-networks` is set, roster
//! delivers only to public addresses: a receiver whose address is loopback, private (RFC 1918,
//! unique local), link-local, unspecified, shared (CGNAT), multicast, reserved or documentation
//! space is refused, so that a subscription cannot make roster probe the network it runs in.
//!
//! The check is made on the addresses roster actually connects to: [`PublicResolver`] resolves a
//! host name and keeps only the allowed addresses (so a name that resolves to a public address
//! when the subscription is created and to a private one later, DNS rebinding, is refused at
//! connect time), and [`check_url`] checks a URL whose host is an IP literal, for which the HTTP
//! client calls no resolver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How roster refers to the setting that lifts the deny-list.
const SETTING: &str = "--webhook-allow-private-networks";

/// The denied range `ip` is in, by name; `None` for an address roster may deliver to.
pub fn denied_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => denied_v6(v6),
    }
}

fn denied_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\", 0.0.0.0/8",
        (10, _, _) | (192, 168, _) => "private, RFC 1918",
        (172, _, _) if b & 0xf0 == 16 => "private, RFC 1918",
        (100, _, _) if b & 0xc0 == 64 => "shared address space (CGNAT), 100.64.0.0/10",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignments, 192.0.0.0/24",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, _, _) if b & 0xfe == 18 => "benchmarking, 198.18.0.0/15",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved, 240.0.0.0/4",
        _ => return None,
    })
}

fn denied_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // An IPv4 address written as IPv6 is judged as the IPv4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return denied_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (deprecated), ::/96",
        // NAT64 (RFC 6052) and 6to4 (RFC 3056) reach the IPv4 address they embed.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return denied_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => "NAT64 local use, 64:ff9b:1::/48",
        [0x2002, hi, lo, ..] => return denied_v4(embedded(hi, lo)),
        [0x100, 0, 0, 0, ..] => "discard-only, 100::/64",
        [0x2001, 0xdb8, ..] => "documentation",
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique local, fc00::/7",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local",
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local (deprecated), fec0::/10",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast",
        // Only 2000::/3 is allocated as global unicast.
        [first, ..] if first & 0xe000 != 0x2000 => "reserved, outside 2000::/3",
        _ => return None,
    })
}

/// A delivery refused because of where it would connect.
#[derive(Debug)]
pub enum Refused {
    /// The URL's host is an address in a denied range.
    Address { ip: IpAddr, range: &'static str },
    /// Every address the host name resolves to is in a denied range.
    Host {
        host: String,
        denied: Vec<(IpAddr, &'static str)>,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { ip, range } => write!(
                f,
                "the receiver's address {ip} is in a denied range ({range})"
            )?,
            Self::Host { host, denied } => {
                write!(
                    f,
                    "the receiver's host {host} resolves only to addresses in denied ranges:"
                )?;
                for (i, (ip, range)) in denied.iter().take(4).enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    write!(f, "{comma} {ip} ({range})")?;
                }
                if denied.len() > 4 {
                    write!(f, " and {} more", denied.len() - 4)?;
                }
            }
        }
        write!(
            f,
            "; roster delivers only to public addresses unless {SETTING} is set"
        )
    }
}

impl std::error::Error for Refused {}

/// Refuses a URL whose host is an IP literal in a denied range (a host name is checked when it
/// is resolved, by [`PublicResolver`]).
pub fn check_url(url: &url::Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) | None => return Ok(()),
    };
    match denied_range(ip) {
        Some(range) => Err(Refused::Address { ip, range }),
        None => Ok(()),
    }
}

/// The allowed addresses among those `host` resolved to; refused when none remain.
pub fn allowed_addresses(host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
    let (allowed, denied): (Vec<SocketAddr>, Vec<SocketAddr>) = found
        .into_iter()
        .partition(|addr| denied_range(addr.ip()).is_none());
    if allowed.is_empty() {
        return Err(Refused::Host {
            host: host.to_owned(),
            denied: denied
                .iter()
                .filter_map(|addr| denied_range(addr.ip()).map(|range| (addr.ip(), range)))
                .collect(),
        });
    }
    Ok(allowed)
}

/// The system resolver (as the HTTP client's default), keeping only allowed addresses.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("the receiver's host {host} resolves to no address").into());
            }
            let allowed = allowed_addresses(&host, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ip: &str) -> Option<&'static str> {
        denied_range(ip.parse().expect("an IP address"))
    }

    #[test]
    fn non_public_ipv4_addresses_are_denied() {
        for (ip, name) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\", 0.0.0.0/8"),
            ("10.0.0.1", "private, RFC 1918"),
            ("172.16.0.1", "private, RFC 1918"),
            ("172.31.255.255", "private, RFC 1918"),
            ("192.168.1.1", "private, RFC 1918"),
            ("100.64.0.1", "shared address space (CGNAT), 100.64.0.0/10"),
            (
                "100.127.255.255",
                "shared address space (CGNAT), 100.64.0.0/10",
            ),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("192.0.0.8", "IETF protocol assignments, 192.0.0.0/24"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.200", "documentation"),
            ("198.18.0.1", "benchmarking, 198.18.0.0/15"),
            ("198.19.255.1", "benchmarking, 198.18.0.0/15"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved, 240.0.0.0/4"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(range(ip), Some(name), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.167.1.1",
            "198.17.0.1",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn non_public_ipv6_addresses_are_denied() {
        for (ip, name) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible (deprecated), ::/96"),
            ("fc00::1", "unique local, fc00::/7"),
            ("fd12:3456::1", "unique local, fc00::/7"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated), fec0::/10"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("100::1", "discard-only, 100::/64"),
            ("64:ff9b:1::1", "NAT64 local use, 64:ff9b:1::/48"),
            // NAT64 and 6to4 addresses are judged by the IPv4 address they embed.
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a00:1", "private, RFC 1918"),
            ("2002:c0a8:0101::1", "private, RFC 1918"),
            ("2002:a9fe:a9fe::", "link-local"),
            ("fbff::1", "reserved, outside 2000::/3"),
            ("4000::1", "reserved, outside 2000::/3"),
        ] {
            assert_eq!(range(ip), Some(name), "{ip}");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_judged_as_ipv4() {
        for (ip, name) in [
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private, RFC 1918")),
            ("::ffff:169.254.169.254", Some("link-local")),
            (
                "::ffff:100.64.1.1",
                Some("shared address space (CGNAT), 100.64.0.0/10"),
            ),
            ("::ffff:0.0.0.0", Some("unspecified")),
            ("::ffff:7f00:1", Some("loopback")),
            ("::ffff:8.8.8.8", None),
        ] {
            assert_eq!(range(ip), name, "{ip}");
        }
    }

    #[test]
    fn urls_with_denied_ip_literals_are_refused_and_host_names_left_to_the_resolver() {
        let check = |u: &str| check_url(&url::Url::parse(u).expect("a URL"));
        for u in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "https://10.0.0.1/",
        ] {
            let refused = check(u).expect_err(u).to_string();
            assert!(refused.contains("is in a denied range"), "{u}: {refused}");
        }
        assert!(check("https://8.8.8.8/hook").is_ok());
        assert!(check("https://hooks.example/roster").is_ok());
        assert!(
            check("http://localhost:9/").is_ok(),
            "a name: resolved later"
        );
    }

    #[test]
    fn resolved_addresses_are_filtered_and_refused_when_none_remain() {
        let addr = |s: &str| -> SocketAddr { s.parse().expect("a socket address") };
        let allowed = allowed_addresses(
            "mixed.example",
            vec![addr("10.0.0.1:0"), addr("93.184.215.14:0"), addr("[::1]:0")],
        )
        .expect("one public address remains");
        assert_eq!(allowed, vec![addr("93.184.215.14:0")]);
        let refused = allowed_addresses("localhost", vec![addr("127.0.0.1:0"), addr("[::1]:0")])
            .expect_err("only loopback")
            .to_string();
        assert_eq!(
            refused,
            "the receiver's host localhost resolves only to addresses in denied ranges: \
             127.0.0.1 (loopback), ::1 (loopback); roster delivers only to public addresses \
             unless --webhook-allow-private-networks is set"
        );
    }
}
