//! The command line as clap reads it: every subcommand, option and help
//! text, and the exit statuses. build.rs compiles this same file (`#[path]`)
//! to render the man page, so it names nothing of the library but
//! `crate::build_info::VERSION_LINE` and `crate::update::Version`, for which
//! build.rs has stand-ins; defaults owned elsewhere are literals here, held to
//! their owners by the tests at the end.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::build_info::VERSION_LINE;
use crate::update::Version;

/// Success.
pub const EX_OK: u8 = 0;
/// A command failed (the daemon could not start or run, a backup or a
/// bundle was refused, ...); systemd restarts the daemon after it.
pub const EX_FAILURE: u8 = 1;
/// A usage error: unknown subcommand or option, a missing or bad argument
/// (clap's own status).
pub const EX_USAGE: u8 = 2;
/// EX_CONFIG (sysexits.h): the config file or the service catalog is
/// invalid or cannot be read. Restarting cannot help, so the unit has
/// `RestartPreventExitStatus=78`.
pub const EX_CONFIG: u8 = 78;

/// What each exit status means, for the man page's EXIT STATUS section.
pub const EXIT_STATUSES: &[(u8, &str)] = &[
    (EX_OK, "Success."),
    (
        EX_FAILURE,
        "A command failed: the daemon could not start or stopped on an error, a backup, \
         restore, bundle or key command was refused, `admin set-password` was given a \
         password the policy refuses. systemd restarts the daemon after this status.",
    ),
    (
        EX_USAGE,
        "Usage error: an unknown subcommand or option, a missing or malformed argument.",
    ),
    (
        EX_CONFIG,
        "EX_CONFIG: the config file (with its drop-ins and ARASUL_* variables) or the \
         service catalog is invalid, or a file named with --config cannot be read. Each \
         error is printed with file, line and key. The unit's RestartPreventExitStatus=78 \
         keeps systemd from restarting a daemon that cannot start until the config is fixed.",
    ),
];

/// Control plane of the Arasul edge-AI appliance.
///
/// arasuld serves the HTTP API and the dashboard, samples system and GPU
/// metrics, supervises the AI containers through the Docker engine, heals
/// them, and applies signed updates. systemd runs it as arasuld.service;
/// the other subcommands are the administrator's and the package's tools.
#[derive(Parser)]
#[command(name = "arasuld", version = VERSION_LINE)]
pub struct Cli {
    /// Config file [default: /etc/arasul/arasuld.yaml]
    #[arg(long, global = true, env = "ARASUL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Validate the config and the service catalog; print each error with
    /// file, line and key.
    CheckConfig,
    /// Apply the database migrations and exit.
    Migrate,
    /// Administration of the appliance's admin account.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Root helper of signed updates (run by `arasuld-package.service`):
    /// installs the package of the bundle the daemon asked for, after
    /// checking it again, or reinstalls the package an update replaced.
    ///
    /// Runs as root, so it reads no config file (the config dir is the
    /// daemon's to write): its paths are these options, fixed in the unit.
    InstallPackage {
        /// The daemon's state dir, where the request and outcome are.
        #[arg(long, default_value = "/var/lib/arasul")]
        state_dir: PathBuf,
        /// The trusted update keys (root-owned; anything else is refused).
        #[arg(long, default_value = "/etc/arasul/keys")]
        keys_dir: PathBuf,
        /// Where verified copies and kept packages live (root only).
        #[arg(long, default_value = PACKAGE_STORE)]
        store: PathBuf,
    },
    /// Backups of the owner's data: create, list, restore.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Update bundles (.araupdate): keygen, create, verify, inspect.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Writes this man page, gzip-compressed, to stdout (the package's
    /// arasuld.1.gz; rendered from this file at build time).
    #[command(hide = true)]
    PrintManPage,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Set the admin password: read from the terminal without echo, or the
    /// first line of stdin; the policy applies. Reload the daemon afterwards.
    SetPassword,
    /// Create what is missing in the secrets dir (JWT key; an initial admin
    /// password on first install) and print the initial password's path if
    /// this call made it. Used by the package's postinst.
    InitSecrets,
    /// API keys for apps and integrators (stored in the database; the
    /// running daemon takes a change within 5 s).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// `arasuld admin key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a key and print it (once: only its hash is stored).
    Create {
        /// What it is for, e.g. "n8n" or "laptop".
        name: String,
        /// llm, embeddings, metrics or admin; repeat or separate by commas.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Refused after this long, e.g. 90d or 12h; never when absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List the live keys (never a key itself).
    List,
    /// Revoke a key by its id (from `list`).
    Revoke {
        /// The key's id
        id: i64,
    },
}

/// `arasuld backup …`
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back up now, to the configured destination (verified).
    Create,
    /// The backup runs and restores, oldest first.
    List,
    /// Put a backup back: a run's id, an archive's file name at the
    /// destination, or an absolute path. A corrupt archive is refused before
    /// anything changes; a safety backup is taken first.
    Restore {
        /// A run's id, an archive's file name, or an absolute path
        file: String,
    },
}

/// `arasuld bundle …`
#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Make an Ed25519 signing key pair: DIR/update-signing.key (PKCS#8,
    /// keep it secret) and DIR/update-signing.pem (goes to the box's keys dir).
    Keygen {
        /// Dir to write the key pair into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Build and sign a bundle.
    Create(Box<CreateArgs>),
    /// Check a bundle as the box would (signature, versions, every payload
    /// hash); exit 0 when it would be accepted, 1 otherwise.
    Verify {
        /// Dir of trusted public keys (*.pem) [default: paths.keys_dir]
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Installed version to check against [default: this build's]
        #[arg(long)]
        installed: Option<Version>,
        /// Also stage the payload here (as an upload does); removed again
        /// unless --keep-staging.
        #[arg(long)]
        staging: Option<PathBuf>,
        /// Keep the staged payload
        #[arg(long, requires = "staging")]
        keep_staging: bool,
        /// Largest bundle accepted, bytes
        #[arg(long, default_value_t = MAX_BUNDLE_BYTES)]
        max_bytes: u64,
        /// The bundle (.araupdate)
        file: PathBuf,
    },
    /// Print the manifest. With --keys, also say whether a trusted key signed it.
    Inspect {
        /// Dir of trusted public keys (*.pem)
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The bundle (.araupdate)
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Private key, PEM: Ed25519 (PKCS#8) or RSA ≥ 2048 bit (PKCS#8 or PKCS#1)
    #[arg(long)]
    pub key: PathBuf,
    /// The bundle's version (semver): what the box runs after applying it
    #[arg(long)]
    pub version: Version,
    /// The oldest installed version it may be applied on
    #[arg(long)]
    pub min_version: Version,
    /// SERVICE=IMAGE: saved with `docker save IMAGE` into the bundle
    #[arg(long = "image", value_name = "SERVICE=IMAGE")]
    pub images: Vec<String>,
    /// SERVICE=IMAGE=FILE.tar: an image tarball made earlier with `docker save`
    #[arg(long = "image-tar", value_name = "SERVICE=IMAGE=FILE")]
    pub image_tars: Vec<String>,
    /// SERVICE=MODEL (e.g. `llm=llama3.2:1b`): the model as the runtime of
    /// SERVICE (`llm` or `embeddings`) has it in its store: its manifest and
    /// blobs. The store is --model-store, else the catalog's volume of that
    /// runtime.
    #[arg(long = "model", value_name = "SERVICE=MODEL")]
    pub models: Vec<String>,
    /// An Ollama model store (the directory with `blobs/` and `manifests/`)
    #[arg(long, value_name = "DIR")]
    pub model_store: Option<PathBuf>,
    /// SQL migration, run in the order given. A first line
    /// `-- arasul:no-transaction` marks one that cannot run in a transaction.
    #[arg(long = "migration", value_name = "FILE")]
    pub migrations: Vec<PathBuf>,
    /// Config file, installed as /etc/arasul/<its file name>. (Not
    /// `--config`: that global flag names the daemon's own config.)
    #[arg(long = "config-file", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// A new arasuld package (.deb)
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// Release notes, shown before the update is applied
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Mark the update as needing a reboot (shown before it is applied)
    #[arg(long)]
    pub requires_reboot: bool,
    /// [default: this build's hash]
    #[arg(long)]
    pub build_hash: Option<String>,
    /// Where to write the bundle
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `update::package::STORE`, as `install-package --store`'s default.
const PACKAGE_STORE: &str = "/var/lib/arasuld-packages";
/// `VerifyLimits::default().max_bundle_bytes`, as `bundle verify --max-bytes`'s default.
const MAX_BUNDLE_BYTES: u64 = 16 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_written_here_are_their_owners() {
        assert_eq!(PACKAGE_STORE, crate::update::package::STORE);
        assert_eq!(
            MAX_BUNDLE_BYTES,
            crate::update::verify::VerifyLimits::default().max_bundle_bytes
        );
        assert_eq!(crate::config::DEFAULT_PATH, "/etc/arasul/arasuld.yaml");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
