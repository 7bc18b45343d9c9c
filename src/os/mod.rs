//! Operating-system glue: systemd notify/watchdog, mDNS over Avahi, reboot through logind.

pub mod logind;
pub mod mdns;
pub mod notify;
