//! Operating-system glue: systemd notify/watchdog, the journal, mDNS over Avahi, reboot
//! through logind, the open-file limit, atomic file writes and log appends,
//! and (in `sys`) the only `unsafe` code of the crate.

pub mod fs;
pub mod journal;
pub mod logind;
pub mod mdns;
pub mod notify;
pub mod rlimit;
#[allow(unsafe_code)]
pub mod sys;
