//! The notification settings through the real daemon's API: channels set
//! (credentials to the secrets dir, never the YAML or an answer), a test
//! sent and signed, bad input refused with nothing changed, a dead channel
//! reported as such, and a locked-out address reported to the owner.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::CLOSED_DB;
use super::common::*;

type Got = Arc<Mutex<Vec<(String, axum::http::HeaderMap, Vec<u8>)>>>;

/// A local HTTP receiver recording every request (path, headers, body).
fn receiver(rt: &tokio::runtime::Runtime) -> (std::net::SocketAddr, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock()
                    .unwrap()
                    .push((uri.path().to_owned(), headers, body.to_vec()));
                "ok"
            }
        },
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

#[test]
fn notification_channels_are_set_tested_and_refused_through_the_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, got) = receiver(&rt);
    // No rate limit from here: the per-address lockout is what is tested.
    let cfg = TestConfig::with_http(CLOSED_DB, "  rate_limit_exempt: [127.0.0.0/8]\n", "");
    let _d = Daemon::start(&cfg.path(), &[]);
    wait_until("health", Duration::from_secs(30), || {
        get_json(&cfg.url("/api/health"))
    });
    let token = admin_token(&cfg);
    let url = cfg.url("/api/notifications");

    let (status, body) = get_json_auth(&url, &token).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channels"], serde_json::json!([]));
    assert_eq!(body["dedup_window"], "1h");
    assert_eq!(body["outbox_available"], false, "the database is down");

    let secret = "s3cret-signing-key";
    let hook = format!("http://{addr}/hook");
    let (status, body) = put_json_auth(
        &url,
        &token,
        serde_json::json!({
            "channels": [{"name": "hook", "min_severity": "INFO", "webhook": {"url": hook}, "credential": secret}],
            "dedup_window": "30m",
            "quiet_hours": "22:00-07:00",
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channels"][0]["name"], "hook");
    assert_eq!(body["channels"][0]["kind"], "webhook");
    assert_eq!(body["channels"][0]["credential_set"], true);
    assert_eq!(body["dedup_window"], "30m");
    assert_eq!(body["quiet_hours"], "22:00-07:00");
    assert!(!body.to_string().contains(secret), "{body}");
    let file = cfg.dir.path().join("secrets/notify-hook.secret");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let drop_in =
        std::fs::read_to_string(cfg.dir.path().join("arasuld.yaml.d/71-notifications.yaml"))
            .unwrap();
    assert!(
        drop_in.contains("hook") && !drop_in.contains(secret),
        "{drop_in}"
    );

    // A test goes out now, signed with the channel's secret.
    let (status, body) = post_json_auth(
        &format!("{url}/test"),
        &token,
        serde_json::json!({"channel": "hook"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"], true);
    let (path, headers, sent) = got.lock().unwrap().last().cloned().expect("the test hook");
    assert_eq!(path, "/hook");
    let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(v["kind"], "test");
    assert_eq!(v["box"], "arasul");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let want = format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, &sent).as_ref())
    );
    assert_eq!(headers["X-Arasul-Signature"], want.as_str());

    // Bad input: 400, and nothing changed.
    for (bad, names) in [
        (
            serde_json::json!({"channels": [{"name": "mail", "email": {"host": "smtp.example.org", "security": "none", "from": "a@b.c", "to": ["d@e.f"]}}]}),
            "email.security",
        ),
        (
            serde_json::json!({"channels": [], "quiet_hours": "late"}),
            "quiet_hours",
        ),
        (
            serde_json::json!({"channels": [{"name": "x", "webhook": {"url": hook}, "credential": "two\nlines"}]}),
            "credential",
        ),
    ] {
        let (status, body) = put_json_auth(&url, &token, bad);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_notifications");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{body}"
        );
    }
    let (_, body) = get_json_auth(&url, &token).unwrap();
    assert_eq!(body["channels"].as_array().unwrap().len(), 1);
    assert_eq!(body["dedup_window"], "30m");

    // A channel nobody answers: the test says so, with the channel's error.
    let (status, body) = put_json_auth(
        &url,
        &token,
        serde_json::json!({"channels": [
            {"name": "hook", "min_severity": "INFO", "webhook": {"url": hook}},
            {"name": "dead", "webhook": {"url": "http://127.0.0.1:1/x"}}
        ], "dedup_window": "30m"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["channels"][0]["credential_set"], true,
        "kept when absent"
    );
    assert_eq!(body["quiet_hours"], serde_json::Value::Null);
    let (status, body) = post_json_auth(
        &format!("{url}/test"),
        &token,
        serde_json::json!({"channel": "dead"}),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "channel_failed");
    let (status, _) = post_json_auth(
        &format!("{url}/test"),
        &token,
        serde_json::json!({"channel": "nope"}),
    );
    assert_eq!(status, 404);

    // Someone guessing the password from this address: the owner hears of it.
    for _ in 0..5 {
        let (status, _) = post_json_auth(
            &cfg.url("/api/auth/login"),
            "",
            serde_json::json!({"username": "admin", "password": "wrong-guess-123"}),
        );
        assert_eq!(status, 401);
    }
    wait_until("the lockout alert", Duration::from_secs(10), || {
        got.lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
            .find(|v| v["kind"] == "admin_locked_out")
    });
}
