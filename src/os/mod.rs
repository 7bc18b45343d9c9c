//! Operating-system glue: systemd notify/watchdog (and later mDNS, logind).

pub mod mdns;
pub mod notify;
