//! Backups of the owner's data against real parts: a private PostgreSQL, the
//! Docker engine (a service standing in for n8n with its bind-mount volume),
//! a tmpfs mounted as a too-small USB stick, and moto's S3 server.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arasuld::backup::{BackupError, Backups, DestinationKind, RunStatus};
use arasuld::config::{Config, Secret};
use arasuld::docker::{ServiceState, SupervisorHandle};
use arasuld::tasks::Workers;

use crate::common::docker::{IMAGE, Project, SOCKET, spawn_supervisor};
use crate::common::{PrivatePostgres, free_port, wait_until};

/// One test's box: dirs as on the appliance (config dir with drop-ins and
/// secrets, state dir, n8n's data dir), a private PostgreSQL with the
/// arasuld database migrated, and the supervisor running `n8n`.
struct BoxUnderTest {
    _project: Project,
    dir: tempfile::TempDir,
    pg: PrivatePostgres,
    rt: tokio::runtime::Runtime,
    workers: Option<Workers>,
    services: SupervisorHandle,
    config: Config,
}

impl BoxUnderTest {
    fn new(tag: &str, with_n8n: bool) -> BoxUnderTest {
        let project = Project::new(tag);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "etc/arasuld.yaml.d",
            "etc/secrets",
            "state",
            "n8n/nodes/custom",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("etc/arasuld.yaml"), "logging:\n  level: info\n").unwrap();
        std::fs::write(
            d.join("etc/arasuld.yaml.d/70-dashboard.yaml"),
            "mdns:\n  hostname: kiste\n",
        )
        .unwrap();
        std::fs::write(
            d.join("etc/secrets/n8n-encryption-key"),
            "s3cr3t-key-of-n8n\n",
        )
        .unwrap();
        std::fs::set_permissions(
            d.join("etc/secrets/n8n-encryption-key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            d.join("n8n/database.sqlite"),
            b"workflow: invoice-mailer v3",
        )
        .unwrap();
        std::fs::write(d.join("n8n/nodes/custom/node.js"), b"module.exports = 42;").unwrap();
        let n8n = if with_n8n {
            format!(
                "- name: n8n\n  image: {IMAGE}\n  role: workflow\n  volumes: [\"{}:/data\"]\n  \
                 health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}\n",
                d.join("n8n").display()
            )
        } else {
            String::new()
        };
        let catalog_text = format!(
            "project: {}\nnetwork: {}\nservices:\n{n8n}",
            project.name,
            project.network()
        );
        let catalog_text = if with_n8n {
            catalog_text
        } else {
            catalog_text.replace("services:\n", "services: []\n")
        };
        std::fs::write(d.join("etc/services.yaml"), &catalog_text).unwrap();
        let catalog = arasuld::docker::catalog::parse("test", &catalog_text).unwrap();

        let mut pg = PrivatePostgres::init(free_port());
        pg.start();
        let mut config = Config::default();
        config.database.url =
            Secret::new(format!("postgres://postgres@127.0.0.1:{}/arasul", pg.port));
        config.paths.state_dir = d.join("state");
        config.paths.secrets_dir = d.join("etc/secrets");
        config.paths.keys_dir = d.join("etc/keys");
        config.paths.services_file = d.join("etc/services.yaml");
        config.usb.mount_roots = vec![d.join("media")];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (workers, services) = {
            let _g = rt.enter();
            spawn_supervisor(&d.join("state"), catalog, SOCKET)
        };
        let me = BoxUnderTest {
            _project: project,
            dir,
            pg,
            rt,
            workers: Some(workers),
            services,
            config,
        };
        me.psql("postgres", "CREATE DATABASE arasul");
        me.rt.block_on(async {
            let db = arasuld::db::Db::new(&me.config.database).unwrap();
            arasuld::db::migrate(db.pool()).await.unwrap();
        });
        me.psql(
            "arasul",
            "CREATE TABLE owner_notes (id int PRIMARY KEY, body text);
             INSERT INTO owner_notes VALUES (1, 'Steuerberater: Termin am 3.'), (2, 'WLAN: kiste-5g'), (3, 'ü ö ä');
             INSERT INTO audit_log (at, actor, action, detail) SELECT now(), 'admin', 'login', '{}'::jsonb FROM generate_series(1, 25);",
        );
        if with_n8n {
            me.wait_state("n8n", ServiceState::Healthy);
        }
        me
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = std::process::Command::new(arasuld_pg_bin().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn backups(&self, config: Config) -> Backups {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
        std::mem::forget(tx);
        let _g = self.rt.enter();
        let db = arasuld::db::Db::new(&config.database).unwrap();
        Backups::new(
            rx,
            db,
            self.services.clone(),
            Some(self.path("etc/arasuld.yaml")),
            arasuld::notify::Notifier::detached(),
        )
    }

    fn wait_state(&self, name: &str, want: ServiceState) {
        wait_until(
            &format!("{name} to be {want:?}"),
            Duration::from_secs(60),
            || (self.services.service(name)?.state == want).then_some(()),
        );
    }

    fn n8n_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.path("n8n")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e
                        .path()
                        .strip_prefix(self.path("n8n"))
                        .unwrap()
                        .display()
                        .to_string();
                    out.push((rel, std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for BoxUnderTest {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            self.rt.block_on(w.shutdown(Duration::from_secs(5)));
        }
    }
}

fn arasuld_pg_bin() -> PathBuf {
    crate::common::pg_bin()
}

#[test]
fn backup_wipe_restore_brings_the_data_back_a_corrupt_archive_changes_nothing_a_failed_restore_rolls_back()
 {
    let b = BoxUnderTest::new("backup", true);
    let backups = b.backups(b.config.clone());
    // benches/backup_restore.sh: the same run with a box's worth of data
    // (MiB of binary data in n8n's volume, rows in the database).
    let bench = |var: &str| -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (bench_mib, bench_rows) = (
        bench("ARASUL_BENCH_BACKUP_MIB"),
        bench("ARASUL_BENCH_BACKUP_ROWS"),
    );
    if bench_mib > 0 {
        let mut data = vec![0u8; (bench_mib << 20) as usize];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
            .unwrap();
        std::fs::create_dir_all(b.path("n8n/binaryData")).unwrap();
        std::fs::write(b.path("n8n/binaryData/attachments.bin"), data).unwrap();
    }
    if bench_rows > 0 {
        b.psql(
            "arasul",
            &format!(
                "CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) || repeat('x', 160) AS body \
                 FROM generate_series(1, {bench_rows}) g"
            ),
        );
    }
    let n8n_before = b.n8n_files();
    let started_before = b.services.service("n8n").unwrap().started_at;

    let t0 = Instant::now();
    let run =
        b.rt.block_on(backups.create("manual"))
            .expect("the backup runs");
    let backup_time = t0.elapsed();
    assert_eq!(run.status, RunStatus::Good, "{run:?}");
    let archive = PathBuf::from(run.location.clone().unwrap());
    assert!(
        archive.starts_with(b.path("state/data-backups")),
        "{archive:?}"
    );
    let manifest = arasuld::backup::archive::read_manifest(&archive).unwrap();
    let files: Vec<&str> = manifest.items.iter().map(|i| i.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "database.dump",
            "etc-arasul.tar",
            "secrets.tar",
            "models.json",
            "volume-n8n-0.tar"
        ]
    );
    assert_eq!(manifest.tables.get("owner_notes"), Some(&3));
    assert_eq!(manifest.tables.get("audit_log"), Some(&25));
    // n8n was stopped for its copy and runs again.
    b.wait_state("n8n", ServiceState::Healthy);
    assert_ne!(
        b.services.service("n8n").unwrap().started_at,
        started_before
    );
    // No scratch database is left behind.
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'arasul_verify_%'"
        ),
        "0"
    );
    // The run survives (it is in the state dir).
    assert_eq!(
        b.backups(b.config.clone()).runs().last().unwrap().status,
        RunStatus::Good
    );

    // One byte flipped inside n8n's copy: refused before anything changes.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(b"invoice-mailer".len())
        .position(|w| w == b"invoice-mailer")
        .expect("the volume's file is in the archive");
    bytes[at] ^= 0x20;
    let corrupt = b.path("corrupt.tar");
    std::fs::write(&corrupt, &bytes).unwrap();
    b.psql(
        "arasul",
        "INSERT INTO owner_notes VALUES (4, 'after the backup')",
    );
    std::fs::write(b.path("n8n/database.sqlite"), b"workflow: changed since").unwrap();
    let runs_before = backups.runs().len();
    let started = b.services.service("n8n").unwrap().started_at;
    let err =
        b.rt.block_on(backups.restore(corrupt.to_str().unwrap()))
            .unwrap_err();
    assert!(matches!(err, BackupError::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains("volume-n8n-0.tar is corrupt"),
        "{err}"
    );
    assert_eq!(b.psql("arasul", "SELECT count(*) FROM owner_notes"), "4");
    assert_eq!(
        std::fs::read(b.path("n8n/database.sqlite")).unwrap(),
        b"workflow: changed since"
    );
    assert_eq!(
        b.services.service("n8n").unwrap().started_at,
        started,
        "n8n was not touched"
    );
    assert_eq!(
        backups.runs().len(),
        runs_before,
        "no safety backup, no restore run"
    );

    // The wipe: the database dropped, n8n's volume emptied, a secret lost.
    b.psql("postgres", "DROP DATABASE arasul WITH (FORCE)");
    for e in std::fs::read_dir(b.path("n8n")).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
        } else {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::remove_file(b.path("etc/secrets/n8n-encryption-key")).unwrap();
    std::fs::remove_file(b.path("etc/arasuld.yaml.d/70-dashboard.yaml")).unwrap();

    let t1 = Instant::now();
    let restored =
        b.rt.block_on(backups.restore(&run.id))
            .expect("the restore runs");
    let restore_time = t1.elapsed();
    assert_eq!(restored.status, RunStatus::Good);
    assert_eq!(
        b.psql(
            "arasul",
            "SELECT string_agg(id || '=' || body, '|' ORDER BY id) FROM owner_notes"
        ),
        "1=Steuerberater: Termin am 3.|2=WLAN: kiste-5g|3=ü ö ä"
    );
    assert_eq!(b.psql("arasul", "SELECT count(*) FROM audit_log"), "25");
    if bench_rows > 0 {
        assert_eq!(
            b.psql("arasul", "SELECT count(*) FROM bench_rows"),
            bench_rows.to_string()
        );
    }
    assert_eq!(b.n8n_files(), n8n_before);
    let key = b.path("etc/secrets/n8n-encryption-key");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "s3cr3t-key-of-n8n\n"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(b.path("etc/arasuld.yaml.d/70-dashboard.yaml")).unwrap(),
        "mdns:\n  hostname: kiste\n"
    );
    b.wait_state("n8n", ServiceState::Healthy);
    let runs = backups.runs();
    assert!(
        runs.iter()
            .any(|r| r.trigger == "safety" && r.status == RunStatus::Good),
        "{runs:?}"
    );
    println!(
        "backup-wipe-restore: archive {} bytes; backup {:.2} s, restore (with its safety backup) {:.2} s, total {:.2} s",
        run.size.unwrap(),
        backup_time.as_secs_f64(),
        restore_time.as_secs_f64(),
        (backup_time + restore_time).as_secs_f64()
    );

    // A restore that fails halfway (the database is already the backup's
    // when n8n's copy turns out not to be a tar) is rolled back to the
    // safety backup: the state just before it, not the backup's.
    b.psql(
        "arasul",
        "INSERT INTO owner_notes VALUES (5, 'after the restore')",
    );
    std::fs::write(
        b.path("n8n/database.sqlite"),
        b"workflow: edited after the restore",
    )
    .unwrap();
    let n8n_now = b.n8n_files();
    let parts = b.path("parts");
    let mut m = arasuld::backup::archive::check(&archive, Some(&parts)).unwrap();
    std::fs::write(parts.join("volume-n8n-0.tar"), b"this is not a tar archive").unwrap();
    for item in &mut m.items {
        (item.sha256, item.size) =
            arasuld::backup::archive::hash_file(&parts.join(&item.file)).unwrap();
    }
    let bad = b.path("state/data-backups/arasul-backup-20200101T000000Z.tar");
    arasuld::backup::archive::write(&bad, &m, &parts).unwrap();
    let err =
        b.rt.block_on(backups.restore(bad.to_str().unwrap()))
            .unwrap_err();
    assert_eq!(err.code(), "backup_failed", "{err}");
    assert!(
        err.to_string().contains("rolled back to the safety backup"),
        "{err}"
    );
    assert_eq!(
        b.psql(
            "arasul",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM owner_notes"
        ),
        "1,2,3,5"
    );
    assert_eq!(b.n8n_files(), n8n_now);
    b.wait_state("n8n", ServiceState::Healthy);
    let last = backups.runs().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.status),
        ("restore", RunStatus::Failed)
    );
    assert_eq!(
        b.psql("arasul", "SELECT count(*) FROM self_healing_events WHERE event_type = 'restore_failed' AND severity = 'CRITICAL'"),
        "1"
    );
}

/// A tmpfs mounted until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_backup_that_cannot_fit_on_the_stick_is_refused_with_the_numbers() {
    let b = BoxUnderTest::new("backup-full", false);
    let stick = Tmpfs::mount(&b.path("media/BACKUP"), "1m");
    let mut config = b.config.clone();
    config.backup.destination = DestinationKind::Usb;
    config.backup.usb_label = Some("BACKUP".into());
    let backups = b.backups(config);
    let err = b.rt.block_on(backups.create("manual")).unwrap_err();
    assert_eq!(err.code(), "insufficient_disk", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("of free space on usb:BACKUP, but only 1.0 MB is free"),
        "{msg}"
    );
    let run = backups.runs().pop().unwrap();
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Failed, Some(msg.as_str()))
    );
    assert_eq!(
        std::fs::read_dir(stick.0.join("arasul-backups"))
            .unwrap()
            .count(),
        0,
        "no archive and no .part on the stick"
    );
    assert!(!b.path("state/data-backups-staging").exists());
    // The failure is in the audit trail.
    assert_eq!(
        b.psql(
            "arasul",
            "SELECT count(*) FROM self_healing_events WHERE event_type = 'backup_failed'"
        ),
        "1"
    );
    // A stick that is not there is not a dir on the root disk.
    drop(stick);
    let err = b.rt.block_on(backups.create("manual")).unwrap_err();
    assert_eq!(err.code(), "destination_unavailable", "{err}");
}

/// moto's S3 server on a free port, stopped when dropped.
struct Moto(std::process::Child, u16);

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-p",
                &port.to_string(),
                "-H",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (scripts/test installs moto[server])");
        wait_until("moto to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Moto(child, port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn backups_go_to_s3_and_retention_deletes_the_old_ones_there() {
    let moto = Moto::start();
    let b = BoxUnderTest::new("backup-s3", false);
    std::fs::write(b.path("etc/secrets/s3-backup-access-key"), "AKIDTEST\n").unwrap();
    std::fs::write(
        b.path("etc/secrets/s3-backup-secret-key"),
        "not-so-secret\n",
    )
    .unwrap();
    let mut config = b.config.clone();
    config.backup.destination = DestinationKind::S3;
    config.backup.keep_daily = 1;
    config.backup.keep_weekly = 0;
    config.backup.s3 = Some(arasuld::backup::S3Config {
        endpoint: format!("http://127.0.0.1:{}", moto.1),
        bucket: "arasul-backups".into(),
        region: "eu-central-1".into(),
        prefix: "kiste/".into(),
    });
    assert!(config.backup.validate().is_empty());
    let bucket = arasuld::backup::s3::Bucket::open(
        config.backup.s3.as_ref().unwrap(),
        &config.paths.secrets_dir,
    )
    .unwrap();
    b.rt.block_on(async {
        // moto starts empty: the bucket is made with a plain PUT.
        let r = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{}/arasul-backups", moto.1))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        // Two older archives (of other days) and a file that is no archive.
        let old = b.path("old.tar");
        std::fs::write(&old, b"old").unwrap();
        for name in [
            "arasul-backup-20250101T033000Z.tar",
            "arasul-backup-20250102T033000Z.tar",
            "notes.txt",
        ] {
            bucket.put_file(name, &old).await.unwrap();
        }
    });
    let backups = b.backups(config);
    let run =
        b.rt.block_on(backups.create("manual"))
            .expect("the backup to S3 runs");
    assert_eq!(run.status, RunStatus::Good, "{run:?}");
    let name = run.file.clone().unwrap();
    assert_eq!(
        run.location.as_deref(),
        Some(format!("s3://arasul-backups/kiste/{name}").as_str())
    );
    let listed = b.rt.block_on(bucket.list()).unwrap();
    let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [name.as_str(), "notes.txt"],
        "retention kept the newest archive only"
    );
    assert_eq!(
        listed.iter().find(|(n, _)| *n == name).unwrap().1,
        run.size.unwrap()
    );
    // What comes back is the archive, byte for byte (every sha256 checks).
    let got = b.path("got.tar");
    b.rt.block_on(bucket.get_file(&name, &got)).unwrap();
    let m = arasuld::backup::archive::check(&got, None).unwrap();
    assert_eq!(m.tables.get("owner_notes"), Some(&3));
    assert!(!b.path("state/data-backups-staging").exists());
}
