//! Notifications end to end, with real parts: a crash-looping container on
//! the real Docker engine reaches `failed` and the owner gets one e-mail
//! (a real SMTP server, aiosmtpd), one webhook and one ntfy push (a local
//! HTTP receiver); an SMTP server that is down, and a database that is
//! down, lose nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arasuld::config::{Config, DatabaseConfig, Secret};
use arasuld::db::Db;
use arasuld::docker::ServiceState;
use arasuld::notify::worker::{DeliveryStatus, OutboxEntry, SPOOL_FILE};
use arasuld::notify::{Alert, Notifier, NotifyDeps, Severity};
use arasuld::tasks::Workers;

use super::Env;
use super::common::smtp::SmtpServer;
use super::common::{PrivatePostgres, free_port, wait_until};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

/// A local HTTP server that records every request and answers 200.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Serves on the current runtime.
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    g.lock().unwrap().push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                    });
                    "ok"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, got }
    }

    pub fn on(&self, path: &str) -> Vec<Received> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Webhook bodies of `kind`, as JSON.
    pub fn hooks_of(&self, path: &str, kind: &str) -> Vec<serde_json::Value> {
        self.on(path)
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }
}

/// A config with an e-mail (CRITICAL only), a webhook and an ntfy channel.
fn notify_config(state_dir: &Path, smtp_port: u16, http: SocketAddr, extra: &str) -> Config {
    let text = format!(
        r#"
mdns: {{hostname: testbox}}
paths: {{state_dir: {state}, secrets_dir: {state}/secrets}}
notify:
  retry_initial: 200ms
  retry_max: 1s
  send_timeout: 5s
{extra}
  channels:
    - name: mail
      min_severity: CRITICAL
      email: {{host: 127.0.0.1, port: {smtp_port}, security: none, from: "Box <box@example.org>", to: [owner@example.org]}}
    - name: hook
      webhook: {{url: "http://{http}/hook"}}
    - name: phone
      ntfy: {{server: "http://{http}", topic: box}}
"#,
        state = state_dir.display()
    );
    arasuld::config::parse("test", &text, std::iter::empty()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn spawn_notify(workers: &Workers, inbox: arasuld::notify::AlertInbox, db: &Db, config: Config) {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(config));
    std::mem::forget(tx);
    arasuld::notify::spawn(
        workers,
        NotifyDeps {
            inbox,
            db: db.clone(),
            config: rx,
        },
    );
}

#[test]
fn a_crash_looping_service_sends_one_email_and_one_webhook_within_10s_and_no_repeat() {
    let mut env = Env::new("heal-notify");
    let pg = super::private_pg();
    let smtp = SmtpServer::start(free_port(), &env.dir.path().join("maildir"));
    let receiver = env.rt.block_on(Receiver::start());
    let (notifier, inbox) = Notifier::new();
    env.notify = notifier;
    let r = env.start(env.catalog("  env: {TESTRT_MODE: exit-now}\n"), &pg.url());
    {
        let _g = env.rt.enter();
        let config = notify_config(&env.dir.path().join("state"), smtp.port, receiver.addr, "");
        spawn_notify(&r.workers, inbox, &r.db, config);
    }

    env.wait_state(&r.h, ServiceState::Failed, Duration::from_secs(60));
    let failed_at = Instant::now();
    wait_until(
        "the e-mail, the webhook and the push about the failed service",
        Duration::from_secs(10),
        || {
            (smtp.of_kind("service_failed").len() == 1
                && receiver.hooks_of("/hook", "service_failed").len() == 1
                && !receiver.on("/box").is_empty())
            .then_some(())
        },
    );
    eprintln!(
        "failed → e-mail and webhook in {} ms",
        failed_at.elapsed().as_millis()
    );
    let mail = smtp.of_kind("service_failed").remove(0);
    assert!(
        mail.contains("Subject: [testbox] CRITICAL: Service app failed"),
        "{mail}"
    );
    assert!(
        mail.contains("X-Arasul-Cause: service_failed:app"),
        "{mail}"
    );
    let hook = receiver.hooks_of("/hook", "service_failed").remove(0);
    assert_eq!(hook["box"], "testbox");
    assert_eq!(hook["severity"], "CRITICAL");
    assert_eq!(hook["cause"], "service_failed:app");
    assert!(hook["at"].as_str().unwrap().ends_with('Z'));
    let push = receiver
        .on("/box")
        .into_iter()
        .find(|p| {
            p.headers["Tags"]
                .to_str()
                .unwrap()
                .contains("service_failed")
        })
        .expect("an ntfy push about the failed service");
    assert_eq!(push.headers["Priority"], "5");
    assert_eq!(push.headers["Title"], "testbox: Service app failed");

    // Started again, it crash-loops into `failed` a second time: inside the
    // de-dup window that is not news.
    env.rt.block_on(r.h.start("app")).unwrap();
    wait_until("app failed a second time", Duration::from_secs(60), || {
        (env.logged_of("service_failed").len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        smtp.of_kind("service_failed").len(),
        1,
        "{:?}",
        smtp.messages()
    );
    assert_eq!(receiver.hooks_of("/hook", "service_failed").len(), 1);

    // The outbox in Postgres says where it went.
    let rows: Vec<OutboxEntry> = wait_until("the outbox row", Duration::from_secs(10), || {
        let rows = env
            .rt
            .block_on(arasuld::db::notifications::recent(r.db.pool(), 100))
            .ok()?;
        let failed: Vec<OutboxEntry> = rows
            .into_iter()
            .filter(|e| e.alert.kind == "service_failed")
            .collect();
        (failed.len() == 1 && !failed[0].is_pending()).then_some(failed)
    });
    let mut channels: Vec<(&str, DeliveryStatus)> = rows[0]
        .deliveries
        .iter()
        .map(|d| (d.channel.as_str(), d.status))
        .collect();
    channels.sort_by_key(|c| c.0);
    assert_eq!(
        channels,
        [
            ("hook", DeliveryStatus::Delivered),
            ("mail", DeliveryStatus::Delivered),
            ("phone", DeliveryStatus::Delivered)
        ]
    );
    env.stop(r);
}

#[test]
fn smtp_and_database_down_the_alert_waits_on_disk_and_is_delivered_once_both_are_back_and_a_restart_does_not_repeat_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pg = PrivatePostgres::init(free_port());
    let smtp_port = free_port();
    let receiver = rt.block_on(Receiver::start());
    let state = dir.path().join("state");
    let config = notify_config(&state, smtp_port, receiver.addr, "  dedup_window: 1h\n");
    let _g = rt.enter();
    let workers = Workers::new((&config.workers).into());
    let db_cfg = DatabaseConfig {
        url: Secret::new(pg.url()),
        min_connections: 0,
        max_connections: 2,
        connect_timeout: Duration::from_secs(1),
        retry_max: Duration::from_millis(300),
        check_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let db = Db::new(&db_cfg).unwrap();
    arasuld::db::spawn_connector(&workers, &db, &db_cfg, chrono::Utc::now());
    let (notifier, inbox) = Notifier::new();
    spawn_notify(&workers, inbox, &db, config.clone());

    let disk = Alert::new(
        Severity::Critical,
        "disk_level",
        "disk_level",
        "Disk almost full",
        "disk 96.0 % full (Critical)",
    );
    notifier.alert(disk.clone());
    // Repeats inside the window are only counted.
    notifier.alert(disk.clone());
    let spool = state.join(SPOOL_FILE);
    let spooled: Vec<OutboxEntry> = wait_until(
        "a failed e-mail try recorded in the spool",
        Duration::from_secs(10),
        || {
            let v: Vec<OutboxEntry> = serde_json::from_slice(&std::fs::read(&spool).ok()?).ok()?;
            let mail = v.first()?.deliveries.iter().find(|d| d.channel == "mail")?;
            (mail.attempts >= 1 && mail.status == DeliveryStatus::Pending).then_some(v)
        },
    );
    assert_eq!(spooled.len(), 1, "the repeat was de-duplicated");
    let mail = spooled[0]
        .deliveries
        .iter()
        .find(|d| d.channel == "mail")
        .unwrap();
    assert!(
        mail.last_error.as_deref().unwrap().contains("SMTP"),
        "{mail:?}"
    );
    // The webhook did not wait for the mail server.
    wait_until("the webhook", Duration::from_secs(5), || {
        (receiver.hooks_of("/hook", "disk_level").len() == 1).then_some(())
    });

    // The mail server comes up: the e-mail goes out, once.
    let smtp = SmtpServer::start(smtp_port, &dir.path().join("maildir"));
    wait_until(
        "the e-mail after SMTP is back",
        Duration::from_secs(10),
        || (smtp.of_kind("disk_level").len() == 1).then_some(()),
    );
    // The database comes up: the spool is flushed into the outbox.
    pg.start();
    let rows = wait_until(
        "the outbox row and no spool",
        Duration::from_secs(20),
        || {
            let rows = rt
                .block_on(arasuld::db::notifications::recent(db.pool(), 10))
                .ok()?;
            (rows.len() == 1 && !rows[0].is_pending() && !spool.exists()).then_some(rows)
        },
    );
    assert_eq!(rows[0].uid, spooled[0].uid);
    assert!(
        rows[0]
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(smtp.of_kind("disk_level").len(), 1, "sent once");
    let stuck = rt.block_on(workers.shutdown(Duration::from_secs(5)));
    assert!(stuck.is_empty(), "{stuck:?}");

    // A restart inside the window: the outbox remembers what went out.
    let workers = Workers::new((&config.workers).into());
    arasuld::db::spawn_connector(&workers, &db, &db_cfg, chrono::Utc::now());
    let (notifier, inbox) = Notifier::new();
    spawn_notify(&workers, inbox, &db, config);
    notifier.alert(disk);
    notifier.alert(Alert::new(
        Severity::Critical,
        "update_failed",
        "update_failed:2.0.0",
        "Update to 2.0.0 failed",
        "x",
    ));
    wait_until(
        "the news after the restart",
        Duration::from_secs(20),
        || (smtp.of_kind("update_failed").len() == 1).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.of_kind("disk_level").len(), 1, "still once");
    assert_eq!(receiver.hooks_of("/hook", "disk_level").len(), 1);
    let stuck = rt.block_on(workers.shutdown(Duration::from_secs(5)));
    assert!(stuck.is_empty(), "{stuck:?}");
}
