//! The database side of an update's backup: `pg_dump -Fc` of the arasuld
//! database (checked readable with `pg_restore --list` before anything live
//! is touched) and the restore a rollback runs: every object of the
//! database dropped and the dump restored, in one transaction, so the schema
//! and data are the backup's again and objects a migration added are gone.
//! Config files are saved and put back here too. No SQL of the daemon's own
//! lives here: the PostgreSQL client tools do the work.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

/// libpq's view of `database.url`: the password goes through the
/// environment, never the command line (`ps` would show it).
#[derive(Clone, Debug, Default)]
pub struct PgTarget {
    env: Vec<(String, String)>,
}

impl PgTarget {
    /// From a `postgres://` URL as sqlx takes it (`?host=/run/postgresql`
    /// and the other query keys libpq knows are honoured).
    pub fn from_url(url: &str) -> anyhow::Result<PgTarget> {
        let u = reqwest::Url::parse(url).context("database.url is not a URL")?;
        let decode =
            |s: &str| percent_decode(s).with_context(|| format!("bad percent-encoding in {s:?}"));
        let mut env = Vec::new();
        if let Some(h) = u.host_str().filter(|h| !h.is_empty()) {
            env.push(("PGHOST".into(), decode(h)?));
        }
        if let Some(p) = u.port() {
            env.push(("PGPORT".into(), p.to_string()));
        }
        if !u.username().is_empty() {
            env.push(("PGUSER".into(), decode(u.username())?));
        }
        if let Some(pw) = u.password() {
            env.push(("PGPASSWORD".into(), decode(pw)?));
        }
        let db = u.path().trim_start_matches('/');
        if !db.is_empty() {
            env.push(("PGDATABASE".into(), decode(db)?));
        }
        for (k, v) in u.query_pairs() {
            let var = match k.as_ref() {
                "host" => "PGHOST",
                "port" => "PGPORT",
                "user" => "PGUSER",
                "password" => "PGPASSWORD",
                "dbname" => "PGDATABASE",
                "sslmode" => "PGSSLMODE",
                "sslrootcert" => "PGSSLROOTCERT",
                _ => continue,
            };
            env.retain(|(e, _)| e != var);
            env.push((var.into(), v.into_owned()));
        }
        Ok(PgTarget { env })
    }

    /// `program` (a PostgreSQL client tool) with this target's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            c.env_remove(var);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("truncated escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

async fn run(mut c: Command, what: &str) -> anyhow::Result<String> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("cannot run {what} (is the PostgreSQL client installed?)"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `pg_dump -Fc` into `dest` (through a temp file, fsynced), then proves it
/// readable: `pg_restore --list` must list the tables. Disk full or any
/// other failure leaves no dump behind.
pub async fn dump_database(pg: &PgTarget, dest: &Path) -> anyhow::Result<u64> {
    let tmp = dest.with_extension("partial");
    let mut c = pg.command("pg_dump");
    c.args(["--format=custom", "--no-password", "--file"])
        .arg(&tmp);
    if let Err(e) = run(c, "pg_dump").await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let checked = async {
        let f = tokio::fs::File::open(&tmp).await?;
        f.sync_all().await?;
        let mut c = Command::new("pg_restore");
        c.arg("--list").arg(&tmp).stdin(Stdio::null());
        let list = run(c, "pg_restore --list").await?;
        if !list.lines().any(|l| l.contains(" TABLE ")) {
            bail!("the dump lists no table; refusing to use it as a backup");
        }
        tokio::fs::rename(&tmp, dest).await?;
        sync_dir(dest.parent().unwrap_or(Path::new("."))).await?;
        anyhow::Ok(tokio::fs::metadata(dest).await?.len())
    }
    .await;
    if checked.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    checked
}

/// Drops every object of the database (schemas other than `public`
/// whole; in `public` each table, view, sequence, routine and type that no
/// extension owns), so objects created after the dump do not survive.
const DROP_EVERYTHING: &str = r#"
DO $arasul$
DECLARE r record;
BEGIN
  FOR r IN SELECT nspname FROM pg_namespace
            WHERE nspname NOT IN ('public', 'information_schema')
              AND nspname NOT LIKE 'pg\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                                AND d.objid = pg_namespace.oid AND d.deptype = 'e') LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i')) LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                     WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
      r.relname);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                AND d.objid = p.oid AND d.deptype = 'e') LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
      CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.sig);
  END LOOP;
  FOR r IN SELECT t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm', 'c')
              AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                                AND d.objid = t.oid AND d.deptype = 'e') LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
      CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.typname);
  END LOOP;
END
$arasul$;
"#;

/// The box's history: what the daemon appends or upserts while it runs,
/// which no bundle migration is there to change. A rollback carries these
/// rows across the restore (rows written during the update would otherwise
/// be lost: samples already marked persisted, healing events, the audit
/// trail, session revocations, workflow runs, the update's own events).
pub const CARRIED_TABLES: [&str; 10] = [
    "daemon_starts",
    "audit_log",
    "metrics",
    "metric_gaps",
    "sessions",
    "self_healing_events",
    "reboot_events",
    "update_runs",
    "update_events",
    "workflow_executions",
];

/// Before the restore: a copy of each carried table in `pg_temp` (which
/// the restore does not touch; same session, same transaction).
fn carry_out_sql() -> String {
    format!(
        r#"
DO $arasul$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[{tables}] LOOP
    IF to_regclass('public.' || quote_ident(t)) IS NOT NULL THEN
      EXECUTE format('CREATE TEMP TABLE %I AS SELECT * FROM public.%I', 'carry_' || t, t);
    END IF;
  END LOOP;
END
$arasul$;
"#,
        tables = sql_list()
    )
}

/// After the restore: the carried rows back into the restored tables, in the
/// columns both have; on the primary key the carried row (the newer) wins;
/// each serial's sequence moved past the highest id. A table whose rows do
/// not fit the restored schema is left as restored, with a warning.
fn carry_in_sql() -> String {
    format!(
        r#"
DO $arasul$
DECLARE
  t text; cols text; pk text; sets text; conflict text; seqcol text;
BEGIN
  FOREACH t IN ARRAY ARRAY[{tables}] LOOP
    CONTINUE WHEN to_regclass('pg_temp.' || quote_ident('carry_' || t)) IS NULL
               OR to_regclass('public.' || quote_ident(t)) IS NULL;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = ('public.' || quote_ident(t))::regclass AND a.attnum > 0
       AND NOT a.attisdropped
       AND a.attname IN (SELECT c.attname FROM pg_attribute c
                          WHERE c.attrelid = ('pg_temp.' || quote_ident('carry_' || t))::regclass
                            AND c.attnum > 0 AND NOT c.attisdropped);
    SELECT string_agg(quote_ident(a.attname), ', ') INTO pk
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = ('public.' || quote_ident(t))::regclass AND i.indisprimary;
    SELECT string_agg(format('%1$I = EXCLUDED.%1$I', a.attname), ', ') INTO sets
      FROM pg_attribute a
     WHERE a.attrelid = ('public.' || quote_ident(t))::regclass AND a.attnum > 0
       AND NOT a.attisdropped AND quote_ident(a.attname) = ANY (string_to_array(cols, ', '))
       AND NOT quote_ident(a.attname) = ANY (string_to_array(coalesce(pk, ''), ', '));
    conflict := CASE
      WHEN pk IS NULL THEN ''
      WHEN sets IS NULL THEN format(' ON CONFLICT (%s) DO NOTHING', pk)
      ELSE format(' ON CONFLICT (%s) DO UPDATE SET %s', pk, sets) END;
    BEGIN
      IF pk IS NULL THEN
        EXECUTE format('INSERT INTO public.%I (%s) SELECT %s FROM pg_temp.%I EXCEPT SELECT %s FROM public.%I',
                       t, cols, cols, 'carry_' || t, cols, t);
      ELSE
        EXECUTE format('INSERT INTO public.%I (%s) SELECT %s FROM pg_temp.%I%s',
                       t, cols, cols, 'carry_' || t, conflict);
      END IF;
      FOR seqcol IN SELECT a.attname FROM pg_attribute a
                     WHERE a.attrelid = ('public.' || quote_ident(t))::regclass AND a.attnum > 0
                       AND pg_get_serial_sequence('public.' || quote_ident(t), a.attname) IS NOT NULL LOOP
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), GREATEST((SELECT max(%I) FROM public.%I), 1))',
                       'public.' || quote_ident(t), seqcol, seqcol, t);
      END LOOP;
    EXCEPTION WHEN others THEN
      RAISE WARNING 'arasuld: rows of % written during the update were not carried across the rollback: %', t, SQLERRM;
    END;
    EXECUTE format('DROP TABLE pg_temp.%I', 'carry_' || t);
  END LOOP;
END
$arasul$;
"#,
        tables = sql_list()
    )
}

fn sql_list() -> String {
    CARRIED_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Puts the database back to the dump: `pg_restore --clean --if-exists`
/// turned into SQL, run by `psql --single-transaction` after dropping every
/// object, so either all of it happens or nothing does. The box's history
/// ([`CARRIED_TABLES`]) written since the dump is carried across.
pub async fn restore_database(pg: &PgTarget, dump: &Path, work: &Path) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(work).await?;
    let sql = work.join("restore.sql");
    let prelude = work.join("drop-everything.sql");
    tokio::fs::write(&prelude, format!("{}{DROP_EVERYTHING}", carry_out_sql())).await?;
    let postlude = work.join("carry-in.sql");
    tokio::fs::write(&postlude, carry_in_sql()).await?;
    let mut c = Command::new("pg_restore");
    c.args(["--clean", "--if-exists", "--file"])
        .arg(&sql)
        .arg(dump)
        .stdin(Stdio::null());
    run(c, "pg_restore").await?;
    let mut c = pg.command("psql");
    c.args([
        "--no-password",
        "--quiet",
        "--no-psqlrc",
        "--single-transaction",
        "--set",
        "ON_ERROR_STOP=1",
        "--file",
    ])
    .arg(&prelude)
    .arg("--file")
    .arg(&sql)
    .arg("--file")
    .arg(&postlude);
    let r = run(c, "psql (restore)").await;
    for f in [&sql, &prelude, &postlude] {
        let _ = tokio::fs::remove_file(f).await;
    }
    r.map(|_| ())
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Copies `from` to `to` through a temp file (fsynced), replacing `to`.
pub async fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = tokio::fs::read(from).await?;
    let to = to.to_path_buf();
    tokio::task::spawn_blocking(move || crate::os::fs::write_atomic(&to, &bytes, None))
        .await
        .map_err(std::io::Error::other)?
}

/// A config name is one plain file name (it lands in the config dir).
pub fn config_target(config_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with('.');
    if !ok {
        bail!("config name {name:?} is not a plain file name");
    }
    Ok(config_dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(t: &PgTarget) -> Vec<(String, String)> {
        let mut e = t.env.clone();
        e.sort();
        e
    }

    #[test]
    fn a_url_becomes_libpq_environment_without_the_password_on_the_command_line() {
        let t = PgTarget::from_url("postgres://me:p%40ss@127.0.0.1:5433/arasul").unwrap();
        assert_eq!(
            env_of(&t),
            vec![
                ("PGDATABASE".into(), "arasul".into()),
                ("PGHOST".into(), "127.0.0.1".into()),
                ("PGPASSWORD".into(), "p@ss".into()),
                ("PGPORT".into(), "5433".into()),
                ("PGUSER".into(), "me".into()),
            ]
        );
        let t = PgTarget::from_url("postgres:///arasul?host=/var/run/postgresql").unwrap();
        assert_eq!(
            env_of(&t),
            vec![
                ("PGDATABASE".into(), "arasul".into()),
                ("PGHOST".into(), "/var/run/postgresql".into()),
            ]
        );
    }

    #[test]
    fn config_names_stay_inside_the_config_dir() {
        let d = Path::new("/etc/arasul");
        assert_eq!(
            config_target(d, "n8n.env").unwrap(),
            PathBuf::from("/etc/arasul/n8n.env")
        );
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(config_target(d, bad).is_err(), "{bad:?}");
        }
    }
}
