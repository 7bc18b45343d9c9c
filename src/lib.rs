//! arasuld: the control plane of the Arasul edge-AI appliance, as a library so
//! that tests and benches drive the same code the binary runs.
//!
//! No `unsafe` outside `os::sys`: the C calls rustix does not wrap live there.
#![deny(unsafe_code)]

pub mod ai;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod build_info;
pub mod cli;
pub mod cli_admin;
pub mod cli_backup;
pub mod cli_bundle;
pub mod config;
pub mod db;
pub mod docker;
pub mod dropin;
pub mod healing;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod os;
pub mod state;
pub mod tasks;
pub mod update;
pub mod usb;
pub mod web;
