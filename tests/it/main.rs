//! The integration tests, one crate: one link of the library and the test
//! harness instead of one per area. Each area is a module (`it ai::…`,
//! `it browser::…`); `common` is the harness they share (the real binary,
//! private PostgreSQL servers, D-Bus, Docker, registry, SMTP, WebDriver).

mod common;

mod ai;
mod api;
mod auth;
mod browser;
mod bundle;
mod bundle_fuzz;
mod cli;
mod daemon;
mod dbus_bus;
mod deps;
mod healing;
mod logs;
mod mdns;
mod metrics;
mod prometheus;
mod reboot;
mod supervisor;
mod update;
mod usb;
mod workflows;
