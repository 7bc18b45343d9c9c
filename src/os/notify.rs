//! The systemd notify protocol (`sd_notify`): READY, WATCHDOG, STOPPING and
//! STATUS datagrams to `$NOTIFY_SOCKET`. A no-op when the variable is unset,
//! so the daemon runs the same by hand, in tests and under systemd.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use crate::tasks::{WorkerKind, WorkerName, Workers};

#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Clone, Debug)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; `@name` is an abstract socket.
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::to(&v.to_string_lossy()),
            _ => Notifier::default(),
        }
    }

    pub fn to(socket: &str) -> Self {
        let target = match socket.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(socket.into()),
        };
        Notifier {
            target: Some(target),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    pub fn notify(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(message.as_bytes(), p)?,
            Target::Abstract(name) => {
                sock.send_to_addr(message.as_bytes(), &SocketAddr::from_abstract_name(name)?)?
            }
        };
        Ok(())
    }

    /// Sends and logs a failure instead of returning it: a broken notify
    /// socket must not take the daemon down.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            tracing::warn!(error = %e, message, "systemd notify failed");
        }
    }
}

/// Spawns the `systemd-watchdog` worker when systemd asked for pings
/// (`period`) and listens: `WATCHDOG=1` every `period` while every core
/// worker is alive; a hung one stops the pings so systemd restarts the
/// daemon.
pub fn spawn_watchdog(
    workers: &Workers,
    notifier: &Notifier,
    period: Option<Duration>,
    stale_after: Duration,
) {
    let (Some(period), true) = (period, notifier.is_enabled()) else {
        return;
    };
    let (w, notifier) = (workers.clone(), notifier.clone());
    let mut withheld = false;
    workers.every(
        WorkerName::SystemdWatchdog,
        WorkerKind::Auxiliary,
        period,
        move |_| {
            match w.check_core_alive(stale_after) {
                Ok(()) => {
                    if withheld {
                        tracing::info!("core workers alive again; feeding the watchdog");
                        withheld = false;
                    }
                    notifier.send("WATCHDOG=1");
                }
                Err(why) => {
                    if !withheld {
                        tracing::error!(reason = %why, "withholding the systemd watchdog ping");
                        withheld = true;
                    }
                }
            }
            std::future::ready(Ok(()))
        },
    );
}

/// The ping period systemd asks for: half of `WATCHDOG_USEC`, if the watchdog
/// is meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_period_from_env() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.to_str().unwrap());
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        let name = format!("arasuld-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notifier::to(&format!("@{name}"))
            .notify("WATCHDOG=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_it_does_nothing() {
        let n = Notifier::default();
        assert!(!n.is_enabled());
        n.notify("READY=1").unwrap();
    }
}
