//! First run: the owner's settings and whether the setup wizard is done.
//!
//! - `PATCH /api/settings` changes what the wizard (and the Settings screen)
//!   sets: the box's name (`mdns.hostname`, published at once) and whether
//!   self-healing may reboot the box (`healing.reboot.enabled`). They are
//!   written to the config drop-in `arasuld.yaml.d/70-dashboard.yaml` (so a
//!   package upgrade or an update's `50-update.yaml` never undoes them) and
//!   applied by a reload; a value the reload refuses restores the drop-in.
//! - `GET /api/setup` says whether the wizard was finished (a file in the
//!   state dir), with the values it shows; `POST /api/setup/finish` marks it.
//!
//! Model downloads and notifications have their own routes.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use crate::state::AppState;

/// The drop-in the dashboard writes, after the package's and an update's.
pub const DASHBOARD_DROP_IN: &str = "70-dashboard.yaml";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(settings))
        .routes(routes!(setup))
        .routes(routes!(finish))
}

/// One settings write at a time (read, change, reload, maybe restore).
static WRITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Serialize, Deserialize, Default)]
struct SetupFile {
    finished_at: Option<DateTime<Utc>>,
}

fn setup_file(state_dir: &Path) -> PathBuf {
    state_dir.join("setup.json")
}

fn read_setup(state_dir: &Path) -> SetupFile {
    std::fs::read(setup_file(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SetupStatus {
    /// The wizard was finished (the dashboard then no longer opens it by itself).
    pub finished: bool,
    pub finished_at: Option<DateTime<Utc>>,
    /// `mdns.hostname`: the box answers as `<box_name>.local`.
    pub box_name: String,
    /// The name Avahi confirmed (`arasul-2.local` after a collision); null
    /// until published.
    pub published_as: Option<String>,
    /// `healing.reboot.enabled`
    pub reboot_allowed: bool,
    /// Whether the settings can be changed here (the daemon knows its
    /// config file).
    pub writable: bool,
}

fn status(state: &AppState) -> SetupStatus {
    let cfg = state.config();
    let done = read_setup(&cfg.paths.state_dir);
    SetupStatus {
        finished: done.finished_at.is_some(),
        finished_at: done.finished_at,
        box_name: cfg.mdns.hostname.clone(),
        published_as: state.mdns.borrow().host.clone(),
        reboot_allowed: cfg.healing.reboot.enabled,
        writable: state.config_path.is_some(),
    }
}

/// Where the first-run setup stands, with the values it shows.
#[utoipa::path(get, path = "/api/setup", tag = "system",
    responses((status = 200, body = SetupStatus)))]
pub async fn setup(State(state): State<AppState>) -> Json<SetupStatus> {
    Json(status(&state))
}

/// Marks the setup wizard finished (idempotent).
#[utoipa::path(post, path = "/api/setup/finish", tag = "system",
    responses((status = 200, body = SetupStatus), (status = 500, body = ErrorBody)))]
pub async fn finish(State(state): State<AppState>) -> Result<Json<SetupStatus>, ApiError> {
    let dir = state.config().paths.state_dir.clone();
    if read_setup(&dir).finished_at.is_none() {
        let body = serde_json::to_vec(&SetupFile {
            finished_at: Some(Utc::now()),
        })
        .map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            crate::os::fs::write_atomic(&setup_file(&dir), &body, crate::os::fs::PRIVATE)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("writing the setup state: {e}")))?;
        tracing::info!("setup wizard finished");
    }
    Ok(Json(status(&state)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// The box's name on the LAN (`<name>.local`): one label of letters,
    /// digits and '-'.
    #[schema(pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub box_name: Option<String>,
    /// Whether self-healing may reboot the box as its last resort.
    pub reboot_allowed: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SettingsReport {
    /// The config keys that changed, as the reload reports them.
    pub changed: Vec<String>,
    pub setup: SetupStatus,
}

/// Changes the owner's settings: written to the dashboard's config drop-in
/// and applied at once by a reload. Nothing changes when a value is refused.
#[utoipa::path(patch, path = "/api/settings", tag = "system",
    request_body = SettingsPatch,
    responses((status = 200, body = SettingsReport),
        (status = 400, description = "`invalid_name`, `nothing_to_change`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: the reload refused it (the drop-in is restored)", body = ErrorBody),
        (status = 503, description = "`settings_unavailable`: the daemon was started without a config file it may write", body = ErrorBody)))]
pub async fn settings(
    State(state): State<AppState>,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> Result<Json<SettingsReport>, ApiError> {
    if state.config_path.is_none() {
        return Err(unwritable());
    }
    let mut keys: Vec<(&[&str], Value)> = Vec::new();
    if let Some(name) = &patch.box_name {
        let name = name.trim().to_ascii_lowercase();
        let check = crate::os::mdns::MdnsConfig {
            hostname: name.clone(),
            ..Default::default()
        };
        if let Some((_, msg)) = check.validate().into_iter().next() {
            return Err(ApiError::bad_request(
                "invalid_name",
                format!("the box name {name:?} cannot be used: {msg}"),
            ));
        }
        keys.push((&["mdns", "hostname"], Value::String(name)));
    }
    if let Some(allowed) = patch.reboot_allowed {
        keys.push((&["healing", "reboot", "enabled"], Value::Bool(allowed)));
    }
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "nothing_to_change",
            "name box_name and/or reboot_allowed",
        ));
    }

    let changed = write_drop_in(&state, DASHBOARD_DROP_IN, keys).await?;
    tracing::info!(?changed, "settings changed from the dashboard");
    Ok(Json(SettingsReport {
        changed,
        setup: status(&state),
    }))
}

pub(crate) fn unwritable() -> ApiError {
    ApiError::unavailable(
        "settings_unavailable",
        "this daemon has no config file to write settings to",
    )
}

/// Sets `keys` in the config drop-in `name` (kept with what it already
/// holds) and applies it: the changed keys (see [`apply_drop_in`]).
pub(crate) async fn write_drop_in(
    state: &AppState,
    name: &str,
    keys: Vec<(&[&str], Value)>,
) -> Result<Vec<String>, ApiError> {
    apply_drop_in(state, name, |before| {
        let mut doc: Value = before
            .and_then(|b| serde_yaml::from_slice(b).ok())
            .filter(Value::is_mapping)
            .unwrap_or_else(|| Value::Mapping(Mapping::new()));
        for (path, v) in keys {
            set_path(&mut doc, path, v);
        }
        Ok(doc)
    })
    .await
}

/// Writes the dashboard's config drop-in `name` (what `change` makes of its
/// current text) and applies it by a reload: the changed keys. A value the
/// reload refuses restores the file, so the running config and the disk
/// never disagree. One write at a time.
pub(crate) async fn apply_drop_in(
    state: &AppState,
    name: &str,
    change: impl FnOnce(Option<&[u8]>) -> Result<Value, ApiError>,
) -> Result<Vec<String>, ApiError> {
    let config_path = state.config_path.clone().ok_or_else(unwritable)?;
    let _one = WRITE.lock().await;
    let file = crate::dropin::dir_of(&config_path).join(name);
    let before = tokio::fs::read(&file).await.ok();
    let doc = change(before.as_deref())?;
    let text = format!(
        "# Written by the dashboard (setup wizard, Settings); applied at once.\n{}",
        serde_yaml::to_string(&doc).map_err(ApiError::internal)?
    );
    write(&file, Some(text.into_bytes())).await?;
    match super::system::reload(state).await {
        Ok(changed) => Ok(changed),
        Err(e) => {
            // Back to what was there; the running config never changed.
            write(&file, before).await?;
            Err(e)
        }
    }
}

/// `path` → `v` in a YAML mapping, creating the mappings on the way.
fn set_path(doc: &mut Value, path: &[&str], v: Value) {
    let (last, parents) = path.split_last().expect("a non-empty key");
    let mut at = doc;
    for key in parents {
        let map = at.as_mapping_mut().expect("a mapping");
        let k = Value::String((*key).into());
        if !map.get(&k).is_some_and(Value::is_mapping) {
            map.insert(k.clone(), Value::Mapping(Mapping::new()));
        }
        at = map.get_mut(&k).expect("just inserted");
    }
    at.as_mapping_mut()
        .expect("a mapping")
        .insert(Value::String((*last).into()), v);
}

/// Writes the drop-in atomically, or removes it (`None`).
async fn write(file: &Path, bytes: Option<Vec<u8>>) -> Result<(), ApiError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || match bytes {
        Some(b) => {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::os::fs::write_atomic(&file, &b, crate::os::fs::PRIVATE)
        }
        None => match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("writing the settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_set_inside_what_the_drop_in_already_holds() {
        let mut doc: Value =
            serde_yaml::from_str("healing:\n  tick: 5s\nmdns:\n  enabled: true\n").unwrap();
        set_path(
            &mut doc,
            &["mdns", "hostname"],
            Value::String("werkstatt".into()),
        );
        set_path(
            &mut doc,
            &["healing", "reboot", "enabled"],
            Value::Bool(true),
        );
        let back = serde_yaml::to_string(&doc).unwrap();
        assert_eq!(
            back,
            "healing:\n  tick: 5s\n  reboot:\n    enabled: true\nmdns:\n  enabled: true\n  hostname: werkstatt\n"
        );
    }
}
