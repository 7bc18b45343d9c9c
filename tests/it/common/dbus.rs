//! A private D-Bus for tests: a real `dbus-daemon` on a socket in a temp dir,
//! with a policy that lets anyone own any name. Test services (logind,
//! UDisks2, Avahi stand-ins) are zbus `#[interface]` objects served on a
//! connection to it; the daemon under test is pointed at `address()`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts the bus and returns once it accepts connections. With
    /// `CI=true` a missing `dbus-daemon` is a test failure, as everywhere.
    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("temp dir for the bus");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
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
        .expect("write bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1", "--nopidfile"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "dbus-daemon must be installed (Debian package `dbus`; scripts/test installs it)",
            );
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed no address: {line:?}"
        );
        super::wait_until("the private bus socket", Duration::from_secs(10), || {
            socket.exists().then_some(())
        });
        PrivateBus {
            child,
            address,
            _dir: dir,
        }
    }

    /// The bus address, e.g. `unix:path=/tmp/.../bus,guid=…`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A zbus connection to this bus, for serving test services or calling.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the private bus")
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
