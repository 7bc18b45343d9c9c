//! The daemon's log files over HTTP (admin): list, tail with a level
//! filter, live follow (SSE) and search. The sources are a closed set
//! (`logs::Source`); a request never names a path. File work runs in
//! `spawn_blocking` and is bounded (`logs::MAX_SCAN`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiQuery};
use crate::logs::{self, Follower, Found, Level, LogFile, LogLine, Source};
use crate::state::AppState;

pub const MAX_LINES: usize = 5000;
pub const MAX_MATCHES: usize = 1000;
const MAX_QUERY: usize = 200;
/// How often the stream looks for new lines.
const POLL_EVERY: Duration = Duration::from_millis(250);

fn parse_source(s: Option<&str>) -> Result<Option<Source>, ApiError> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => Source::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_source",
                format!(
                    "unknown log source {:?}: use one of system, self_healing, update, update_usb",
                    s.chars().take(64).collect::<String>()
                ),
            )
        }),
    }
}

fn parse_level(s: Option<&str>) -> Result<Option<Level>, ApiError> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => Level::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_level",
                "level must be one of error, warn, info, debug, trace",
            )
        }),
    }
}

fn path_of(state: &AppState, source: Source) -> std::path::PathBuf {
    let cfg = state.config();
    source.path(&cfg.paths.log_dir, cfg.logging.json_file.as_deref())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("reading log file: {e}")))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogFileList {
    /// Every source, also those whose file does not exist yet.
    pub logs: Vec<LogFile>,
    pub timestamp: DateTime<Utc>,
}

/// The log files the daemon serves, with size and last change.
#[utoipa::path(get, path = "/api/logs/list", tag = "logs",
    responses((status = 200, body = LogFileList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<LogFileList>, ApiError> {
    let cfg = state.config();
    let (dir, json_file) = (cfg.paths.log_dir.clone(), cfg.logging.json_file.clone());
    let logs = blocking(move || Ok(logs::list(&dir, json_file.as_deref()))).await?;
    Ok(Json(LogFileList {
        logs,
        timestamp: Utc::now(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TailQuery {
    /// `system` (default), `self_healing`, `update` or `update_usb`.
    pub source: Option<String>,
    /// Lines from the end (default 200, 1 to 5000).
    #[param(minimum = 1, maximum = 5000)]
    pub lines: Option<usize>,
    /// Minimum level: `error`, `warn`, `info`, `debug`, `trace`. Lines
    /// without a level are left out when it is given.
    pub level: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogTail {
    pub source: Source,
    /// Oldest first; the last line is the newest.
    pub lines: Vec<LogLine>,
    /// The filter read 64 MiB back without finding `lines` lines.
    pub truncated: bool,
    pub timestamp: DateTime<Utc>,
}

/// The last lines of one log file, optionally at or above a level.
#[utoipa::path(get, path = "/api/logs", tag = "logs", params(TailQuery),
    responses((status = 200, body = LogTail), (status = 400, body = super::error::ErrorBody)))]
pub async fn tail(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TailQuery>,
) -> Result<Json<LogTail>, ApiError> {
    let source = parse_source(q.source.as_deref())?.unwrap_or(Source::System);
    let level = parse_level(q.level.as_deref())?;
    let n = q.lines.unwrap_or(200);
    if !(1..=MAX_LINES).contains(&n) {
        return Err(ApiError::bad_request(
            "invalid_lines",
            format!("lines must be between 1 and {MAX_LINES}"),
        ));
    }
    let path = path_of(&state, source);
    let Found {
        lines, truncated, ..
    } = blocking(move || logs::tail(source, &path, n, level)).await?;
    Ok(Json(LogTail {
        source,
        lines,
        truncated,
        timestamp: Utc::now(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `system` (default), `self_healing`, `update` or `update_usb`.
    pub source: Option<String>,
    /// Minimum level (lines without a level are left out when given).
    pub level: Option<String>,
}

/// New lines of one log file as they are written: SSE, event `line`, data a
/// `LogLine`. Starts at the end of the file; follows rotation (rename or
/// truncation). Keep-alive comments every 15 s.
#[utoipa::path(get, path = "/api/logs/stream", tag = "logs", params(StreamQuery),
    responses((status = 200, description = "text/event-stream: event `line`, data a LogLine (JSON); event `error` when the file cannot be read", content_type = "text/event-stream", body = String),
        (status = 400, body = super::error::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let source = parse_source(q.source.as_deref())?.unwrap_or(Source::System);
    let level = parse_level(q.level.as_deref())?;
    let path = path_of(&state, source);
    // Positioned now, so every line written after this request is sent.
    let follower = blocking(move || Ok(Follower::at_end(path))).await?;
    let mut interval = tokio::time::interval(POLL_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init = (
        Some(follower),
        interval,
        std::collections::VecDeque::<Event>::new(),
    );
    let events =
        futures::stream::unfold(init, move |(mut f, mut interval, mut queue)| async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    return Some((Ok(ev), (f, interval, queue)));
                }
                interval.tick().await;
                let follower = f.take()?;
                let (follower, polled) = tokio::task::spawn_blocking(move || {
                    let mut follower = follower;
                    let r = follower.poll();
                    (follower, r)
                })
                .await
                .ok()?;
                f = Some(follower);
                match polled {
                    Ok(lines) => {
                        for raw in lines {
                            let line = logs::parse_line(source, &raw);
                            if line.passes(level) {
                                let ev = Event::default().event("line").json_data(&line);
                                queue.push_back(ev.unwrap_or_else(|e| {
                                    Event::default().event("error").data(e.to_string())
                                }));
                            }
                        }
                    }
                    Err(e) => queue.push_back(
                        Event::default()
                            .event("error")
                            .data(format!("reading {}: {e}", source.file_name())),
                    ),
                }
            }
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Text to find, case-insensitive (1 to 200 characters).
    #[param(min_length = 1, max_length = 200)]
    pub q: String,
    /// One source; every source when absent.
    pub source: Option<String>,
    /// Most matches (default 100, 1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogSearch {
    /// Newest first (across sources: by the lines' time, lines without one last).
    pub matches: Vec<LogLine>,
    /// Some file was searched only in its last 64 MiB.
    pub truncated: bool,
    pub timestamp: DateTime<Utc>,
}

/// Lines containing `q` (case-insensitive), newest first.
#[utoipa::path(get, path = "/api/logs/search", tag = "logs", params(SearchQuery),
    responses((status = 200, body = LogSearch), (status = 400, body = super::error::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<LogSearch>, ApiError> {
    let needle = q.q;
    if needle.is_empty() || needle.chars().count() > MAX_QUERY {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("q must be 1 to {MAX_QUERY} characters"),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_MATCHES).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_MATCHES}"),
        ));
    }
    let sources: Vec<Source> = match parse_source(q.source.as_deref())? {
        Some(s) => vec![s],
        None => Source::ALL.to_vec(),
    };
    let files: Vec<(Source, std::path::PathBuf)> = sources
        .into_iter()
        .map(|s| (s, path_of(&state, s)))
        .collect();
    let (matches, truncated) = blocking(move || {
        let mut all = Vec::new();
        let mut truncated = false;
        for (source, path) in files {
            let found = logs::search(source, &path, &needle, limit)?;
            truncated |= found.truncated;
            all.extend(found.lines);
        }
        if all.len() > limit || all.iter().any(|l| l.source != all[0].source) {
            // Stable: within one file the newest-first order stays.
            all.sort_by_key(|l| std::cmp::Reverse(l.ts));
            all.truncate(limit);
        }
        Ok((all, truncated))
    })
    .await?;
    Ok(Json(LogSearch {
        matches,
        truncated,
        timestamp: Utc::now(),
    }))
}
