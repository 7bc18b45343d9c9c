//! Backups through the real binary: the dashboard's calls (list, settings
//! to a stick and back, run now, restore) and `arasuld backup`, which does
//! not fight a running daemon.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::*;

#[test]
fn the_dashboard_turns_backups_to_a_stick_runs_one_now_and_restores_it() {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "metrics:\n  webhook_check: \"\"\n");
    let _daemon = Daemon::start(&cfg.path(), &[]);
    wait_until("the daemon to answer", Duration::from_secs(30), || {
        get_json(&cfg.url("/api/health")).filter(|(s, _)| *s == 200)
    });
    let token = admin_token(&cfg);
    let url = |p: &str| cfg.url(p);

    let (s, v) = get_json_auth(&url("/api/backups"), &token).unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["runs"], json!([]));
    assert_eq!(v["last_good"], Value::Null);
    assert_eq!(
        v["settings"]["schedule"],
        json!({"enabled": true, "at": "03:30"})
    );
    assert_eq!(v["destination"], "local");

    // Daily backups to the stick called BACKUP: a drop-in, applied at once.
    let (s, v) = put_json_auth(
        &url("/api/backups/settings"),
        &token,
        json!({"daily": true, "destination": "usb", "usb_label": "BACKUP"}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["settings"]["destination"], "usb");
    let drop_in = cfg.dir.path().join("arasuld.yaml.d/72-backups.yaml");
    let text = std::fs::read_to_string(&drop_in).unwrap();
    assert!(text.contains("usb_label: BACKUP"), "{text}");
    // A label that cannot be one is refused and changes nothing.
    let (s, v) = put_json_auth(
        &url("/api/backups/settings"),
        &token,
        json!({"usb_label": "a/b"}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_config")),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&drop_in).unwrap(), text);
    let (s, v) = put_json_auth(&url("/api/backups/settings"), &token, json!({}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("nothing_to_change")),
        "{v}"
    );
    // The stick is not plugged in: said so, in the list too.
    let (s, v) = post_json_auth(&url("/api/backups"), &token, json!({}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("destination_unavailable")),
        "{v}"
    );

    // Back to this box; a backup now.
    let (s, v) = put_json_auth(
        &url("/api/backups/settings"),
        &token,
        json!({"destination": "local"}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, run) = post_json_auth(&url("/api/backups"), &token, json!({}));
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "good", "{run}");
    assert!(run["size"].as_u64().unwrap() > 10_000, "{run}");
    let (_, v) = get_json_auth(&url("/api/backups"), &token).unwrap();
    assert_eq!(v["last_good"]["id"], run["id"]);
    assert!(
        (0..120).contains(&v["last_good_age_s"].as_i64().unwrap()),
        "{v}"
    );
    assert_eq!(v["overdue"], false);
    let statuses: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["good", "failed"], "newest first");

    // The CLI lists the runs, and does not back up behind the daemon's back.
    let out = Command::new(bin())
        .arg("--config")
        .arg(cfg.path())
        .args(["backup", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(run["id"].as_str().unwrap()));
    let out = Command::new(bin())
        .arg("--config")
        .arg(cfg.path())
        .args(["backup", "create"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("arasuld is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restores: bad requests first, then the backup put back.
    let (s, v) = post_json_auth(&url("/api/backups/restore"), &token, json!({}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, v) = post_json_auth(
        &url("/api/backups/restore"),
        &token,
        json!({"id": "19990101T000000Z"}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("backup_not_found")),
        "{v}"
    );
    let (s, v) = post_json_auth(
        &url("/api/backups/restore"),
        &token,
        json!({"id": run["id"]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["status"].as_str()),
        (Some("restore"), Some("good")),
        "{v}"
    );
    // The daemon still answers the admin afterwards (sessions were carried).
    let (s, _) = get_json_auth(&url("/api/backups"), &token).unwrap();
    assert_eq!(s, 200);
}
