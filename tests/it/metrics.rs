//! Metrics end to end on the real binary: no sample lost across a database
//! outage, a stuck WebSocket client dropped without hurting the others,
//! promtool accepting /metrics, and the Jetson fixture tree read as a Jetson.

use crate::common;

use std::time::{Duration, Instant};

use common::docker::docker;
use common::*;
use futures::StreamExt;

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn get_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

#[test]
fn database_outage_of_two_minutes_loses_no_sample_and_flushes_in_order() {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "metrics:\n  interval: 1s\n  persist_every: 5s\n");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    wait_until("first flush", Duration::from_secs(30), || {
        let m = get_text(&cfg.url("/metrics"));
        (metric(&m, "arasul_metrics_persisted_total")? > 0.0).then_some(())
    });

    pg.stop();
    let outage = Instant::now();
    wait_until(
        "the daemon to see the outage",
        Duration::from_secs(20),
        || {
            let m = get_text(&cfg.url("/metrics"));
            (metric(&m, "arasul_database_up")? == 0.0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(120).saturating_sub(outage.elapsed()));
    let m = get_text(&cfg.url("/metrics"));
    let pending = metric(&m, "arasul_metrics_pending").unwrap();
    assert!(
        pending >= 110.0,
        "samples kept in memory during the outage: {pending}"
    );

    pg.start();
    wait_until("the backlog to be written", Duration::from_secs(60), || {
        let m = get_text(&cfg.url("/metrics"));
        (metric(&m, "arasul_database_up")? == 1.0 && metric(&m, "arasul_metrics_pending")? <= 2.0)
            .then_some(())
    });

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
    let line = d
        .lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("metrics writer stopped"))
        .cloned()
        .expect("writer's final line");
    let field = |k: &str| -> i64 {
        let start = line.find(&format!("{k}=")).unwrap() + k.len() + 1;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (taken, persisted, dropped) =
        (field("samples_taken"), field("persisted"), field("dropped"));
    assert_eq!(dropped, 0);
    assert_eq!(persisted, taken);
    assert!(taken >= 115, "taken {taken}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM metrics").fetch_one(&pool).await.unwrap();
        assert_eq!(rows, taken, "rows in Postgres = samples taken");
        // Inserted in time order: ids and timestamps sort the same way.
        let out_of_order: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT ts, lag(ts) OVER (ORDER BY id) AS prev FROM metrics) x WHERE ts <= prev",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(out_of_order, 0);
        let gaps: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_gaps").fetch_one(&pool).await.unwrap();
        assert_eq!(gaps, 0);
    });
}

#[test]
fn buffer_overflow_during_an_outage_drops_the_oldest_and_records_a_gap() {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    // A 3 s ring at 100 ms holds 30 samples: a 6 s outage overflows it.
    let cfg = TestConfig::new(
        &pg.url(),
        "metrics:\n  interval: 100ms\n  persist_every: 1s\n  ring: 3s\n",
    );
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    wait_until("first flush", Duration::from_secs(30), || {
        (metric(
            &get_text(&cfg.url("/metrics")),
            "arasul_metrics_persisted_total",
        )? > 0.0)
            .then_some(())
    });
    pg.stop();
    std::thread::sleep(Duration::from_secs(6));
    pg.start();
    wait_until("the backlog to be written", Duration::from_secs(60), || {
        let m = get_text(&cfg.url("/metrics"));
        (metric(&m, "arasul_database_up")? == 1.0 && metric(&m, "arasul_metrics_pending")? <= 12.0)
            .then_some(())
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        let (gaps, dropped): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), sum(dropped)::bigint FROM metric_gaps")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(gaps >= 1, "a gap event is recorded");
        assert!(dropped.unwrap_or(0) > 0);
    });
}

#[test]
fn fifty_stream_clients_keep_receiving_while_a_stuck_one_is_dropped() {
    let cfg = TestConfig::new(
        CLOSED_DB,
        "metrics:\n  interval: 100ms\n  stream_interval: 100ms\n  stream_client_timeout: 1s\n",
    );
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let url = format!("ws://127.0.0.1:{}/api/metrics/live-stream", cfg.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (stuck, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut readers = Vec::new();
        // Every reader reads until the same moment, well after the check below.
        let end = Instant::now() + Duration::from_secs(9);
        for _ in 0..49 {
            // Paced under the metrics rate limit (20/s per client IP).
            tokio::time::sleep(Duration::from_millis(55)).await;
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            readers.push(tokio::spawn(async move {
                let mut count = 0u32;
                let mut max_gap = Duration::ZERO;
                let mut last = Instant::now();
                while Instant::now() < end {
                    match tokio::time::timeout(end - Instant::now(), ws.next()).await {
                        Ok(Some(Ok(m))) if m.is_text() => {
                            let v: serde_json::Value =
                                serde_json::from_str(m.to_text().unwrap()).unwrap();
                            assert!(v["ts"].is_string());
                            count += 1;
                            max_gap = max_gap.max(last.elapsed());
                            last = Instant::now();
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(other) => panic!("reader lost its stream: {other:?}"),
                        Err(_) => break,
                    }
                }
                (count, max_gap)
            }));
        }
        // After the pong timeout (1 s) only the 49 readers are still connected.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let m = get_text_async(&cfg.url("/metrics")).await;
        assert_eq!(metric(&m, "arasul_live_stream_clients"), Some(49.0));
        for r in readers {
            let (count, max_gap) = r.await.unwrap();
            assert!(
                count >= 30,
                "a reading client got only {count} samples in 6+ s"
            );
            assert!(
                max_gap < Duration::from_millis(1000),
                "a reading client waited {max_gap:?}"
            );
        }
        // When the stuck client finally reads, its stream ends after what was buffered.
        let mut stuck = stuck;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stuck.next().await {
                    Some(Ok(m)) if m.is_close() => return true,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return true,
                }
            }
        })
        .await;
        assert_eq!(ended, Ok(true), "the stuck client was never disconnected");
    });
}

async fn get_text_async(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[test]
fn promtool_accepts_the_prometheus_exposition() {
    // A daemon with a supervised service, so every family has data.
    let svc = crate::prometheus::Supervised::start("promtool", "healing:\n  enabled: false\n");
    let cfg = &svc.cfg;
    for path in ["/api/health", "/api/health", "/api/no-such-route", "/"] {
        get_text(&cfg.url(path));
    }
    let text = wait_until("a sample", Duration::from_secs(10), || {
        let t = get_text(&cfg.url("/metrics"));
        t.contains("arasul_cpu_usage_ratio").then_some(t)
    });
    for line in [
        "arasul_worker_up{worker=\"metrics-sampler\"} 1",
        "arasul_service_up{service=\"app\"} 1",
        "arasul_service_state{service=\"app\",state=\"healthy\"} 1",
        "arasul_service_state{service=\"app\",state=\"failed\"} 0",
        "arasul_service_stopped_on_purpose{service=\"app\"} 0",
        "arasul_service_restarts_total{service=\"app\"} 0",
        "arasul_collector_up{series=\"process\"} 1",
        "arasul_collector_up{series=\"cpu\"} 1",
        "arasul_http_requests_total{route=\"health\",code=\"200\"} 2",
        "arasul_http_requests_total{route=\"api\",code=\"404\"} 1",
        "arasul_http_requests_total{route=\"web\",code=\"200\"} 1",
        "arasul_http_request_duration_seconds_count{route=\"health\"} 2",
        "arasul_http_request_duration_seconds_bucket{route=\"health\",le=\"+Inf\"} 2",
        "arasul_update_runs_total{result=\"done\"} 0",
        "arasul_healing_actions_total{category=\"A\",outcome=\"ok\"} 0",
        "arasul_model_pulls_total{result=\"failed\"} 0",
        "arasul_backup_runs_total{kind=\"backup\",result=\"failed\"} 0",
        "arasul_notification_deliveries_total{result=\"delivered\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for family in [
        "arasul_start_time_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "arasul_worker_heartbeat_age_seconds",
        "arasul_memory_usage_ratio",
        "arasul_disk_usage_ratio",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    // The process is the daemon: its resident memory is megabytes, its
    // start within the last minutes, its descriptors counted.
    let rss = metric(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 4e6 && rss < 500e6, "{rss}");
    let now = chrono::Utc::now().timestamp() as f64;
    let start = metric(&text, "process_start_time_seconds").unwrap();
    assert!(
        start <= now + 1.0 && start > now - 300.0,
        "{start} vs {now}"
    );
    let own = metric(&text, "arasul_start_time_seconds").unwrap();
    assert!((own - start).abs() < 30.0, "{own} vs {start}");
    assert!(metric(&text, "process_open_fds").unwrap() >= 5.0);
    // promtool: valid, and no lint complaint (names, units, _total, HELP).
    let (ok, out) = crate::prometheus::promtool(&["check", "metrics"], &text);
    assert!(ok && out.trim().is_empty(), "promtool: {out}");
}

#[test]
fn a_killed_service_restarted_by_self_healing_shows_in_the_counters() {
    // Healing every second; the database (closed here) is not lost for an hour.
    let svc = crate::prometheus::Supervised::start(
        "healcount",
        "healing:\n  tick: 1s\n  critical: {db_lost_after: 1h}\n",
    );
    let cfg = &svc.cfg;
    let before = get_text(&cfg.url("/metrics"));
    let ok_a = "arasul_healing_actions_total{category=\"A\",outcome=\"ok\"}";
    assert_eq!(metric(&before, ok_a), Some(0.0));
    docker(&["kill", &svc.project.container("app")]);
    let after = wait_until(
        "self-healing to restart the service",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(250));
            let t = get_text(&cfg.url("/metrics"));
            (metric(&t, ok_a)? >= 1.0 && metric(&t, "arasul_service_up{service=\"app\"}")? == 1.0)
                .then_some(t)
        },
    );
    assert!(
        metric(&after, "arasul_service_restarts_total{service=\"app\"}").unwrap() >= 1.0,
        "{after}"
    );
    // Running again: no exit code to show (it is shown while exited).
    assert_eq!(
        metric(&after, "arasul_service_last_exit_code{service=\"app\"}"),
        None
    );
    assert_eq!(
        metric(
            &after,
            "arasul_healing_actions_total{category=\"A\",outcome=\"failed\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_jetson_fixture_tree_is_sampled_through_the_tegra_backend() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/orin");
    let cfg = TestConfig::new(
        CLOSED_DB,
        "metrics:\n  interval: 100ms\n  gpu_backend: auto\n",
    );
    // Point the roots at the fixture (appending to paths: would duplicate the section).
    let text = std::fs::read_to_string(cfg.path()).unwrap().replace(
        "paths:\n",
        &format!("paths:\n  proc_root: {fx}/proc\n  sys_root: {fx}/sys\n  etc_root: {fx}/etc\n"),
    );
    std::fs::write(cfg.path(), text).unwrap();
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let live = wait_until("a sample", Duration::from_secs(10), || {
        let (_, v) = get_json(&cfg.url("/api/metrics/live"))?;
        v["sample"].is_object().then_some(v)
    });
    assert_eq!(live["gpu_backend"], "tegra");
    let gpu = &live["sample"]["gpu"];
    assert_eq!(gpu["backend"], "tegra");
    assert!(gpu["utilization_percent"].is_number());
    assert!(live["sample"]["temperature_c"].as_f64().unwrap() > 0.0);
    let (_, info) = get_json(&cfg.url("/api/system/info")).unwrap();
    assert_eq!(info["platform"]["jetpack"], "6.2");
    assert_eq!(info["platform"]["l4t"], "36.4.3");
}
