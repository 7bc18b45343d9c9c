//! Non-loopback IPv4/IPv6 addresses per interface, from `getifaddrs(3)`.
//! Not a pure function of bytes (the kernel answers over netlink), so it is
//! kept apart from `Probe` and tested only for its shape.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetInterface {
    pub name: String,
    /// IPv4 first, then IPv6. Link-local IPv6 carries its zone (`fe80::1%eth0`),
    /// without which it cannot be reached.
    pub addresses: Vec<String>,
}

/// Every interface that has at least one non-loopback address, sorted by name.
/// An error from `getifaddrs` gives an empty list.
pub fn network_interfaces() -> Vec<NetInterface> {
    group_by_interface(
        crate::net::interface_addresses()
            .into_iter()
            .filter(|a| !a.is_loopback())
            .map(|a| (a.name, a.address)),
    )
}

/// Groups addresses by interface, drops loopback addresses, sorts.
fn group_by_interface(raw: impl IntoIterator<Item = (String, IpAddr)>) -> Vec<NetInterface> {
    let mut by_name: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (name, ip) in raw {
        if !ip.is_loopback() {
            by_name.entry(name).or_default().push(ip);
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut ips)| {
            ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            ips.dedup();
            let addresses = ips
                .into_iter()
                .map(|ip| match ip {
                    IpAddr::V6(v6) if v6.is_unicast_link_local() => format!("{v6}%{name}"),
                    other => other.to_string(),
                })
                .collect();
            NetInterface { name, addresses }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_grouped_per_interface_without_loopback() {
        let raw = [
            ("eth0".to_string(), "fe80::1".parse().unwrap()),
            ("eth0".to_string(), "192.168.1.20".parse().unwrap()),
            ("lo".to_string(), "127.0.0.1".parse().unwrap()),
            ("lo".to_string(), "::1".parse().unwrap()),
            ("wlan0".to_string(), "2001:db8::5".parse().unwrap()),
        ];
        let got = group_by_interface(raw);
        assert_eq!(
            got,
            vec![
                NetInterface {
                    name: "eth0".into(),
                    addresses: vec!["192.168.1.20".into(), "fe80::1%eth0".into()],
                },
                NetInterface {
                    name: "wlan0".into(),
                    addresses: vec!["2001:db8::5".into()],
                },
            ]
        );
    }

    #[test]
    fn this_machine_lists_no_loopback_interface() {
        let ifaces = network_interfaces();
        assert!(
            ifaces
                .iter()
                .all(|i| i.name != "lo" && !i.addresses.is_empty())
        );
        assert!(
            ifaces
                .iter()
                .flat_map(|i| &i.addresses)
                .all(|a| a != "127.0.0.1" && a != "::1")
        );
    }
}
