//! mDNS against a real `avahi-daemon`: each test runs its own dbus-daemon on
//! a temp socket (standing in for the system bus) and Avahi inside a private
//! network namespace (`unshare -nm`, a veth pair `d0`/`d1` with 192.0.2.1,
//! a tmpfs over /run for Avahi's pid file), so nothing reaches the real
//! network and no other Avahi is disturbed. The `mdns` worker is the
//! daemon's own code; what it published is checked by asking Avahi to
//! resolve the name and the service. Needs root (namespaces), `avahi-daemon`,
//! `dbus-daemon` and `ip`; a missing one fails the test.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use arasuld::os::mdns::{self, LanAddress, MdnsConfig, MdnsDeps, Published};
use arasuld::tasks::{RestartPolicy, WorkerKind, Workers};
use tokio::sync::watch;

const AVAHI_ADDR: &str = "192.0.2.1";
const HTTP_PORT: u16 = 8080;
const DEADLINE: Duration = Duration::from_secs(30);

/// A dbus-daemon on a temp unix socket; killed on drop.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("bus.sock");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon) must be installed");
        // The address is printed once the bus listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        Bus {
            child,
            address: format!("unix:path={}", socket.display()),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real avahi-daemon in its own network namespace, on `bus`.
struct Avahi {
    child: Child,
    log: PathBuf,
    /// Index of `d0` inside Avahi's namespace (what AddAddress must name).
    ifindex: i32,
}

impl Avahi {
    fn start(bus: &Bus, dir: &Path, n: u32) -> Avahi {
        let conf = dir.join("avahi.conf");
        std::fs::write(
            &conf,
            "[server]\nhost-name=testbox\ndomain-name=local\nuse-ipv4=yes\nuse-ipv6=no\n\
             allow-interfaces=d0\nenable-dbus=yes\nratelimit-interval-usec=1000000\n\
             ratelimit-burst=1000\n[wide-area]\nenable-wide-area=no\n\
             [publish]\npublish-addresses=yes\npublish-hinfo=no\npublish-workstation=no\n",
        )
        .unwrap();
        let ifindex_file = dir.join(format!("ifindex-{n}"));
        let log = dir.join(format!("avahi-{n}.log"));
        let script = format!(
            "set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/avahi-daemon
ip link set lo up
ip link add d0 type veth peer name d1
ip link set d1 up
ip link set d0 multicast on up
ip addr add {AVAHI_ADDR}/24 dev d0
ip -o link show d0 | cut -d: -f1 > {ifindex}
exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --debug",
            ifindex = ifindex_file.display(),
            conf = conf.display(),
        );
        let child = Command::new("unshare")
            .args(["-nm", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("unshare (util-linux) must be installed");
        let mut avahi = Avahi {
            child,
            log,
            ifindex: 0,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(s) = std::fs::read_to_string(&ifindex_file)
                && let Ok(i) = s.trim().parse()
            {
                avahi.ifindex = i;
                break;
            }
            if let Ok(Some(status)) = avahi.child.try_wait() {
                panic!(
                    "avahi-daemon's namespace set-up failed ({status}); this test needs root, \
                     avahi-daemon and iproute2:\n{}",
                    avahi.logs()
                );
            }
            assert!(Instant::now() < deadline, "no ifindex:\n{}", avahi.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        avahi
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
    zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap()
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
async fn resolves(conn: &zbus::Connection, label: &str) -> (String, u16, String) {
    let p = ServerProxy::new(conn).await.unwrap();
    let host = format!("{label}.local");
    let (_, _, name, _, address, _) = p
        .resolve_host_name(-1, 0, &host, 0, 0)
        .await
        .unwrap_or_else(|e| panic!("Avahi cannot resolve {host}: {e}"));
    assert_eq!(name, host);
    let (_, _, sname, stype, _, shost, _, _, port, _, _) = p
        .resolve_service(-1, 0, label, "_http._tcp", "local", 0, 0)
        .await
        .unwrap_or_else(|e| panic!("Avahi cannot resolve the service {label}: {e}"));
    assert_eq!((sname.as_str(), stype.as_str()), (label, "_http._tcp"));
    (address, port, shost)
}

/// The worker on `bus`, announcing 192.0.2.1 on the interface whose index
/// `ifindex` holds when it asks (Avahi may start after the worker).
fn start_worker(bus: &Bus, ifindex: Arc<AtomicI32>) -> (Workers, watch::Receiver<Published>) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let config = MdnsConfig {
        bus_address: Some(bus.address.clone()),
        ..MdnsConfig::default()
    };
    let mut deps = MdnsDeps::new(config, HTTP_PORT);
    let addr: IpAddr = AVAHI_ADDR.parse().unwrap();
    deps.addresses = Arc::new(move || {
        vec![LanAddress {
            interface: ifindex.load(Ordering::SeqCst),
            address: addr,
        }]
    });
    let rx = deps.published.subscribe();
    let workers = Workers::new(RestartPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
    workers.spawn("mdns", WorkerKind::Auxiliary, move |ctx| {
        mdns::run(ctx, deps.clone())
    });
    (workers, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_arasul_local_and_http_service_again_after_avahi_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let conn = connect(&bus).await;

    // Avahi absent at first: the worker logs that and waits; it publishes
    // as soon as Avahi appears on the bus.
    let ifindex = Arc::new(AtomicI32::new(0));
    let (workers, mut rx) = start_worker(&bus, ifindex.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.borrow().host, None);
    let mut avahi = Avahi::start(&bus, dir.path(), 1);
    ifindex.store(avahi.ifindex, Ordering::SeqCst);
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
    let avahi2 = Avahi::start(&bus, dir.path(), 2);
    ifindex.store(avahi2.ifindex, Ordering::SeqCst);
    wait_running(&conn, &avahi2).await;
    let again = wait_published(&mut rx, "arasul.local after the restart", |p| {
        p.host.as_deref() == Some("arasul.local") && p.generation > first.generation
    })
    .await;
    assert_eq!(again.host.as_deref(), Some("arasul.local"));
    let (address, port, _) = resolves(&conn, "arasul").await;
    assert_eq!((address.as_str(), port), (AVAHI_ADDR, HTTP_PORT));

    workers.shutdown(Duration::from_secs(5)).await;
    drop(avahi2);
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_with_a_suffix_when_another_program_has_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let conn = connect(&bus).await;
    let avahi = Avahi::start(&bus, dir.path(), 1);
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

    let (workers, mut rx) = start_worker(&bus, Arc::new(AtomicI32::new(avahi.ifindex)));
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
