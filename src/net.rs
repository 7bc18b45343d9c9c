//! Address arithmetic for the HTTP edge, with no HTTP types: CIDR ranges as
//! config values, the quotas of `http.rate_limits`, and how a client address
//! is keyed for throttling. Pure; the API layer and the login lockout both
//! use it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address range such as `127.0.0.0/8` or `fd00::/8`; a bare address is
/// a range of one. IPv4-mapped IPv6 clients match IPv4 ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range (e.g. 127.0.0.0/8)"))?;
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?}: the prefix length must be a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `ip` is in any of `ranges`.
pub fn any_contains(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

/// One quota of `http.rate_limits`: `count` requests per `per`, with bursts
/// of up to `burst` (the bucket refills one request every `per / count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    pub burst: u32,
}

impl RateQuota {
    pub const fn new(count: u32, per: Duration, burst: u32) -> Self {
        RateQuota { count, per, burst }
    }

    /// Time for one request to come back.
    pub fn replenish_every(&self) -> Duration {
        self.per / self.count.max(1)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.burst == 0 {
            return Err("count and burst must be at least 1".into());
        }
        if self.replenish_every().is_zero() {
            return Err("per / count must be at least 1 ns".into());
        }
        Ok(())
    }
}

/// SPEC §5's quotas, each a key of `http.rate_limits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// `POST /api/auth/login` with a well-formed body.
    pub login: RateQuota,
    /// `/api/llm/*`, `/api/embeddings`.
    pub llm: RateQuota,
    /// `/api/metrics/*`, `/metrics`.
    pub metrics: RateQuota,
    /// `/api/workflows/execution` (n8n's callbacks).
    pub webhook: RateQuota,
    /// Any other `/api/*`.
    pub api: RateQuota,
    /// Each API key, whatever address it comes from (on top of the above).
    pub api_key: RateQuota,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        RateLimitsConfig {
            login: RateQuota::new(5, s(15 * 60), 5),
            llm: RateQuota::new(10, s(1), 10),
            metrics: RateQuota::new(20, s(1), 20),
            webhook: RateQuota::new(100, s(60), 100),
            api: RateQuota::new(100, s(1), 50),
            api_key: RateQuota::new(20, s(1), 40),
        }
    }
}

impl RateLimitsConfig {
    /// (key, message) for each bad quota.
    pub fn validate(&self) -> Vec<(String, String)> {
        [
            ("login", &self.login),
            ("llm", &self.llm),
            ("metrics", &self.metrics),
            ("webhook", &self.webhook),
            ("api", &self.api),
            ("api_key", &self.api_key),
        ]
        .into_iter()
        .filter_map(|(k, q)| {
            q.validate()
                .err()
                .map(|m| (format!("http.rate_limits.{k}"), m))
        })
        .collect()
    }
}

/// How a client address is counted by the rate limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The full address.
    Host(IpAddr),
    /// A global IPv6 /64: the coarse extra bucket for hosts that can pick any
    /// address in their prefix.
    Prefix64(Ipv6Addr),
}

/// The keys a request from `ip` counts against: always its full address;
/// for a global IPv6 address off our own links, its /64 as well. Link-local,
/// unique-local and on-link clients are LAN hosts: SLAAC gives each of them
/// its own address in a shared /64, so keying by /64 would let one phone
/// throttle every other IPv6 client on the LAN.
pub fn rate_keys(ip: IpAddr, on_link: &[Cidr]) -> (RateKey, Option<RateKey>) {
    let ip = ip.to_canonical();
    let host = RateKey::Host(ip);
    let IpAddr::V6(v6) = ip else {
        return (host, None);
    };
    let seg0 = v6.segments()[0];
    let link_local = seg0 & 0xffc0 == 0xfe80;
    let unique_local = seg0 & 0xfe00 == 0xfc00;
    if link_local || unique_local || v6.is_loopback() || any_contains(on_link, ip) {
        return (host, None);
    }
    let IpAddr::V6(prefix) = mask(ip, 64) else {
        unreachable!("masking keeps the family")
    };
    (host, Some(RateKey::Prefix64(prefix)))
}

/// A client's address as the request carried it: the peer, or, when the peer
/// is one of `trusted_proxies`, the right-most `X-Forwarded-For` entry that is
/// not itself a trusted proxy. A malformed header leaves the peer.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !any_contains(trusted, peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut hops = Vec::new();
    for part in header.split(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => hops.push(ip.to_canonical()),
            Err(_) => return peer,
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !any_contains(trusted, *ip))
        .unwrap_or(peer)
}

/// One address of a local interface, as `getifaddrs(3)` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub name: String,
    /// `IFF_*` flags of the interface.
    pub flags: u32,
    pub address: IpAddr,
    /// The on-link prefix (address and netmask), when the kernel gave a mask.
    pub prefix: Option<Cidr>,
}

impl InterfaceAddress {
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }
    pub fn is_multicast(&self) -> bool {
        self.flags & libc::IFF_MULTICAST as u32 != 0
    }
}

/// Every IPv4/IPv6 address of every interface, in the kernel's order. The
/// one walker of `getifaddrs` (metrics, mDNS and the rate limiter use it);
/// an error gives an empty list.
pub fn interface_addresses() -> Vec<InterfaceAddress> {
    crate::os::sys::getifaddrs()
        .into_iter()
        .map(|a| {
            let prefix = a.netmask.and_then(|m| {
                let ones = match m {
                    IpAddr::V4(v4) => u32::from(v4).leading_ones(),
                    IpAddr::V6(v6) => u128::from(v6).leading_ones(),
                };
                Cidr::new(a.address, ones as u8).ok()
            });
            InterfaceAddress {
                name: a.name,
                flags: a.flags,
                address: a.address,
                prefix,
            }
        })
        .collect()
}

/// The prefixes of this machine's non-loopback IPv6 links: a client inside
/// one is a LAN host (see [`rate_keys`]).
pub fn on_link_ipv6_prefixes() -> Vec<Cidr> {
    let mut v: Vec<Cidr> = interface_addresses()
        .into_iter()
        .filter(|a| a.address.is_ipv6() && !a.is_loopback())
        .filter_map(|a| a.prefix)
        .collect();
    v.sort_by_key(|c| c.to_string());
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parses_masks_and_matches() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.4.5.6")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        let net: Cidr = "192.168.1.77/24".parse().unwrap();
        assert_eq!(net.to_string(), "192.168.1.0/24");
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lan_ipv6_clients_are_keyed_by_their_full_address() {
        let on_link = ["2001:db8:aa:bb::/64".parse().unwrap()];
        for lan in ["fe80::1234", "fd00:1:2:3::9", "2001:db8:aa:bb::42", "::1"] {
            assert_eq!(
                rate_keys(ip(lan), &on_link),
                (RateKey::Host(ip(lan)), None),
                "{lan}"
            );
        }
        let (host, prefix) = rate_keys(ip("2001:db8:1:2:3:4:5:6"), &on_link);
        assert_eq!(host, RateKey::Host(ip("2001:db8:1:2:3:4:5:6")));
        assert_eq!(
            prefix,
            Some(RateKey::Prefix64("2001:db8:1:2::".parse().unwrap()))
        );
        assert_eq!(
            rate_keys(ip("::ffff:192.0.2.1"), &[]),
            (RateKey::Host(ip("192.0.2.1")), None)
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = Some("203.0.113.9, 10.1.1.1");
        assert_eq!(
            client_address(ip("192.0.2.5"), xff, &trusted),
            ip("192.0.2.5")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), xff, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), None, &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), Some("junk"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_address(ip("10.0.0.2"), xff, &[]), ip("10.0.0.2"));
    }

    #[test]
    fn quotas_validate_and_default_to_spec() {
        let d = RateLimitsConfig::default();
        assert_eq!(d.login.replenish_every(), Duration::from_secs(180));
        assert!(d.validate().is_empty());
        let bad = RateLimitsConfig {
            api: RateQuota::new(0, Duration::from_secs(1), 5),
            ..d
        };
        assert_eq!(bad.validate()[0].0, "http.rate_limits.api");
    }

    #[test]
    fn this_machine_has_a_loopback_address_with_its_prefix() {
        let all = interface_addresses();
        let lo = all
            .iter()
            .find(|a| a.address == ip("127.0.0.1"))
            .expect("127.0.0.1 on some interface");
        assert!(lo.is_loopback() && lo.is_up());
        assert_eq!(lo.prefix, Some("127.0.0.0/8".parse().unwrap()));
        assert!(
            on_link_ipv6_prefixes()
                .iter()
                .all(|p| !p.contains(ip("::1")))
        );
    }
}
