//! Reachability probes for the network card: "is the internet there" (a TCP
//! connect to a configured host:port) and "do n8n's webhooks answer" (an
//! HTTP GET). Each has a 2 s timeout; the worker refreshes them every 60 s
//! and the API serves the cached result.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tasks::WorkerCtx;

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

/// A plain-HTTP GET within 2 s; any status below 500 counts as answering.
pub async fn http_answers(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        // https would need a TLS client for one probe; say "unknown" instead of guessing.
        return false;
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

/// The worker that refreshes the cached reachability.
pub async fn run(
    ctx: WorkerCtx,
    hub: super::MetricsHub,
    internet: String,
    webhook: String,
) -> anyhow::Result<()> {
    loop {
        ctx.beat();
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
        if !ctx.sleep_beating(REFRESH).await {
            return Ok(());
        }
    }
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
}
