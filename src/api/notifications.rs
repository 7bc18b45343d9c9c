//! Notifications in the dashboard (admin only):
//! - `GET /api/notifications`: the channels (never a credential, only
//!   whether one is set), the de-dup window, quiet hours, and the newest
//!   outbox entries with each channel's delivery.
//! - `PUT /api/notifications`: replaces the channels, window and quiet
//!   hours. Written to the drop-in `arasuld.yaml.d/71-notifications.yaml`
//!   and applied by a reload (as `PATCH /api/settings` does); credentials go
//!   to `secrets_dir/notify-<name>.secret` (0600), never to the YAML. Bad
//!   input is 400 and changes nothing.
//! - `POST /api/notifications/test`: sends a test through one channel now.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use crate::notify::config::{
    ChannelConfig, EmailChannel, NtfyChannel, QuietHours, WebhookChannel, secret_file,
};
use crate::notify::worker::OutboxEntry;
use crate::notify::{NotifyConfig, Severity};
use crate::state::AppState;

/// The drop-in this screen writes, after the dashboard's settings.
pub const NOTIFY_DROP_IN: &str = "71-notifications.yaml";
/// Outbox entries shown.
const RECENT: i64 = 50;
/// The longest credential accepted (a password, a token, a signing secret).
const MAX_CREDENTIAL: usize = 4096;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_notifications, put_notifications))
        .routes(routes!(test_channel))
}

#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    #[serde(flatten)]
    pub channel: ChannelConfig,
    /// `webhook`, `ntfy` or `email`.
    pub kind: &'static str,
    /// Whether its credential file exists (the value is never shown).
    pub credential_set: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationSettings {
    pub channels: Vec<ChannelView>,
    /// e.g. `1h`.
    pub dedup_window: String,
    /// `HH:MM-HH:MM` local time, or null.
    pub quiet_hours: Option<String>,
    /// Whether they can be changed here (the daemon knows its config file).
    pub writable: bool,
    /// The newest alerts, newest first, with each channel's delivery.
    pub outbox: Vec<OutboxEntry>,
    /// False while the database is down (the outbox is then on disk only).
    pub outbox_available: bool,
    pub timestamp: DateTime<Utc>,
}

async fn view(state: &AppState) -> NotificationSettings {
    let cfg = state.config();
    let n = &cfg.notify;
    let mut channels = Vec::new();
    for c in &n.channels {
        let credential_set = tokio::fs::metadata(secret_file(&cfg.paths.secrets_dir, &c.name))
            .await
            .is_ok();
        channels.push(ChannelView {
            kind: c.kind(),
            channel: c.clone(),
            credential_set,
        });
    }
    let recent = if state.db.status().up {
        tokio::time::timeout(
            Duration::from_secs(5),
            crate::db::notifications::recent(state.db.pool(), RECENT),
        )
        .await
        .ok()
        .and_then(Result::ok)
    } else {
        None
    };
    NotificationSettings {
        channels,
        dedup_window: humantime::format_duration(n.dedup_window).to_string(),
        quiet_hours: n.quiet_hours.map(|q| q.to_string()),
        writable: state.config_path.is_some(),
        outbox_available: recent.is_some(),
        outbox: recent.unwrap_or_default(),
        timestamp: Utc::now(),
    }
}

/// The notification channels and the newest alerts.
#[utoipa::path(get, path = "/api/notifications", tag = "system",
    responses((status = 200, body = NotificationSettings)))]
pub async fn get_notifications(State(state): State<AppState>) -> Json<NotificationSettings> {
    Json(view(&state).await)
}

/// One channel as the dashboard sends it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpdate {
    pub name: String,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    #[serde(default)]
    pub webhook: Option<WebhookChannel>,
    #[serde(default)]
    pub ntfy: Option<NtfyChannel>,
    #[serde(default)]
    pub email: Option<EmailChannel>,
    /// The SMTP password, ntfy token or webhook signing secret: absent
    /// keeps the stored one, `""` removes it.
    #[serde(default)]
    pub credential: Option<String>,
}

fn default_min_severity() -> Severity {
    Severity::Warning
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsUpdate {
    /// Every channel (the list replaces the dashboard's).
    pub channels: Vec<ChannelUpdate>,
    /// e.g. `1h`, `30m`; absent keeps the current window.
    #[serde(default)]
    pub dedup_window: Option<String>,
    /// `HH:MM-HH:MM`; null or absent: no quiet hours.
    #[serde(default)]
    pub quiet_hours: Option<String>,
}

/// Replaces the channels, the de-dup window and quiet hours, and applies
/// them at once. Nothing changes when anything is refused.
#[utoipa::path(put, path = "/api/notifications", tag = "system",
    request_body = NotificationsUpdate,
    responses((status = 200, body = NotificationSettings),
        (status = 400, description = "`invalid_notifications`: a value is refused (the message names it)", body = ErrorBody),
        (status = 422, description = "`invalid_config`: the reload refused it (the drop-in is restored)", body = ErrorBody),
        (status = 503, description = "`settings_unavailable`: no config file to write to", body = ErrorBody)))]
pub async fn put_notifications(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<NotificationsUpdate>,
) -> Result<Json<NotificationSettings>, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_notifications", m);
    let cfg = state.config();
    let mut new: NotifyConfig = cfg.notify.clone();
    if let Some(w) = &update.dedup_window {
        new.dedup_window = humantime::parse_duration(w.trim())
            .map_err(|e| invalid(format!("dedup_window {w:?}: {e}")))?;
    }
    new.quiet_hours = match update.quiet_hours.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(q) => Some(
            q.parse::<QuietHours>()
                .map_err(|e| invalid(format!("quiet_hours: {e}")))?,
        ),
    };
    let mut credentials = Vec::new();
    new.channels = Vec::new();
    for c in update.channels {
        if let Some(cred) = &c.credential
            && (cred.len() > MAX_CREDENTIAL || cred.contains(['\n', '\r', '\0']))
        {
            return Err(invalid(format!(
                "the credential of {:?} must be one line of at most {MAX_CREDENTIAL} bytes",
                c.name
            )));
        }
        credentials.push((c.name.clone(), c.credential));
        new.channels.push(ChannelConfig {
            name: c.name,
            min_severity: c.min_severity,
            webhook: c.webhook,
            ntfy: c.ntfy,
            email: c.email,
        });
    }
    let problems = new.validate();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        return Err(invalid(lines.join("; ")));
    }

    let mut section = Mapping::new();
    section.insert(
        "channels".into(),
        serde_yaml::to_value(&new.channels).map_err(ApiError::internal)?,
    );
    section.insert(
        "dedup_window".into(),
        Value::String(humantime::format_duration(new.dedup_window).to_string()),
    );
    section.insert(
        "quiet_hours".into(),
        new.quiet_hours
            .map_or(Value::Null, |q| Value::String(q.to_string())),
    );
    let mut doc = Mapping::new();
    doc.insert("notify".into(), Value::Mapping(section));
    let changed =
        super::setup::apply_drop_in(&state, NOTIFY_DROP_IN, |_| Ok(Value::Mapping(doc))).await?;

    // The credentials once the channels they belong to are in force; a
    // removed channel's goes with it.
    let secrets = cfg.paths.secrets_dir.clone();
    let gone: Vec<String> = cfg
        .notify
        .channels
        .iter()
        .filter(|old| !new.channels.iter().any(|c| c.name == old.name))
        .map(|c| c.name.clone())
        .collect();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let remove = |name: &str| match std::fs::remove_file(secret_file(&secrets, name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        for (name, cred) in credentials {
            match cred.as_deref() {
                None => {}
                Some("") => remove(&name)?,
                Some(value) => {
                    std::fs::create_dir_all(&secrets)?;
                    crate::os::fs::write_atomic(
                        &secret_file(&secrets, &name),
                        value.as_bytes(),
                        crate::os::fs::PRIVATE,
                    )?;
                }
            }
        }
        for name in gone {
            remove(&name)?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("writing a notification credential: {e}")))?;
    tracing::info!(?changed, "notification settings changed from the dashboard");
    Ok(Json(view(&state).await))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The channel's name.
    pub channel: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestOutcome {
    pub channel: String,
    pub delivered: bool,
    pub timestamp: DateTime<Utc>,
}

/// Sends a test notification through one channel now and answers with the
/// outcome (outside the outbox, no de-dup, no quiet hours).
#[utoipa::path(post, path = "/api/notifications/test", tag = "system",
    request_body = TestRequest,
    responses((status = 200, body = TestOutcome),
        (status = 404, description = "no channel of that name", body = ErrorBody),
        (status = 502, description = "`channel_failed`: what the channel answered", body = ErrorBody)))]
pub async fn test_channel(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TestRequest>,
) -> Result<Json<TestOutcome>, ApiError> {
    let cfg = state.config();
    if !cfg.notify.channels.iter().any(|c| c.name == req.channel) {
        return Err(ApiError::not_found(format!(
            "no notification channel {:?}",
            req.channel
        )));
    }
    match crate::notify::worker::send_test(&cfg, &req.channel).await {
        Ok(()) => Ok(Json(TestOutcome {
            channel: req.channel,
            delivered: true,
            timestamp: Utc::now(),
        })),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "channel_failed",
            format!("the channel {:?} failed: {e}", req.channel),
        )),
    }
}
