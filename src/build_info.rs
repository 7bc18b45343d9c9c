//! What this binary is: version and the commit it was built from.

/// Cargo's package version (`ARASUL_VERSION` at build time overrides it,
/// for test packages of another version).
pub const VERSION: &str = env!("ARASUL_VERSION");
/// Short git hash, or `unknown` when built outside a git checkout.
pub const BUILD_HASH: &str = env!("ARASUL_BUILD_HASH");
/// What `arasuld --version` prints after the name.
pub const VERSION_LINE: &str = concat!(
    env!("ARASUL_VERSION"),
    " (build ",
    env!("ARASUL_BUILD_HASH"),
    ")"
);
