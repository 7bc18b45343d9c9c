//! Admin auth costs: one login (argon2id at the shipped parameters,
//! m = 19456 KiB, t = 2, p = 1), one token check, and 200 logins fired at
//! once (peak RSS and latency percentiles; the hashing semaphore is what
//! keeps memory flat). `cargo bench --bench auth`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arasuld::auth::{Auth, AuthConfig, Now};
use criterion::Criterion;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open() -> (tempfile::TempDir, Arc<Auth>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (auth, _) = Auth::open(AuthConfig {
        secrets_dir: dir.path().join("secrets"),
        ..AuthConfig::default()
    })
    .unwrap();
    let pw = std::fs::read_to_string(auth.secrets().initial_password_path())
        .unwrap()
        .trim()
        .to_owned();
    (dir, Arc::new(auth), pw)
}

/// 200 logins at once, each from its own address (one address would be
/// throttled by the lockout's in-flight limit, which is the point of it).
fn concurrent_logins(rt: &tokio::runtime::Runtime, n: usize) {
    let (_dir, auth, pw) = open();
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (auth, pw) = (auth.clone(), pw.clone());
                tokio::spawn(async move {
                    let ip: IpAddr =
                        format!("10.{}.{}.{}", i / 62500, (i / 250) % 250, i % 250 + 1)
                            .parse()
                            .unwrap();
                    let t = Instant::now();
                    auth.login("admin", &pw, ip, Some("bench"), Now::current())
                        .await
                        .expect("login");
                    t.elapsed()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "auth/concurrent_logins: n={n} permits={} peak_concurrency={} wall={:.2?} p50={:.2?} p99={:.2?} max={:.2?} rss_before={} KiB peak_rss(VmHWM)={} KiB",
        arasuld::auth::DEFAULT_HASH_CONCURRENCY,
        auth.hasher().peak_concurrency(),
        wall,
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1],
        rss_before,
        status_kib("VmHWM:"),
    );
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (_dir, auth, pw) = open();
    let ip: IpAddr = "192.168.1.2".parse().unwrap();
    let mut g = c.benchmark_group("auth");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("login_argon2id_19MiB_t2", |b| {
        b.iter(|| {
            let ok = rt
                .block_on(auth.login("admin", &pw, ip, None, Now::current()))
                .unwrap();
            // The DB layer would take these; keep the queues from growing.
            auth.drain_session_writes();
            auth.drain_audit();
            ok
        })
    });
    g.finish();

    let ok = rt
        .block_on(auth.login("admin", &pw, ip, None, Now::current()))
        .unwrap();
    let token = ok.token.expose().clone();
    c.bench_function("auth/token_check", |b| {
        b.iter(|| {
            let v = auth.verify(&token, Now::current()).unwrap();
            auth.drain_session_writes();
            v
        })
    });
}

fn main() {
    // As the daemon does at start (see the function's doc).
    arasuld::auth::password::release_large_allocations();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // First, so VmHWM reflects the burst and not criterion's own work.
    concurrent_logins(&rt, 200);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt);
    c.final_summary();
}
