//! What this binary is: version and the commit it was built from.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git hash, or `unknown` when built outside a git checkout.
pub const BUILD_HASH: &str = env!("ARASUL_BUILD_HASH");
/// What `arasuld --version` prints after the name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (build ",
    env!("ARASUL_BUILD_HASH"),
    ")"
);
