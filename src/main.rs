//! `arasuld`: command line, logging set-up, signals and exit codes. All the
//! work lives in the library; this file only wires the process to it.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use arasuld::app::{Daemon, LogFilterReload};
use arasuld::cli::{AdminCommand, Cli, Command, EX_CONFIG};
use arasuld::config::{self, Config};
use arasuld::os::journal::{self, JournalLayer};
use arasuld::os::notify::{self, Notifier};
use arasuld::state::Control;
use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// The man page build.rs rendered from src/cli.rs, gzip-compressed: what
/// `arasuld print-man-page` writes for the package (scripts/deb).
const MAN_PAGE_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arasuld.1.gz"));

fn main() -> ExitCode {
    arasuld::auth::password::release_large_allocations();
    let cli = Cli::parse();
    if let Some(Command::PrintManPage) = cli.command {
        return match std::io::Write::write_all(&mut std::io::stdout(), MAN_PAGE_GZ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(format_args!("arasuld print-man-page: {e}"));
                ExitCode::FAILURE
            }
        };
    }
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
                report(format_args!("arasuld install-package: {e:#}"));
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
        (Ok(c), Some(Command::CheckConfig)) => return check_catalog(&path, &c),
        (Ok(c), _) => c,
        (Err(errors), _) => {
            for e in &errors {
                report(e);
            }
            report(format_args!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.len()
            ));
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report(format_args!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let (log_reload, _guard) = match init_logging(&config) {
        Ok(x) => x,
        Err(e) => {
            report(format_args!("cannot set up logging: {e:#}"));
            return ExitCode::FAILURE;
        }
    };
    let daemon = matches!(cli.command, None | Some(Command::Serve));
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
            // Once: the daemon's error is a log entry (the journal, or
            // stdout, and the JSON file); a command's goes to stderr, where
            // whoever ran it looks (the postinst sends stdout to /dev/null).
            if daemon && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e:#}");
            } else {
                report(format_args!("arasuld: {e:#}"));
            }
            ExitCode::FAILURE
        }
    }
}

/// `check-config` after the config passed: the service catalog it names
/// must exist and be valid too.
fn check_catalog(path: &std::path::Path, c: &Config) -> ExitCode {
    println!("{}: OK", path.display());
    let services = &c.paths.services_file;
    if !services.exists() {
        report(format_args!(
            "{}: not found (no services will run)",
            services.display()
        ));
        return ExitCode::from(EX_CONFIG);
    }
    match arasuld::docker::load_catalog(services) {
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
                report(e);
            }
            report(format_args!(
                "{}: {} error(s)",
                services.display(),
                errors.len()
            ));
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// An error for whoever started the process, before logging is set up or
/// outside it: on stderr, each line with the journal's error priority
/// (`<3>`) when stderr is the journal stream, so `journalctl -p err` shows
/// a config that keeps the daemon from starting.
fn report(msg: impl std::fmt::Display) {
    let stream = std::env::var("JOURNAL_STREAM").ok();
    let prefix = if journal::is_journal_stream(stream.as_deref(), std::io::stderr()) {
        "<3>"
    } else {
        ""
    };
    for line in msg.to_string().lines() {
        eprintln!("{prefix}{line}");
    }
}

/// `bundle …` needs no daemon; the config only supplies `paths.keys_dir`
/// and `paths.services_file` (where `--model` finds a runtime's store).
fn bundle_main(command: arasuld::cli::BundleCommand, path: Option<PathBuf>) -> ExitCode {
    let required = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let paths = match config::load(&path, required, std::env::vars()) {
        Ok(c) => c.paths,
        Err(errors) => {
            for e in &errors {
                report(e);
            }
            report(format_args!(
                "{}: not usable; the default paths apply",
                path.display()
            ));
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

/// Under systemd (stdout or stderr is the journal stream `JOURNAL_STREAM`
/// names) entries go to journald with their priority and fields; otherwise
/// human-readable lines go to stdout. With `logging.json_file` set, JSON
/// lines go there too (the dashboard's log viewer reads them). `RUST_LOG`
/// overrides the level.
fn init_logging(config: &Config) -> anyhow::Result<(LogFilterReload, LogGuard)> {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| config.logging.level.clone());
    let (filter, handle) = reload::Layer::new(arasuld::config::log_filter(&level)?);
    let stream = std::env::var("JOURNAL_STREAM").ok();
    let under_journal = journal::is_journal_stream(stream.as_deref(), std::io::stderr())
        || journal::is_journal_stream(stream.as_deref(), std::io::stdout());
    let (journald, unreachable) = if under_journal {
        match JournalLayer::connect(std::path::Path::new(journal::SOCKET), "arasuld") {
            Ok(layer) => (Some(layer), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let stdout = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_target(false)
    });
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
        .with(journald)
        .with(stdout)
        .with(json)
        .init();
    if let Some(e) = unreachable {
        tracing::warn!(socket = journal::SOCKET, error = %e, "journald does not answer; logging to stdout");
    }
    let apply: LogFilterReload = Box::new(move |level: &str| {
        let f: Targets = arasuld::config::log_filter(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    Ok((apply, guard))
}
