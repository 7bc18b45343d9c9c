//! Reachability probes for the network card: "is the internet there" (a TCP
//! connect to a configured host:port) and "do n8n's webhooks answer" (an
//! HTTP GET). Each has a 2 s timeout; the worker refreshes them every 60 s
//! and the API serves the cached result.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tasks::{WorkerKind, WorkerName, Workers};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
pub const REFRESH: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Reachability {
    /// None when no probe is configured or none has run yet.
    pub internet_reachable: Option<bool>,
    pub webhook_reachable: Option<bool>,
    pub checked_at: Option<DateTime<Utc>>,
}

/// TCP connect within 2 s.
pub async fn tcp_reachable(host_port: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(host_port)).await,
        Ok(Ok(_))
    )
}

/// A GET within 2 s; any status below 500 counts as answering.
pub async fn http_answers(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return https_answers(url).await;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let probe = async {
        let mut s = TcpStream::connect(&addr).await.ok()?;
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: arasuld\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).await.ok()?;
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(code < 500)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

/// The same over HTTPS. The box's own front door (a loopback address) may
/// have a self-signed certificate: its chain is not checked there, and
/// nothing secret is sent.
async fn https_answers(url: &str) -> bool {
    let own = reqwest::Url::parse(url).ok().is_some_and(|u| {
        u.host_str().is_some_and(|h| {
            h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        })
    });
    let Ok(client) = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .danger_accept_invalid_certs(own)
        .build()
    else {
        return false;
    };
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() < 500)
}

/// What `metrics.webhook_check: auto` probes: n8n's webhooks through the
/// front door on this box, HTTPS when it is on (a 404 from n8n answers; a
/// 503 from arasuld, n8n not running, does not).
pub fn front_door_webhook(listen: std::net::SocketAddr, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!(
        "{scheme}://{ip}:{}/webhook/arasul-reachability",
        listen.port()
    )
}

/// Spawns the `reachability` worker: refreshes the hub's cached
/// reachability every [`REFRESH`]; an empty target is not probed.
pub fn spawn(workers: &Workers, hub: super::MetricsHub, internet: String, webhook: String) {
    workers.every(
        WorkerName::Reachability,
        WorkerKind::Auxiliary,
        REFRESH,
        move |_| refresh(hub.clone(), internet.clone(), webhook.clone()),
    );
}

/// One round: both probes at once, the result cached in the hub.
async fn refresh(hub: super::MetricsHub, internet: String, webhook: String) -> anyhow::Result<()> {
    let (inet, hook) = tokio::join!(
        async {
            if internet.is_empty() {
                None
            } else {
                Some(tcp_reachable(&internet).await)
            }
        },
        async {
            if webhook.is_empty() {
                None
            } else {
                Some(http_answers(&webhook).await)
            }
        }
    );
    hub.set_reachability(Reachability {
        internet_reachable: inet,
        webhook_reachable: hook,
        checked_at: Some(Utc::now()),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_see_a_local_listener_and_a_closed_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        assert!(tcp_reachable(&addr.to_string()).await);
        assert!(http_answers(&format!("http://{addr}/healthz")).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!tcp_reachable(&closed.to_string()).await);
        assert!(!http_answers(&format!("http://{closed}/healthz")).await);
    }

    /// A one-shot HTTPS server with a self-signed certificate, answering
    /// `status` to every request.
    async fn https_server(status: u16) -> std::net::SocketAddr {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::TlsConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            cert: None,
            key: None,
            self_signed: true,
        };
        let tls = crate::api::tls::open(&cfg, dir.path(), &["localhost".into()], &[]).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _dir = dir;
            while let Ok((s, _)) = l.accept().await {
                let Ok(mut s) = tls.acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_front_door_probe_reaches_its_own_https_and_tells_404_from_503() {
        assert_eq!(
            front_door_webhook("0.0.0.0:80".parse().unwrap(), false),
            "http://127.0.0.1:80/webhook/arasul-reachability"
        );
        assert_eq!(
            front_door_webhook("[::]:443".parse().unwrap(), true),
            "https://[::1]:443/webhook/arasul-reachability"
        );
        // n8n answering (its 404 for an unknown hook) vs arasuld's 503.
        let up = https_server(404).await;
        assert!(http_answers(&format!("https://{up}/webhook/x")).await);
        let down = https_server(503).await;
        assert!(!http_answers(&format!("https://{down}/webhook/x")).await);
        // Only the box's own loopback address goes without a chain check.
        assert!(!http_answers(&format!("https://localhost:{}/webhook/x", up.port())).await);
    }
}
