//! Self-healing (SPEC §7): the `healing:` config section and the pure policy
//! that turns observations into actions. This module never touches Docker,
//! the database or the OS; the worker that carries actions out lives beside it,
//! reached from outside through its [`HealingHandle`]. The typed records of
//! the audit trail are in [`record`], which depends on nothing else here.

pub mod cleanup;
pub mod config;
pub mod exec;
pub mod handle;
pub mod policy;
pub mod reboot;
pub mod record;
pub mod worker;

pub use config::HealingConfig;
pub use handle::HealingHandle;
pub use policy::{
    Action, DiskLevel, Event, PolicyState, Readings, RebootReadiness, RebootReason, RestartReason,
    ServiceView, Snapshot, Timestamp, backoff_delay, decide,
};
pub use record::{Category, EventKind, HealingRecord, Severity};
