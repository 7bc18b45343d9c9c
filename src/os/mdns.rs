//! mDNS: the box announces itself as `<mdns.hostname>.local` (A/AAAA records
//! of its LAN addresses) and an `_http._tcp` service on the HTTP port, through
//! Avahi's D-Bus API (`org.freedesktop.Avahi.Server.EntryGroupNew`, then
//! `EntryGroup.AddAddress` / `AddService` / `Commit`).
//!
//! The `mdns` worker (auxiliary) keeps that true: it publishes again when
//! Avahi restarts (`NameOwnerChanged` of `org.freedesktop.Avahi`), when Avahi's
//! server comes back to `RUNNING` after a host-name change, and when the LAN
//! addresses change (checked every [`ADDRESS_POLL`]); on a name collision
//! (`EntryGroup.StateChanged` to `COLLISION`) it renames with a suffix:
//! `arasul-2`, `arasul-3`, … Without Avahi on the bus it logs one line and
//! waits for it to appear; without a bus at all it logs one line and ends.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// Avahi's well-known name on the system bus.
pub const AVAHI_NAME: &str = "org.freedesktop.Avahi";
/// How often the LAN addresses are compared with what is published.
pub const ADDRESS_POLL: Duration = Duration::from_secs(30);
/// Wait before publishing again after Avahi reported `FAILURE` for the group.
const FAILURE_RETRY: Duration = Duration::from_secs(5);
/// Suffixes tried on collisions before giving up (`arasul-2` … `arasul-100`).
const MAX_SUFFIX: u32 = 100;

// Avahi's constants (avahi-common/defs.h).
const IF_UNSPEC: i32 = -1;
const PROTO_UNSPEC: i32 = -1;
const PROTO_INET: i32 = 0;
const PROTO_INET6: i32 = 1;
/// `AVAHI_PUBLISH_NO_REVERSE`: no PTR record, which would collide with the
/// reverse record Avahi already publishes for the host's own name.
const PUBLISH_NO_REVERSE: u32 = 16;
const SERVER_REGISTERING: i32 = 1;
const SERVER_RUNNING: i32 = 2;
const SERVER_COLLISION: i32 = 3;
const GROUP_ESTABLISHED: i32 = 2;
const GROUP_COLLISION: i32 = 3;
const GROUP_FAILURE: i32 = 4;

/// The `mdns:` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdnsConfig {
    /// Publish at all.
    pub enabled: bool,
    /// The host label: `arasul` publishes `arasul.local`. One RFC 1123 label.
    pub hostname: String,
    /// D-Bus address of the bus Avahi is on; unset: the system bus.
    pub bus_address: Option<String>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            hostname: "arasul".into(),
            bus_address: None,
        }
    }
}

impl MdnsConfig {
    /// `(key, message)` for each problem, keys prefixed `mdns.`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !is_label(&self.hostname) {
            out.push((
                "mdns.hostname".into(),
                "must be one RFC 1123 label (1-63 letters, digits and hyphens, no dots, \
                 not starting or ending with a hyphen)"
                    .into(),
            ));
        }
        if let Some(a) = &self.bus_address
            && a.parse::<zbus::Address>().is_err()
        {
            out.push((
                "mdns.bus_address".into(),
                format!("not a D-Bus address: {a}"),
            ));
        }
        out
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The label for attempt `n` (0-based): `arasul`, `arasul-2`, `arasul-3`, …
/// The suffix shortens the base so the label stays within 63 bytes.
pub fn candidate_name(base: &str, n: u32) -> String {
    if n == 0 {
        return base.to_owned();
    }
    let suffix = format!("-{}", n + 1);
    let keep = base.len().min(63 - suffix.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

/// One address to publish, on the interface (index) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LanAddress {
    pub interface: i32,
    pub address: IpAddr,
}

/// Where the addresses come from: [`lan_addresses`] in the daemon; tests
/// hand in the addresses of the network namespace their Avahi runs in.
pub type AddressSource = Arc<dyn Fn() -> Vec<LanAddress> + Send + Sync>;

/// What has been published, for the API and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// `arasul.local` (or the suffixed name), once Avahi established it.
    pub host: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// How many times the records were (re)published and established.
    pub generation: u64,
}

/// The addresses of this machine worth announcing on the LAN: interfaces that
/// are up, not loopback, multicast-capable and not Docker's own bridges
/// (`docker*`, `br-*`, `veth*`); IPv4 and non-link-local IPv6.
pub fn lan_addresses() -> Vec<LanAddress> {
    let mut out = BTreeSet::new();
    for a in crate::net::interface_addresses() {
        if !a.is_up() || a.is_loopback() || !a.is_multicast() {
            continue;
        }
        if ["docker", "br-", "veth"]
            .iter()
            .any(|p| a.name.starts_with(p))
        {
            continue;
        }
        if let IpAddr::V6(v6) = a.address
            && v6.segments()[0] & 0xffc0 == 0xfe80
        {
            continue;
        }
        let Some(index) = interface_index(&a.name) else {
            continue;
        };
        out.insert(LanAddress {
            interface: index as i32,
            address: a.address,
        });
    }
    out.into_iter().collect()
}

/// `if_nametoindex(3)` as glibc does it: SIOCGIFINDEX on a throwaway socket
/// (never bound or connected).
fn interface_index(name: &str) -> Option<u32> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    rustix::net::netdevice::name_to_index(&fd, name)
        .ok()
        .filter(|&i| i != 0)
}

/// Avahi's D-Bus interfaces (one module each: both have a `StateChanged`).
mod server {
    use zbus::OwnedObjectPath;

    #[zbus::proxy(
        interface = "org.freedesktop.Avahi.Server",
        default_service = "org.freedesktop.Avahi",
        default_path = "/"
    )]
    pub trait AvahiServer {
        fn entry_group_new(&self) -> zbus::Result<OwnedObjectPath>;
        fn get_state(&self) -> zbus::Result<i32>;
        #[zbus(signal)]
        fn state_changed(&self, state: i32, error: String) -> zbus::Result<()>;
    }
}

/// Avahi's D-Bus interfaces (one module each: both have a `StateChanged`).
mod group {
    #[zbus::proxy(
        interface = "org.freedesktop.Avahi.EntryGroup",
        default_service = "org.freedesktop.Avahi"
    )]
    pub trait AvahiEntryGroup {
        fn add_address(
            &self,
            interface: i32,
            protocol: i32,
            flags: u32,
            name: &str,
            address: &str,
        ) -> zbus::Result<()>;
        #[allow(clippy::too_many_arguments)]
        fn add_service(
            &self,
            interface: i32,
            protocol: i32,
            flags: u32,
            name: &str,
            service_type: &str,
            domain: &str,
            host: &str,
            port: u16,
            txt: Vec<Vec<u8>>,
        ) -> zbus::Result<()>;
        fn commit(&self) -> zbus::Result<()>;
        fn reset(&self) -> zbus::Result<()>;
        fn free(&self) -> zbus::Result<()>;
        #[zbus(signal)]
        fn state_changed(&self, state: i32, error: String) -> zbus::Result<()>;
    }
}

use group::AvahiEntryGroupProxy;
use server::AvahiServerProxy;

/// Everything the worker needs; cheap to clone for each run.
#[derive(Clone)]
pub struct MdnsDeps {
    pub config: MdnsConfig,
    /// The HTTP port announced in the `_http._tcp` record.
    pub http_port: u16,
    pub addresses: AddressSource,
    /// How often the addresses are compared ([`ADDRESS_POLL`]; tests shorten it).
    pub address_poll: Duration,
    pub published: watch::Sender<Published>,
    /// The running config: a new `mdns.hostname` is published at once (the
    /// old name withdrawn). None: the name of `config` for good.
    pub live: Option<watch::Receiver<Arc<crate::config::Config>>>,
}

impl MdnsDeps {
    pub fn new(config: MdnsConfig, http_port: u16) -> Self {
        MdnsDeps {
            live: None,
            config,
            http_port,
            addresses: Arc::new(lan_addresses),
            address_poll: ADDRESS_POLL,
            published: watch::Sender::new(Published::default()),
        }
    }
}

/// Spawns the `mdns` worker; the receiver follows what it has published.
pub fn spawn(workers: &Workers, deps: MdnsDeps) -> watch::Receiver<Published> {
    let published = deps.published.subscribe();
    workers.spawn(WorkerName::Mdns, WorkerKind::Auxiliary, move |ctx| {
        run(ctx, deps.clone())
    });
    published
}

/// The `mdns` worker: connects to the bus and publishes for as long as the
/// daemon runs. Returns `Ok` (the worker finishes) only when mDNS is off or
/// the bus cannot be reached; D-Bus errors while publishing are returned so
/// the worker is restarted with backoff.
async fn run(ctx: WorkerCtx, mut deps: MdnsDeps) -> anyhow::Result<()> {
    if let Some(live) = &deps.live {
        deps.config.hostname = live.borrow().mdns.hostname.clone();
    }
    if !deps.config.enabled {
        tracing::info!("mDNS is off (mdns.enabled: false)");
        return Ok(());
    }
    let conn = match connect(&deps.config).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %format!("{e:#}"), "mDNS off: no D-Bus bus to reach Avahi on");
            return Ok(());
        }
    };
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, AVAHI_NAME)])
        .await?;
    let mut present = dbus
        .name_has_owner(AVAHI_NAME.try_into().expect("valid bus name"))
        .await?;
    if !present {
        tracing::info!(
            "mDNS: Avahi is not running; {}.local is not published until it starts",
            deps.config.hostname
        );
    }
    loop {
        ctx.beat();
        if present {
            let outcome = tokio::select! {
                r = publish_while_present(&ctx, &conn, &mut deps, &mut owners) => r?,
                _ = ctx.cancel.cancelled() => return Ok(()),
            };
            let Some(again) = outcome else {
                return Ok(());
            };
            deps.published.send_modify(|p| {
                p.host = None;
                p.addresses.clear();
            });
            if again {
                tracing::info!("mDNS: Avahi was replaced; publishing again");
                continue;
            }
            tracing::warn!("mDNS: Avahi left the bus; publishing again when it returns");
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            sig = owners.next() => {
                let Some(sig) = sig else { anyhow::bail!("the D-Bus connection closed") };
                let args = sig.args().context("NameOwnerChanged arguments")?;
                present = args.new_owner().is_some();
            }
        }
    }
}

async fn connect(config: &MdnsConfig) -> anyhow::Result<zbus::Connection> {
    match &config.bus_address {
        Some(a) => zbus::connection::Builder::address(a.as_str())
            .build()
            .await
            .with_context(|| format!("connecting to {a}")),
        None => zbus::Connection::system()
            .await
            .context("connecting to the system bus"),
    }
}

/// Publishes and keeps the records up while this Avahi instance lives.
/// Returns `Ok(Some(present))` when this instance left the bus (`present`:
/// a new one already owns the name), `Ok(None)` when cancelled.
async fn publish_while_present(
    ctx: &WorkerCtx,
    conn: &zbus::Connection,
    deps: &mut MdnsDeps,
    owners: &mut zbus::fdo::NameOwnerChangedStream,
) -> anyhow::Result<Option<bool>> {
    let mut live = deps.live.clone();
    let server = AvahiServerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut server_states = server.receive_state_changed().await?;
    let path = server
        .entry_group_new()
        .await
        .context("Avahi EntryGroupNew")?;
    let group = AvahiEntryGroupProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    // Subscribed before the first Commit so no state change is missed.
    let mut group_states = group.receive_state_changed().await?;
    let result = async {
        let mut attempt = 0u32;
        let mut addresses = (deps.addresses)();
        // A server that is not RUNNING (still registering its own host name)
        // would refuse the records; wait for its StateChanged instead.
        let mut committed = false;
        if server.get_state().await? == SERVER_RUNNING {
            add_and_commit(&group, deps, &mut attempt, &addresses).await?;
            committed = true;
        }
        let mut poll = tokio::time::interval(deps.address_poll);
        poll.tick().await;
        loop {
            ctx.beat();
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(None),
                sig = owners.next() => {
                    let Some(sig) = sig else { anyhow::bail!("the D-Bus connection closed") };
                    let args = sig.args().context("NameOwnerChanged arguments")?;
                    // Our group belonged to the instance that left (or was
                    // replaced); say whether a new one is already there.
                    return Ok(Some(args.new_owner().is_some()));
                }
                sig = group_states.next() => {
                    let Some(sig) = sig else { anyhow::bail!("the D-Bus connection closed") };
                    let args = sig.args().context("EntryGroup.StateChanged arguments")?;
                    let name = candidate_name(&deps.config.hostname, attempt);
                    match *args.state() {
                        GROUP_ESTABLISHED => {
                            let ips: Vec<IpAddr> = addresses.iter().map(|a| a.address).collect();
                            tracing::info!(
                                host = %format!("{name}.local"),
                                addresses = ?ips,
                                port = deps.http_port,
                                "mDNS: published the host name and the _http._tcp service"
                            );
                            deps.published.send_modify(|p| {
                                p.host = Some(format!("{name}.local"));
                                p.addresses = ips;
                                p.generation += 1;
                            });
                        }
                        GROUP_COLLISION => {
                            next_name(deps, &mut attempt, &name, "another host has it")?;
                            group.reset().await?;
                            add_and_commit(&group, deps, &mut attempt, &addresses).await?;
                        }
                        GROUP_FAILURE => {
                            tracing::warn!(error = %args.error(), "mDNS: Avahi failed to publish; retrying");
                            if !ctx.sleep(FAILURE_RETRY).await {
                                return Ok(None);
                            }
                            group.reset().await?;
                            add_and_commit(&group, deps, &mut attempt, &addresses).await?;
                        }
                        _ => {}
                    }
                }
                sig = server_states.next() => {
                    let Some(sig) = sig else { anyhow::bail!("the D-Bus connection closed") };
                    let args = sig.args().context("Server.StateChanged arguments")?;
                    match *args.state() {
                        SERVER_RUNNING if !committed => {
                            add_and_commit(&group, deps, &mut attempt, &addresses).await?;
                            committed = true;
                        }
                        SERVER_COLLISION | SERVER_REGISTERING if committed => {
                            // Avahi renames its own host; the records go
                            // again once it is RUNNING.
                            group.reset().await?;
                            committed = false;
                        }
                        _ => {}
                    }
                }
                renamed = hostname_change(&mut live, &deps.config.hostname) => {
                    let old = std::mem::replace(&mut deps.config.hostname, renamed);
                    tracing::info!(old = %format!("{old}.local"), new = %format!("{}.local", deps.config.hostname), "mDNS: the box was renamed; publishing the new name");
                    attempt = 0;
                    deps.published.send_modify(|p| {
                        p.host = None;
                        p.addresses.clear();
                    });
                    if committed {
                        group.reset().await?;
                        add_and_commit(&group, deps, &mut attempt, &addresses).await?;
                    }
                }
                _ = poll.tick() => {
                    let now = (deps.addresses)();
                    if now != addresses {
                        tracing::info!(old = ?addresses, new = ?now, "mDNS: LAN addresses changed; publishing again");
                        addresses = now;
                        if committed {
                            group.reset().await?;
                            add_and_commit(&group, deps, &mut attempt, &addresses).await?;
                        }
                    }
                }
            }
        }
    }
    .await;
    if matches!(result, Ok(None)) {
        // Shutdown: withdraw the records (Avahi sends goodbye packets).
        let _ = group.free().await;
    }
    result
}

/// Waits until the running config names another host than `current`
/// (forever without a running config).
async fn hostname_change(
    live: &mut Option<watch::Receiver<Arc<crate::config::Config>>>,
    current: &str,
) -> String {
    let Some(rx) = live else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let name = rx.borrow_and_update().mdns.hostname.clone();
        if name != current {
            return name;
        }
    }
}

/// Adds the records under the name of `*attempt` and commits. A name Avahi
/// already holds for another client (a collision error at add time) is
/// the same as a collision on the network: reset, next suffix, again.
async fn add_and_commit(
    group: &AvahiEntryGroupProxy<'_>,
    deps: &MdnsDeps,
    attempt: &mut u32,
    addresses: &[LanAddress],
) -> anyhow::Result<()> {
    loop {
        match add_named(group, deps, *attempt, addresses).await {
            Ok(()) => return Ok(()),
            Err(AddError::LocalCollision(what)) => {
                let taken = candidate_name(&deps.config.hostname, *attempt);
                next_name(deps, attempt, &taken, &what)?;
                group.reset().await.context("Avahi Reset")?;
            }
            Err(AddError::Other(e)) => return Err(e),
        }
    }
}

/// Moves to the next suffix, logging why; an error after [`MAX_SUFFIX`].
fn next_name(deps: &MdnsDeps, attempt: &mut u32, taken: &str, why: &str) -> anyhow::Result<()> {
    *attempt += 1;
    if *attempt >= MAX_SUFFIX {
        anyhow::bail!("mDNS: {MAX_SUFFIX} names in a row collided");
    }
    let next = candidate_name(&deps.config.hostname, *attempt);
    tracing::warn!(
        taken = %format!("{taken}.local"),
        next = %format!("{next}.local"),
        why,
        "mDNS: name collision; renaming"
    );
    Ok(())
}

enum AddError {
    LocalCollision(String),
    Other(anyhow::Error),
}

fn classify(e: zbus::Error, what: String) -> AddError {
    if let zbus::Error::MethodError(name, _, _) = &e
        && matches!(
            name.as_str(),
            // What avahi-daemon 0.8 answers for AVAHI_ERR_LOCAL_COLLISION
            // (checked against the real daemon in tests/mdns.rs), and the
            // name of the error constant for other versions.
            "org.freedesktop.Avahi.CollisionError" | "org.freedesktop.Avahi.LocalCollisionError"
        )
    {
        return AddError::LocalCollision(what);
    }
    AddError::Other(anyhow::Error::from(e).context(what))
}

async fn add_named(
    group: &AvahiEntryGroupProxy<'_>,
    deps: &MdnsDeps,
    attempt: u32,
    addresses: &[LanAddress],
) -> Result<(), AddError> {
    let name = candidate_name(&deps.config.hostname, attempt);
    let host = format!("{name}.local");
    for a in addresses {
        let protocol = if a.address.is_ipv4() {
            PROTO_INET
        } else {
            PROTO_INET6
        };
        group
            .add_address(
                a.interface,
                protocol,
                PUBLISH_NO_REVERSE,
                &host,
                &a.address.to_string(),
            )
            .await
            .map_err(|e| classify(e, format!("Avahi AddAddress {host} {}", a.address)))?;
    }
    group
        .add_service(
            IF_UNSPEC,
            PROTO_UNSPEC,
            0,
            &name,
            "_http._tcp",
            "",
            &host,
            deps.http_port,
            vec![b"path=/".to_vec()],
        )
        .await
        .map_err(|e| classify(e, format!("Avahi AddService {name} _http._tcp")))?;
    group
        .commit()
        .await
        .map_err(|e| AddError::Other(anyhow::Error::from(e).context("Avahi Commit")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_a_numeric_suffix_and_stay_one_label() {
        assert_eq!(candidate_name("arasul", 0), "arasul");
        assert_eq!(candidate_name("arasul", 1), "arasul-2");
        assert_eq!(candidate_name("arasul", 9), "arasul-10");
        let long = "a".repeat(63);
        let n = candidate_name(&long, 1);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-2") && is_label(&n), "{n}");
    }

    #[test]
    fn config_validation_names_the_key() {
        assert!(MdnsConfig::default().validate().is_empty());
        for bad in ["", "arasul.local", "-x", "x-", "a_b", &"a".repeat(64)] {
            let c = MdnsConfig {
                hostname: bad.into(),
                ..MdnsConfig::default()
            };
            let errs = c.validate();
            assert_eq!(errs.len(), 1, "{bad:?}");
            assert_eq!(errs[0].0, "mdns.hostname");
        }
        let c = MdnsConfig {
            bus_address: Some("nonsense".into()),
            ..MdnsConfig::default()
        };
        assert_eq!(c.validate()[0].0, "mdns.bus_address");
    }

    #[test]
    fn lan_addresses_exclude_loopback() {
        for a in lan_addresses() {
            assert!(!a.address.is_loopback(), "{a:?}");
            assert!(a.interface > 0);
        }
    }
}
