//! Live and historical metrics, the overall status, system facts, network,
//! the WebSocket live stream and the Prometheus exposition.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiQuery};
use crate::build_info;
use crate::metrics::collect::{NetInterface, PlatformInfo, Sample, network_interfaces};
use crate::metrics::reach::Reachability;
use crate::metrics::ring::{self, History};
use crate::metrics::status::{self, Level, Reason};
use crate::state::AppState;

const MAX_POINTS: usize = 5_000;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Live {
    /// The latest sample; null until the first one is taken.
    pub sample: Option<Sample>,
    /// `nvml`, `tegra` or `none`.
    pub gpu_backend: &'static str,
    pub timestamp: DateTime<Utc>,
}

/// The latest sample of every series.
#[utoipa::path(get, path = "/api/metrics/live", tag = "metrics",
    responses((status = 200, body = Live)))]
pub async fn live(State(state): State<AppState>) -> Json<Live> {
    Json(Live {
        sample: state.metrics.latest().map(|s| (*s).clone()),
        gpu_backend: state.metrics.gpu_backend(),
        timestamp: Utc::now(),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// `1h`, `6h`, `24h` or `7d` back from now (default `1h`); ignored when `from` is given.
    pub range: Option<String>,
    /// Start (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), default now.
    pub to: Option<DateTime<Utc>>,
    /// Most buckets per series (default 500, at most 5000).
    pub points: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryResponse {
    #[serde(flatten)]
    pub history: History,
    pub timestamp: DateTime<Utc>,
}

/// Downsampled history (min/avg/max per bucket, so peaks survive), from
/// memory when the ring covers the range, else from the database.
#[utoipa::path(get, path = "/api/metrics/history", tag = "metrics", params(HistoryQuery),
    responses(
        (status = 200, body = HistoryResponse),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "Range older than memory and the database is down", body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let now = Utc::now();
    let to = q.to.unwrap_or(now);
    let from = match (q.from, q.range.as_deref()) {
        (Some(f), _) => f,
        (None, r) => {
            let span = match r.unwrap_or("1h") {
                "1h" => chrono::Duration::hours(1),
                "6h" => chrono::Duration::hours(6),
                "24h" => chrono::Duration::hours(24),
                "7d" => chrono::Duration::days(7),
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_range",
                        format!("range must be 1h, 6h, 24h or 7d, not {other:?}"),
                    ));
                }
            };
            to - span
        }
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    let points = q.points.unwrap_or(500);
    if points == 0 || points > MAX_POINTS {
        return Err(ApiError::bad_request(
            "invalid_points",
            format!("points must be between 1 and {MAX_POINTS}"),
        ));
    }
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let from_memory = state
        .metrics
        .with_ring(|r| r.oldest_ms().is_some_and(|o| o <= from_ms));
    // With the database down, memory serves what it has (the first bucket
    // shows how far back that reaches) rather than nothing.
    let history = if from_memory || !state.db.status().up {
        state
            .metrics
            .with_ring(|r| ring::history_from_ring(r, from_ms, to_ms, points))
    } else {
        crate::db::metrics::history(state.db.pool(), from_ms, to_ms, points).await?
    };
    Ok(Json(HistoryResponse {
        history,
        timestamp: now,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SystemStatus {
    /// OK, WARNING or CRITICAL.
    pub level: Level,
    /// Why, worst first, in words.
    pub reasons: Vec<Reason>,
    /// Each supervised service's state.
    pub services: Vec<ServiceBrief>,
    pub database_up: bool,
    /// When the latest sample was taken.
    pub last_update: Option<DateTime<Utc>>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceBrief {
    pub name: String,
    pub state: crate::docker::ServiceState,
    pub critical: bool,
}

/// The overall level for the status header (SPEC §4 rules).
#[utoipa::path(get, path = "/api/system/status", tag = "system",
    responses((status = 200, body = SystemStatus)))]
pub async fn system_status(State(state): State<AppState>) -> Json<SystemStatus> {
    let latest = state.metrics.latest();
    let db_up = state.db.status().up;
    let now = Utc::now();
    let (_, mut reasons) = state
        .metrics
        .with_ring(|r| status::evaluate(latest.as_deref(), r, db_up, now.timestamp_millis()));
    let services = state.services.services();
    reasons.extend(status::service_reasons(&services));
    // A restart in the last 10 minutes: WARNING, with the cause from the
    // self-healing log (read only when there is such a restart).
    let since = now - chrono::Duration::seconds(status::RESTART_WARN_SECS);
    if services
        .iter()
        .any(|s| s.last_restart_at.is_some_and(|t| t >= since))
    {
        let log_dir = state.config().paths.log_dir.clone();
        let svc = services.clone();
        let restarted = tokio::task::spawn_blocking(move || {
            status::restart_reasons(&svc, now, |name| {
                crate::healing::record::restart_cause(&log_dir, name, since)
            })
        })
        .await
        .unwrap_or_default();
        reasons.extend(restarted);
    }
    let (level, reasons) = status::combine(reasons);
    Json(SystemStatus {
        level,
        reasons,
        services: services
            .iter()
            .map(|s| ServiceBrief {
                name: s.name.clone(),
                state: s.state,
                critical: s.critical,
            })
            .collect(),
        database_up: db_up,
        last_update: latest.map(|s| s.ts),
        timestamp: now,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SystemInfo {
    pub version: &'static str,
    pub build_hash: &'static str,
    pub hostname: String,
    /// JetPack/L4T on a Jetson, else the OS name from os-release.
    pub platform: PlatformInfo,
    pub gpu_backend: &'static str,
    /// How each service that may use the GPU gets it (`gpu: auto|required`
    /// in the catalog): `nvidia-runtime`, `device-request` or `cpu`.
    pub service_gpu: std::collections::BTreeMap<String, String>,
    pub daemon_uptime_seconds: i64,
    pub system_uptime_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// Version, build, platform, hostname and uptime.
#[utoipa::path(get, path = "/api/system/info", tag = "system",
    responses((status = 200, body = SystemInfo)))]
pub async fn system_info(State(state): State<AppState>) -> Json<SystemInfo> {
    let now = Utc::now();
    let proc_root = state.config().paths.proc_root.clone();
    let system_uptime = std::fs::read_to_string(proc_root.join("uptime"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    Json(SystemInfo {
        version: build_info::VERSION,
        build_hash: build_info::BUILD_HASH,
        hostname: hostname(),
        platform: state.metrics.platform().clone(),
        gpu_backend: state.metrics.gpu_backend(),
        service_gpu: state
            .services
            .services()
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.gpu.clone()?)))
            .collect(),
        daemon_uptime_seconds: (now - state.started_at).num_seconds(),
        system_uptime_seconds: system_uptime,
        started_at: state.started_at,
        timestamp: now,
    })
}

/// The kernel's host name (`uname -n`, what gethostname(2) returns).
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Network {
    pub hostname: String,
    /// The name the box answers to on the LAN: the one Avahi confirmed
    /// (`arasul-2.local` after a name collision), else the configured one.
    pub mdns_name: String,
    pub interfaces: Vec<NetInterface>,
    /// HTTPS, when it is on: its port and the certificate's fingerprint.
    pub tls: Option<crate::state::TlsInfo>,
    #[serde(flatten)]
    pub reachability: Reachability,
    pub timestamp: DateTime<Utc>,
}

/// Addresses of the non-loopback interfaces, internet and webhook reachability (cached 60 s).
#[utoipa::path(get, path = "/api/system/network", tag = "system",
    responses((status = 200, body = Network)))]
pub async fn system_network(State(state): State<AppState>) -> Json<Network> {
    Json(Network {
        hostname: hostname(),
        mdns_name: state
            .mdns
            .borrow()
            .host
            .clone()
            .unwrap_or_else(|| format!("{}.local", state.config().mdns.hostname)),
        interfaces: network_interfaces(),
        tls: state.tls.clone(),
        reachability: state.metrics.reachability(),
        timestamp: Utc::now(),
    })
}

/// One JSON sample per `metrics.stream_interval`. A client that stops
/// reading (no pong within `metrics.stream_client_timeout`, or a send that
/// cannot complete) is dropped; it never slows the sampler or other clients.
#[utoipa::path(get, path = "/api/metrics/live-stream", tag = "metrics",
    responses((status = 101, description = "WebSocket: each text message is a Sample as JSON")))]
pub async fn live_stream(
    State(state): State<AppState>,
    slot: super::serve::StreamSlot,
    ws: WebSocketUpgrade,
) -> Response {
    let timeout = state.config().metrics.stream_client_timeout;
    ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        stream_to(socket, state, timeout).await
    })
}

async fn stream_to(socket: WebSocket, state: AppState, timeout: Duration) {
    let _client = state.metrics.stream_client();
    let mut samples = state.metrics.subscribe_stream();
    let (mut tx, mut rx) = socket.split();
    let send_timeout = timeout;
    let mut ping = tokio::time::interval(timeout / 3);
    ping.tick().await;
    let mut last_pong = tokio::time::Instant::now();
    if let Some(s) = state.metrics.latest()
        && let Ok(json) = serde_json::to_string(s.as_ref())
        && tx.send(Message::Text(json.into())).await.is_err()
    {
        return;
    }
    let why = loop {
        tokio::select! {
            msg = samples.recv() => match msg {
                Ok(json) => {
                    match tokio::time::timeout(send_timeout, tx.send(Message::Text(json.as_ref().into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break "send failed",
                        Err(_) => break "send timed out",
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break "too slow",
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break "shutting down",
            },
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Pong(_))) => last_pong = tokio::time::Instant::now(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "closed by client",
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > timeout {
                    break "no pong";
                }
                if !matches!(tokio::time::timeout(send_timeout, tx.send(Message::Ping(Vec::new().into()))).await, Ok(Ok(()))) {
                    break "ping failed";
                }
            }
        }
    };
    tracing::debug!(reason = why, "live-stream client dropped");
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let latest = state.metrics.latest();
    let (taken, persisted, dropped, pending) = state.metrics.with_ring(|r| {
        (
            r.taken(),
            r.persisted_total(),
            r.dropped_total(),
            r.pending() as u64,
        )
    });
    let workers = state.workers.statuses();
    let services = state.services.services();
    let proc_root = state.config().paths.proc_root.clone();
    // A handful of small files under /proc/self: no need for a blocking thread.
    let process = crate::metrics::collect::process::read_self(&proc_root)
        .inspect_err(|e| tracing::debug!(error = %e, "process metrics not read"))
        .ok();
    let http = crate::metrics::counters::HTTP.snapshot();
    let counters = crate::metrics::counters::families();
    let body = crate::metrics::prometheus::render(&crate::metrics::prometheus::Exposition {
        sample: latest.as_deref(),
        samples_taken: taken,
        samples_persisted: persisted,
        samples_dropped: dropped,
        samples_pending: pending,
        db_up: state.db.status().up,
        stream_clients: state.metrics.stream_clients(),
        workers: &workers,
        services: &services,
        process: process.as_ref(),
        http: &http,
        counters: &counters,
        version: build_info::VERSION,
        build_hash: build_info::BUILD_HASH,
        gpu_backend: state.metrics.gpu_backend(),
        start_time_seconds: state.started_at.timestamp_millis() as f64 / 1000.0,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
