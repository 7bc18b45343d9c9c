//! Reboot through systemd-logind over D-Bus (`org.freedesktop.login1`),
//! the only way arasuld ever reboots the box. The bus is the system bus
//! unless an address is configured (tests use a private bus).

use std::time::Duration;

/// How long connecting and the call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    /// `interactive = false`: no polkit prompt; the daemon's own rights decide.
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// Asks logind to reboot now. `address`: a D-Bus address, or None for the
/// system bus.
pub async fn reboot(address: Option<&str>) -> Result<(), String> {
    let call = async {
        let conn = match address {
            Some(a) => zbus::connection::Builder::address(a)
                .build()
                .await
                .map_err(|e| format!("cannot connect to the bus at {a}: {e}"))?,
            None => zbus::Connection::system()
                .await
                .map_err(|e| format!("cannot connect to the system bus: {e}"))?,
        };
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| format!("logind: {e}"))?;
        manager
            .reboot(false)
            .await
            .map_err(|e| format!("logind refused the reboot: {e}"))
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(format!("logind did not answer within {CALL_TIMEOUT:?}")))
}
