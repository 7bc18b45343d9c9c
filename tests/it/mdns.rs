//! mDNS against a real `avahi-daemon`: each test runs its own dbus-daemon
//! (`tests/it/common/dbus.rs`, standing in for the system bus) and Avahi inside a private
//! network namespace (`unshare -nm`, a veth pair `d0`/`d1` with 192.0.2.1,
//! a tmpfs over /run for Avahi's pid file), so nothing reaches the real
//! network and no other Avahi is disturbed. The `mdns` worker is the
//! daemon's own code; what it published is checked by asking Avahi to
//! resolve the name and the service. Needs root (namespaces), `avahi-daemon`,
//! `dbus-daemon` and `ip`; a missing one fails the test.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::common;

use common::dbus::PrivateBus as Bus;

use arasuld::os::mdns::{self, LanAddress, MdnsConfig, MdnsDeps, Published};
use arasuld::tasks::{RestartPolicy, Workers};
use tokio::sync::watch;

const AVAHI_ADDR: &str = "192.0.2.1";
const HTTP_PORT: u16 = 8080;
const DEADLINE: Duration = Duration::from_secs(30);

/// A real avahi-daemon in its own network namespace, on `bus`.
struct Avahi {
    child: Child,
    log: PathBuf,
    /// Index of `d0` inside Avahi's namespace (what AddAddress must name).
    ifindex: i32,
}

impl Avahi {
    /// Avahi on the test bus, alone on its link.
    /// `ifindex` is set before avahi-daemon starts, so a worker already
    /// waiting for Avahi reads the right interface.
    fn start(bus: &Bus, dir: &Path, n: u32, ifindex: &AtomicI32) -> Avahi {
        Avahi::spawn(Some(bus), dir, n, Peer::None, ifindex)
    }

    /// Another box on the same link: its own namespace at the other end of
    /// the veth pair, host name `host`, 192.0.2.2, no D-Bus. Start it first;
    /// [`Avahi::start_linked`] then moves `d1` into its namespace, and the
    /// box's Avahi starts.
    fn start_other_box(dir: &Path, host: &str) -> Avahi {
        Avahi::spawn(
            None,
            dir,
            100,
            Peer::Await(host.to_owned()),
            &AtomicI32::new(0),
        )
    }

    /// Avahi on the test bus, linked to the box of [`Avahi::start_other_box`].
    fn start_linked(bus: &Bus, dir: &Path, n: u32, ifindex: &AtomicI32) -> Avahi {
        Avahi::spawn(Some(bus), dir, n, Peer::MoveTo, ifindex)
    }

    fn spawn(bus: Option<&Bus>, dir: &Path, n: u32, peer: Peer, ifindex: &AtomicI32) -> Avahi {
        let conf = dir.join(format!("avahi-{n}.conf"));
        let (host, iface, enable_dbus) = match &peer {
            Peer::Await(host) => (host.as_str(), "d1", "no"),
            _ => ("testbox", "d0", "yes"),
        };
        std::fs::write(
            &conf,
            format!(
                "[server]\nhost-name={host}\ndomain-name=local\nuse-ipv4=yes\nuse-ipv6=no\n\
                 allow-interfaces={iface}\nenable-dbus={enable_dbus}\n\
                 ratelimit-interval-usec=1000000\nratelimit-burst=1000\n\
                 [wide-area]\nenable-wide-area=no\n[publish]\npublish-addresses=yes\n\
                 publish-hinfo=no\npublish-workstation=no\n"
            ),
        )
        .unwrap();
        let ifindex_file = dir.join(format!("ifindex-{n}"));
        let go = dir.join(format!("go-{n}"));
        let peer_pid = dir.join("peer.pid");
        let log = dir.join(format!("avahi-{n}.log"));
        let link = match peer {
            Peer::None => format!(
                "ip link add d0 type veth peer name d1
ip link set d1 up
ip link set d0 multicast on up
ip addr add {AVAHI_ADDR}/24 dev d0"
            ),
            Peer::MoveTo => format!(
                "ip link add d0 type veth peer name d1
ip link set d1 netns \"$(cat {pid})\"
ip link set d0 multicast on up
ip addr add {AVAHI_ADDR}/24 dev d0",
                pid = peer_pid.display()
            ),
            Peer::Await(_) => format!(
                "echo $$ > {pid}.tmp && mv {pid}.tmp {pid}
while ! ip link show d1 >/dev/null 2>&1; do sleep 0.05; done
ip link set d1 multicast on up
ip addr add 192.0.2.2/24 dev d1",
                pid = peer_pid.display()
            ),
        };
        let script = format!(
            "set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/avahi-daemon
ip link set lo up
{link}
ip -o link show {iface} | cut -d: -f1 > {ifindex}.tmp && mv {ifindex}.tmp {ifindex}
while [ ! -e {go} ]; do sleep 0.02; done
exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --debug",
            ifindex = ifindex_file.display(),
            go = go.display(),
            conf = conf.display(),
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-nm", "sh", "-c", &script])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        if let Some(bus) = bus {
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", bus.address());
        }
        let child = cmd.spawn().expect("unshare (util-linux) must be installed");
        let mut avahi = Avahi {
            child,
            log,
            ifindex: 0,
        };
        let awaiting = matches!(peer, Peer::Await(_));
        let ready = if awaiting { peer_pid } else { ifindex_file };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(s) = std::fs::read_to_string(&ready)
                && let Ok(i) = s.trim().parse::<i32>()
            {
                if !awaiting {
                    avahi.ifindex = i;
                    ifindex.store(i, Ordering::SeqCst);
                }
                break;
            }
            if let Ok(Some(status)) = avahi.child.try_wait() {
                panic!(
                    "avahi-daemon's namespace set-up failed ({status}); this test needs root, \
                     avahi-daemon and iproute2:\n{}",
                    avahi.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {}:\n{}",
                ready.display(),
                avahi.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(&go, "").unwrap();
        avahi
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "avahi-daemon never logged {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in [self.log.clone(), self.log.with_extension("err")] {
            if let Ok(mut f) = std::fs::File::open(&p) {
                let _ = f.read_to_string(&mut out);
            }
        }
        out
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Avahi {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Peer {
    /// Alone on the link (`d1` stays, unused, in the same namespace).
    None,
    /// Moves `d1` into the namespace of the process in `peer.pid`.
    MoveTo,
    /// Is that process: writes `peer.pid`, waits for `d1`, host name given.
    Await(String),
}

/// The parts of Avahi's API the test uses to check what was published.
#[zbus::proxy(
    interface = "org.freedesktop.Avahi.Server",
    default_service = "org.freedesktop.Avahi",
    default_path = "/"
)]
trait Server {
    fn get_state(&self) -> zbus::Result<i32>;
    fn entry_group_new(&self) -> zbus::Result<zbus::OwnedObjectPath>;
    #[allow(clippy::type_complexity)]
    fn resolve_host_name(
        &self,
        interface: i32,
        protocol: i32,
        name: &str,
        aprotocol: i32,
        flags: u32,
    ) -> zbus::Result<(i32, i32, String, i32, String, u32)>;
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn resolve_service(
        &self,
        interface: i32,
        protocol: i32,
        name: &str,
        service_type: &str,
        domain: &str,
        aprotocol: i32,
        flags: u32,
    ) -> zbus::Result<(
        i32,
        i32,
        String,
        String,
        String,
        String,
        i32,
        String,
        u16,
        Vec<Vec<u8>>,
        u32,
    )>;
}

#[zbus::proxy(
    interface = "org.freedesktop.Avahi.EntryGroup",
    default_service = "org.freedesktop.Avahi"
)]
trait Group {
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
    fn get_state(&self) -> zbus::Result<i32>;
}

async fn connect(bus: &Bus) -> zbus::Connection {
    bus.connect().await
}

async fn wait_running(conn: &zbus::Connection, avahi: &Avahi) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(p) = ServerProxy::new(conn).await
            && p.get_state().await.ok() == Some(2)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "avahi-daemon did not reach RUNNING:\n{}",
            avahi.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the worker reports `pred`, then returns that state.
async fn wait_published(
    rx: &mut watch::Receiver<Published>,
    what: &str,
    pred: impl Fn(&Published) -> bool,
) -> Published {
    let r = tokio::time::timeout(DEADLINE, rx.wait_for(|p| pred(p)))
        .await
        .ok()
        .and_then(|r| r.ok().map(|p| p.clone()));
    r.unwrap_or_else(|| panic!("timed out waiting for {what}; last: {:?}", *rx.borrow()))
}

/// Asks Avahi (its resolver, over the bus) for the host and the service.
/// mDNS is lossy by design: a query that Avahi reports as timed out (5 s) is
/// asked again until [`DEADLINE`]; any other error fails at once.
async fn resolves(conn: &zbus::Connection, label: &str) -> (String, u16, String) {
    let p = ServerProxy::new(conn).await.unwrap();
    let host = format!("{label}.local");
    let (_, _, name, _, address, _) =
        retry_timeouts(&host, || p.resolve_host_name(-1, 0, &host, 0, 0)).await;
    assert_eq!(name, host);
    let (_, _, sname, stype, _, shost, _, _, port, _, _) = retry_timeouts(&host, || {
        p.resolve_service(-1, 0, label, "_http._tcp", "local", 0, 0)
    })
    .await;
    assert_eq!((sname.as_str(), stype.as_str()), (label, "_http._tcp"));
    (address, port, shost)
}

async fn retry_timeouts<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = zbus::Result<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.Avahi.TimeoutError"
                    && Instant::now() < deadline => {}
            Err(e) => panic!("Avahi cannot resolve {what}: {e}"),
        }
    }
}

/// The worker on `bus`, announcing 192.0.2.1 on the interface whose index
/// `ifindex` holds when it asks (Avahi may start after the worker).
fn start_worker(bus: &Bus, ifindex: Arc<AtomicI32>) -> (Workers, watch::Receiver<Published>) {
    start_worker_live(bus, ifindex, None)
}

/// Like [`start_worker`], following `live` (the running config) for renames.
fn start_worker_live(
    bus: &Bus,
    ifindex: Arc<AtomicI32>,
    live: Option<watch::Receiver<Arc<arasuld::config::Config>>>,
) -> (Workers, watch::Receiver<Published>) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let config = MdnsConfig {
        bus_address: Some(bus.address().to_owned()),
        ..MdnsConfig::default()
    };
    let mut deps = MdnsDeps::new(config, HTTP_PORT);
    deps.live = live;
    let addr: IpAddr = AVAHI_ADDR.parse().unwrap();
    deps.addresses = Arc::new(move || {
        vec![LanAddress {
            interface: ifindex.load(Ordering::SeqCst),
            address: addr,
        }]
    });
    let workers = Workers::new(RestartPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
    let rx = mdns::spawn(&workers, deps);
    (workers, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_arasul_local_and_http_service_again_after_avahi_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start();
    let conn = connect(&bus).await;

    // Avahi absent at first: the worker logs that and waits; it publishes
    // as soon as Avahi appears on the bus.
    let ifindex = Arc::new(AtomicI32::new(0));
    let (config_tx, config_rx) = watch::channel(Arc::new(arasuld::config::Config::default()));
    let (workers, mut rx) = start_worker_live(&bus, ifindex.clone(), Some(config_rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.borrow().host, None);
    let mut avahi = Avahi::start(&bus, dir.path(), 1, &ifindex);
    wait_running(&conn, &avahi).await;
    let first = wait_published(&mut rx, "arasul.local", |p| {
        p.host.as_deref() == Some("arasul.local")
    })
    .await;
    assert_eq!(first.addresses, vec![AVAHI_ADDR.parse::<IpAddr>().unwrap()]);
    let (address, port, host) = resolves(&conn, "arasul").await;
    assert_eq!(address, AVAHI_ADDR, "{}", avahi.logs());
    assert_eq!(port, HTTP_PORT);
    assert_eq!(host, "arasul.local");

    // Avahi restarts: the records went with the old instance; the worker
    // sees the name owner change and publishes to the new one.
    avahi.stop();
    wait_published(&mut rx, "the worker to notice Avahi left", |p| {
        p.host.is_none()
    })
    .await;
    let avahi2 = Avahi::start(&bus, dir.path(), 2, &ifindex);
    wait_running(&conn, &avahi2).await;
    let again = wait_published(&mut rx, "arasul.local after the restart", |p| {
        p.host.as_deref() == Some("arasul.local") && p.generation > first.generation
    })
    .await;
    assert_eq!(again.host.as_deref(), Some("arasul.local"));
    let (address, port, _) = resolves(&conn, "arasul").await;
    assert_eq!((address.as_str(), port), (AVAHI_ADDR, HTTP_PORT));

    // The owner names the box (setup wizard → config → reload): the new
    // name is published at once, without a restart.
    let mut renamed = arasuld::config::Config::default();
    renamed.mdns.hostname = "werkstatt".into();
    config_tx.send_replace(Arc::new(renamed));
    wait_published(&mut rx, "werkstatt.local", |p| {
        p.host.as_deref() == Some("werkstatt.local")
    })
    .await;
    let (address, port, host) = resolves(&conn, "werkstatt").await;
    assert_eq!(
        (address.as_str(), port, host.as_str()),
        (AVAHI_ADDR, HTTP_PORT, "werkstatt.local")
    );

    workers.shutdown(Duration::from_secs(5)).await;
    drop(avahi2);
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_with_a_suffix_when_another_program_has_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start();
    let conn = connect(&bus).await;
    let ifindex = Arc::new(AtomicI32::new(0));
    let avahi = Avahi::start(&bus, dir.path(), 1, &ifindex);
    wait_running(&conn, &avahi).await;

    // Another program on this box already announces an HTTP service named
    // "arasul" (Avahi refuses a second one: LocalCollisionError).
    let server = ServerProxy::new(&conn).await.unwrap();
    let path = server.entry_group_new().await.unwrap();
    let other = GroupProxy::builder(&conn).path(path).build().await.unwrap();
    other
        .add_service(-1, -1, 0, "arasul", "_http._tcp", "", "", 9999, Vec::new())
        .await
        .unwrap();
    other.commit().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while other.get_state().await.unwrap() != 2 {
        assert!(
            Instant::now() < deadline,
            "the other group was not established"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (workers, mut rx) = start_worker(&bus, ifindex.clone());
    let p = wait_published(&mut rx, "a renamed host", |p| p.host.is_some()).await;
    assert_eq!(
        p.host.as_deref(),
        Some("arasul-2.local"),
        "{}",
        avahi.logs()
    );
    let (address, port, host) = resolves(&conn, "arasul-2").await;
    assert_eq!((address.as_str(), port), (AVAHI_ADDR, HTTP_PORT));
    assert_eq!(host, "arasul-2.local");
    // The other program keeps its service.
    let theirs = server
        .resolve_service(-1, 0, "arasul", "_http._tcp", "local", 0, 0)
        .await
        .unwrap();
    assert_eq!(theirs.8, 9999);

    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_with_a_suffix_when_another_box_on_the_lan_is_arasul_local() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start();
    let conn = connect(&bus).await;
    // A second box on the link, whose Avahi already calls itself arasul.local.
    let other = Avahi::start_other_box(dir.path(), "arasul");
    let ifindex = Arc::new(AtomicI32::new(0));
    let avahi = Avahi::start_linked(&bus, dir.path(), 1, &ifindex);
    other.wait_log("Host name is arasul.local");
    wait_running(&conn, &avahi).await;

    // Probing finds the other box's answer: EntryGroup COLLISION, rename.
    let (workers, mut rx) = start_worker(&bus, ifindex.clone());
    let p = wait_published(&mut rx, "a renamed host", |p| p.host.is_some()).await;
    assert_eq!(
        p.host.as_deref(),
        Some("arasul-2.local"),
        "{}\n--- other box ---\n{}",
        avahi.logs(),
        other.logs()
    );
    let (address, port, host) = resolves(&conn, "arasul-2").await;
    assert_eq!((address.as_str(), port), (AVAHI_ADDR, HTTP_PORT));
    assert_eq!(host, "arasul-2.local");
    // arasul.local is still the other box, as seen over the link.
    let server = ServerProxy::new(&conn).await.unwrap();
    let (_, _, _, _, theirs, _) = server
        .resolve_host_name(-1, 0, "arasul.local", 0, 0)
        .await
        .unwrap();
    assert_eq!(theirs, "192.0.2.2");

    workers.shutdown(Duration::from_secs(5)).await;
    drop(other);
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_again_when_the_lan_addresses_change() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start();
    let conn = connect(&bus).await;
    let ifindex = Arc::new(AtomicI32::new(0));
    let avahi = Avahi::start(&bus, dir.path(), 1, &ifindex);
    wait_running(&conn, &avahi).await;

    let mut deps = MdnsDeps::new(
        MdnsConfig {
            bus_address: Some(bus.address().to_owned()),
            ..MdnsConfig::default()
        },
        HTTP_PORT,
    );
    let first: IpAddr = AVAHI_ADDR.parse().unwrap();
    let second: IpAddr = "192.0.2.7".parse().unwrap();
    let current = Arc::new(std::sync::Mutex::new(vec![first]));
    let (idx, cur) = (avahi.ifindex, current.clone());
    deps.addresses = Arc::new(move || {
        cur.lock()
            .unwrap()
            .iter()
            .map(|a| LanAddress {
                interface: idx,
                address: *a,
            })
            .collect()
    });
    deps.address_poll = Duration::from_millis(200);
    let workers = Workers::new(RestartPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
    let mut rx = mdns::spawn(&workers, deps);
    let p = wait_published(&mut rx, "the first address", |p| p.host.is_some()).await;
    assert_eq!(p.addresses, vec![first]);

    // DHCP hands the box a second address: announced without a restart.
    current.lock().unwrap().push(second);
    let p2 = wait_published(&mut rx, "both addresses", |p| p.addresses.len() == 2).await;
    assert_eq!(p2.addresses, vec![first, second]);
    assert_eq!(p2.host.as_deref(), Some("arasul.local"));
    assert!(p2.generation > p.generation);
    let (address, _, _) = resolves(&conn, "arasul").await;
    assert!(
        [first.to_string(), second.to_string()].contains(&address),
        "{address}"
    );

    workers.shutdown(Duration::from_secs(5)).await;
}
