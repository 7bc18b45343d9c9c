//! Operating-system glue: systemd notify/watchdog (and later mDNS, logind).

pub mod logind;
pub mod notify;
