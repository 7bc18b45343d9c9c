//! Signed offline updates (SPEC §8): the `.araupdate` bundle format, trusted
//! keys, verification into staging; apply and rollback build on `verify`.

pub mod bundle;
pub mod fuzz;
pub mod image_tar;
pub mod keys;
pub mod manifest;
pub mod model_tar;
pub mod package;
pub mod verify;

pub use keys::{Algorithm, SignatureInfo, TrustedKeys};
pub use manifest::Manifest;
pub use semver::Version;
pub use verify::{BundleError, VerifiedBundle, VerifyLimits, verify_bundle};

pub mod activity;
pub mod apply;
pub mod backup;
pub mod manager;
pub mod state;

pub use activity::{Activity, UpdateActivity};
pub use manager::{Source, UpdateConfig, UpdateError, UpdateManager, spawn};
pub use state::{UpdateCheck, UpdateState, UpdateStatus};
