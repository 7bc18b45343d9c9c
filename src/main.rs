//! `arasuld`: command line, logging set-up, signals and exit codes. All the
//! work lives in the library; this file only wires the process to it.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use arasuld::app::{Daemon, LogFilterReload};
use arasuld::build_info::VERSION_LINE;
use arasuld::config::{self, Config};
use arasuld::os::notify::{self, Notifier};
use arasuld::state::Control;
use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "arasuld", version = VERSION_LINE, about = "Control plane of the Arasul edge-AI appliance")]
struct Cli {
    /// Config file [default: /etc/arasul/arasuld.yaml]
    #[arg(long, global = true, env = "ARASUL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Validate the config; print each error with file, line and key.
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
        #[arg(long, default_value = arasuld::update::package::STORE)]
        store: PathBuf,
    },
    /// Backups of the owner's data: create, list, restore.
    Backup {
        #[command(subcommand)]
        command: arasuld::cli_backup::BackupCommand,
    },
    /// Update bundles (.araupdate): keygen, create, verify, inspect.
    Bundle {
        #[command(subcommand)]
        command: arasuld::cli_bundle::BundleCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
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
        command: arasuld::cli_admin::KeyCommand,
    },
}

fn main() -> ExitCode {
    arasuld::auth::password::release_large_allocations();
    let cli = Cli::parse();
    if let Some(Command::Bundle { command }) = cli.command {
        return bundle_main(command, cli.config);
    }
    if let Some(Command::InstallPackage {
        state_dir,
        keys_dir,
        store,
    }) = &cli.command
    {
        return match arasuld::update::package::run_helper(state_dir, keys_dir, store) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("arasuld install-package: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    let loaded = config::load(&path, required, std::env::vars());
    let config = match (loaded, cli.command.as_ref()) {
        (Ok(c), Some(Command::CheckConfig)) => {
            println!("{}: OK", path.display());
            let services = &c.paths.services_file;
            if !services.exists() {
                eprintln!("{}: not found (no services will run)", services.display());
                return ExitCode::from(2);
            }
            return match arasuld::docker::load_catalog(services) {
                Ok(cat) => {
                    println!(
                        "{}: OK ({} services)",
                        services.display(),
                        cat.services.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{}: {} error(s)", services.display(), errors.len());
                    ExitCode::from(2)
                }
            };
        }
        (Ok(c), _) => c,
        (Err(errors), _) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (log_reload, _guard) = match init_logging(&config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cannot set up logging: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Migrate) => migrate(&config).await,
            Some(Command::Admin {
                command: AdminCommand::SetPassword,
            }) => arasuld::cli_admin::set_password(&config.paths.secrets_dir)
                .await
                .map_err(anyhow::Error::from),
            Some(Command::Admin {
                command: AdminCommand::InitSecrets,
            }) => arasuld::cli_admin::init_secrets(&config.paths.secrets_dir).await,
            Some(Command::Admin {
                command: AdminCommand::Key { command },
            }) => arasuld::cli_admin::key(&config, command).await,
            Some(Command::Backup { command }) => {
                arasuld::cli_backup::run(config, path, command).await
            }
            _ => serve(path, required, config, log_reload).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("arasuld: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bundle …` needs no daemon; the config only supplies `paths.keys_dir`
/// and `paths.services_file` (where `--model` finds a runtime's store).
fn bundle_main(command: arasuld::cli_bundle::BundleCommand, path: Option<PathBuf>) -> ExitCode {
    let required = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let paths = match config::load(&path, required, std::env::vars()) {
        Ok(c) => c.paths,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: not usable; the default paths apply", path.display());
            config::PathsConfig::default()
        }
    };
    arasuld::cli_bundle::run(command, &paths)
}

async fn serve(
    path: PathBuf,
    required: bool,
    config: Config,
    log_reload: LogFilterReload,
) -> anyhow::Result<()> {
    use anyhow::Context;
    // Every client connection is a file: systemd's soft limit of 1024 is
    // far below what the HTTP edge is sized for (api::serve).
    match arasuld::os::rlimit::raise_open_files() {
        Ok((before, after)) => {
            tracing::info!(old = %before, new = %after, "open-file limit: soft set to the hard limit")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    // Handlers are installed before READY=1: a SIGHUP that arrives early must
    // reload, not kill (its default action).
    let signals = Signals::install()?;
    let signals = tokio::spawn(signals.forward(tx.clone()));
    let daemon = Daemon {
        config_path: path,
        config_required: required,
        config,
        notifier: Notifier::from_env(),
        watchdog: notify::watchdog_period_from_env(),
        log_reload: Some(log_reload),
    };
    let result = daemon.run(listener, tx, rx, Vec::new()).await;
    signals.abort();
    result
}

/// SIGTERM and SIGINT shut down; SIGHUP reloads the config.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn forward(mut self, tx: tokio::sync::mpsc::Sender<Control>) {
        loop {
            let msg = tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); Control::Shutdown }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); Control::Shutdown }
                _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading config"); Control::Reload(None) }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = arasuld::db::Db::new(&config.database)?;
    arasuld::db::migrate(db.pool()).await?;
    println!(
        "migrations applied ({} known)",
        arasuld::db::MIGRATOR.iter().count()
    );
    db.close(std::time::Duration::from_secs(2)).await;
    Ok(())
}

type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Human-readable lines to stdout (journald adds time and unit), plus JSON
/// lines to `logging.json_file` when set. `RUST_LOG` overrides the level.
fn init_logging(config: &Config) -> anyhow::Result<(LogFilterReload, LogGuard)> {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| config.logging.level.clone());
    let (filter, handle) = reload::Layer::new(arasuld::config::log_filter(&level)?);
    let stdout = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    let (json, guard) = match &config.logging.json_file {
        Some(p) => {
            let file = arasuld::os::fs::open_append(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            let layer = tracing_subscriber::fmt::layer().json().with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(json)
        .init();
    let apply: LogFilterReload = Box::new(move |level: &str| {
        let f: Targets = arasuld::config::log_filter(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    Ok((apply, guard))
}
