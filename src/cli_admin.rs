//! `arasuld admin set-password`: root on the box sets the admin password
//! without knowing the current one. Reads it from the terminal without echo
//! (twice, to catch typos), or the first line of stdin when that is not a
//! terminal (`echo "$PW" | arasuld admin set-password`). The same policy as
//! the API applies. The running daemon picks the new hash up on reload
//! (`systemctl reload arasuld`, i.e. SIGHUP), which revokes every session.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use crate::auth::{Auth, AuthConfig, ChangePasswordError, Now};

/// Why `set-password` failed; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    #[error("the password does not meet the requirements:\n{}", .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<String>),
    #[error("the two entries differ; nothing was changed")]
    Mismatch,
    #[error("no password given on stdin")]
    Empty,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Reads the new password (terminal or stdin) and sets it in `secrets_dir`.
pub async fn set_password(secrets_dir: &Path) -> Result<(), SetPasswordError> {
    let password = if std::io::stdin().is_terminal() {
        let first = read_hidden("New admin password: ").context("reading from the terminal")?;
        let second = read_hidden("Repeat it: ").context("reading from the terminal")?;
        if first != second {
            return Err(SetPasswordError::Mismatch);
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err(SetPasswordError::Empty);
    }
    set_password_to(secrets_dir, &password).await?;
    println!(
        "admin password set in {}; all sessions are revoked when the daemon reloads (systemctl reload arasuld)",
        secrets_dir.display()
    );
    Ok(())
}

/// Applies the policy and writes the hash and history.
pub async fn set_password_to(secrets_dir: &Path, password: &str) -> Result<(), SetPasswordError> {
    let cfg = AuthConfig {
        secrets_dir: secrets_dir.to_owned(),
        ..AuthConfig::default()
    };
    let (auth, _) = tokio::task::spawn_blocking(move || Auth::open(cfg))
        .await
        .context("opening the secrets dir")??;
    match auth.set_password(password, Now::current()).await {
        Ok(_) => keep_dir_owner(secrets_dir).map_err(SetPasswordError::Other),
        Err(ChangePasswordError::Policy(v)) => Err(SetPasswordError::Policy(
            v.into_iter().map(|v| v.message).collect(),
        )),
        Err(e) => Err(SetPasswordError::Other(anyhow::anyhow!("{e:#}"))),
    }
}

/// Prompts on stderr and reads a line from the terminal with echo off; the
/// terminal settings are restored even on error.
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let old = tcgetattr(&stdin)?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &old);
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `arasuld admin init-secrets`: creates the JWT key and, when no admin
/// password is set, an initial one, through the same code path as the
/// daemon's first start. Idempotent: existing secrets are kept. Prints the
/// path of the initial-password file only when this call created it (never
/// the password), so the installer knows whether to show it.
pub async fn init_secrets(secrets_dir: &Path) -> anyhow::Result<()> {
    let cfg = AuthConfig {
        secrets_dir: secrets_dir.to_owned(),
        ..AuthConfig::default()
    };
    let (_, created) = tokio::task::spawn_blocking(move || Auth::open(cfg))
        .await
        .context("opening the secrets dir")??;
    if let Some(path) = created {
        println!("{}", path.display());
    }
    Ok(())
}

/// Defined with the rest of the command line (the man page is rendered from it).
pub use crate::cli::KeyCommand;

/// Runs a key command against the configured database.
pub async fn key(config: &crate::config::Config, cmd: KeyCommand) -> anyhow::Result<()> {
    use crate::auth::keys::Scope;
    let db = crate::db::Db::new(&config.database)?;
    crate::db::migrate(db.pool())
        .await
        .context("the database is not reachable")?;
    let pool = db.pool();
    let out = match cmd {
        KeyCommand::Create {
            name,
            scopes,
            expires_in,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown scope {s:?}: use llm, embeddings, metrics or admin"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let expires_at = expires_in
                .map(|d| chrono::Duration::from_std(d).map(|d| chrono::Utc::now() + d))
                .transpose()
                .context("--expires-in is too long")?;
            let (new, key) =
                crate::db::keys::create(pool, &name, &scopes, expires_at, None, "cli").await?;
            eprintln!(
                "key {} ({:?}) made; it is shown only now, and the daemon accepts it within 5 s:",
                key.id, key.name
            );
            println!("{}", new.secret);
            Ok(())
        }
        KeyCommand::List => {
            let mut keys: Vec<_> = crate::db::keys::load_live(pool)
                .await?
                .into_iter()
                .map(|(_, k)| k)
                .collect();
            keys.sort_by_key(|k| k.id);
            println!(
                "{:>4}  {:<20} {:<28} {:<12} {:<20} {:<20}",
                "id", "name", "scopes", "key", "expires", "last used"
            );
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_string(),
                    |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
                )
            };
            for k in keys {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{:>4}  {:<20} {:<28} {:<12} {:<20} {:<20}",
                    k.id,
                    k.name,
                    scopes.join(","),
                    format!("{}…", k.hint),
                    when(k.expires_at),
                    when(k.last_used_at)
                );
            }
            Ok(())
        }
        KeyCommand::Revoke { id } => {
            if crate::db::keys::revoke(pool, id, None, "cli").await? {
                println!("key {id} revoked; the daemon refuses it within 5 s");
                Ok(())
            } else {
                Err(anyhow::anyhow!("no live key with id {id}"))
            }
        }
    };
    db.close(std::time::Duration::from_secs(2)).await;
    out
}

/// Root running `admin set-password` on an installed box writes new files
/// owned by root into the daemon's secrets dir, which the daemon (user
/// `arasul`) could then not read: each goes to the dir's owner, as the
/// package set them up (never through a link).
fn keep_dir_owner(secrets_dir: &Path) -> anyhow::Result<()> {
    use crate::auth::secrets::{ADMIN_HASH_FILE, JWT_KEY_FILE, PASSWORD_HISTORY_FILE};
    for name in [ADMIN_HASH_FILE, PASSWORD_HISTORY_FILE, JWT_KEY_FILE] {
        crate::auth::secrets::give_to_dir_owner(secrets_dir, &secrets_dir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn root_never_hands_the_target_of_a_planted_link_to_the_daemon_user() {
        if !rustix::process::geteuid().is_root() {
            panic!("this test needs root (scripts/test runs as root)");
        }
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::os::unix::fs::chown(&secrets, Some(4242), Some(4242)).unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "root's").unwrap();
        std::os::unix::fs::symlink(&precious, secrets.join("admin.hash")).unwrap();
        let err = keep_dir_owner(&secrets).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err:#}");
        assert_eq!(std::fs::metadata(&precious).unwrap().uid(), 0);
        // A real file is handed over.
        std::fs::remove_file(secrets.join("admin.hash")).unwrap();
        std::fs::write(secrets.join("admin.hash"), "x").unwrap();
        keep_dir_owner(&secrets).unwrap();
        assert_eq!(
            std::fs::metadata(secrets.join("admin.hash")).unwrap().uid(),
            4242
        );
    }
}
