//! One line of the self-healing audit trail ([`HealingRecord`]) and its typed
//! parts: how bad ([`Severity`]), which rung of the SPEC §7 ladder
//! ([`Category`]), what happened ([`EventKind`]). Each part has one spelling,
//! `as_str()`, shared by the JSON (API and `self_healing.log`) and the TEXT
//! columns of `self_healing_events`. Also the readers of the log's tail.
//! Nothing here acts or holds a connection: the worker writes, `db::healing`
//! stores, the API serves.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::Row as _;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgRow, PgTypeInfo, PgValueRef, Postgres};

/// The JSON-lines audit file inside `paths.log_dir`.
pub const LOG_FILE: &str = crate::logs::Source::SelfHealing.file_name();

/// How bad it is. Ordered: notification channels name the least they want
/// (`min_severity`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }

    /// `INFO`, `WARNING`, `CRITICAL`, exactly.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "INFO" => Some(Severity::Info),
            "WARNING" => Some(Severity::Warning),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The rung of the SPEC §7 ladder a decision belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Category {
    /// A service is down.
    A,
    /// Overload (CPU, RAM, GPU, temperature, disk filling up).
    B,
    /// Critical: hard restarts, cleanup, GPU reset.
    C,
    /// Reboot.
    D,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::A => "A",
            Category::B => "B",
            Category::C => "C",
            Category::D => "D",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        match s {
            "A" => Some(Category::A),
            "B" => Some(Category::B),
            "C" => Some(Category::C),
            "D" => Some(Category::D),
            _ => None,
        }
    }
}

/// Declares [`EventKind`] with its one spelling per kind.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// What a record is about: a decision of the policy, an action carried
        /// out alone (named as the action), or a note of the worker or of the
        /// backups. Stable snake_case names.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
            /// A name this build does not know, kept verbatim: a row written
            /// by another version (the trail survives updates and rollbacks)
            /// or by hand. Read back only; this build never writes one.
            Other(String),
        }

        impl EventKind {
            /// Every kind this build writes.
            pub const KNOWN: &[EventKind] = &[$(EventKind::$variant,)*];

            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Other(s) => s,
                }
            }

            /// Never fails: a name this build does not know is [`EventKind::Other`].
            pub fn parse(s: &str) -> EventKind {
                match s {
                    $($name => EventKind::$variant,)*
                    other => EventKind::Other(other.to_string()),
                }
            }
        }
    };
}

event_kinds! {
    // Category A: services.
    ServiceDown = "service_down",
    ServiceRecovered = "service_recovered",
    ServiceRestart = "service_restart",
    ServiceStopStart = "service_stop_start",
    ServiceEscalated = "service_escalated",
    ServiceFailed = "service_failed",
    /// The failed mark was cleared through the API.
    FailedCleared = "failed_cleared",
    // Category B: overload and heat.
    CpuOverload = "cpu_overload",
    RamOverload = "ram_overload",
    GpuOverload = "gpu_overload",
    HeatThrottle = "heat_throttle",
    HeatRestartLlm = "heat_restart_llm",
    HeatStopLlm = "heat_stop_llm",
    HeatCritical = "heat_critical",
    HeatResolved = "heat_resolved",
    DiskLevel = "disk_level",
    // Category C: critical.
    DockerUnreachable = "docker_unreachable",
    DockerRecovered = "docker_recovered",
    ServiceFailures = "service_failures",
    HardRestart = "hard_restart",
    GpuError = "gpu_error",
    GpuReset = "gpu_reset",
    GpuRecovered = "gpu_recovered",
    DiskCleanup = "disk_cleanup",
    DbLost = "db_lost",
    DbRecovered = "db_recovered",
    VacuumAnalyze = "vacuum_analyze",
    // Category D: reboots.
    RebootDisabled = "reboot_disabled",
    RebootPrepare = "reboot_prepare",
    Reboot = "reboot",
    RebootRefused = "reboot_refused",
    PostRebootValidation = "post_reboot_validation",
    // Actions recorded alone (no event followed them), named as the action.
    RestartService = "restart_service",
    StopStartService = "stop_start_service",
    MarkFailed = "mark_failed",
    UnloadLlmModels = "unload_llm_models",
    ResetLlmSession = "reset_llm_session",
    RunThrottleCommand = "run_throttle_command",
    StopLlm = "stop_llm",
    StartLlm = "start_llm",
    HardRestartServices = "hard_restart_services",
    PrepareReboot = "prepare_reboot",
    // The worker's own notes.
    /// Events lost from the buffer while the database was down.
    EventsDropped = "events_dropped",
    // Backups (`crate::backup`).
    BackupFailed = "backup_failed",
    BackupOverdue = "backup_overdue",
    RestoreFailed = "restore_failed",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compared with its name as written (`kind == "service_down"`).
impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Compared with its name as written (`severity == "CRITICAL"`).
impl PartialEq<&str> for Severity {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(EventKind::parse(&s))
    }
}

/// TEXT columns (and TEXT[] binds) spelled by `as_str()`; reading a name
/// that does not parse is a decode error of that column.
macro_rules! text_column {
    ($t:ty, |$s:ident| $parse:expr) => {
        impl sqlx::Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <&str as sqlx::Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $t {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }
            fn array_compatible(ty: &PgTypeInfo) -> bool {
                <&str as PgHasArrayType>::array_compatible(ty)
            }
        }

        impl sqlx::Encode<'_, Postgres> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let $s = <&str as sqlx::Decode<Postgres>>::decode(value)?;
                $parse
            }
        }
    };
}

text_column!(Severity, |s| Severity::parse(s)
    .ok_or_else(|| format!("unknown severity {s:?}").into()));
text_column!(Category, |s| Category::parse(s)
    .ok_or_else(|| format!("unknown category {s:?}").into()));
text_column!(EventKind, |s| Ok(EventKind::parse(s)));

/// One line of the audit trail, as stored and as served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealingRecord {
    /// Database id (absent until written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub at: DateTime<Utc>,
    /// Stable machine name, e.g. `service_restart`, `service_failed`.
    #[schema(value_type = String)]
    pub event_type: EventKind,
    /// `INFO`, `WARNING` or `CRITICAL`.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// The SPEC §7 ladder rung: `A`, `B`, `C`, `D`.
    #[schema(value_type = Option<String>)]
    pub category: Option<Category>,
    pub service: Option<String>,
    pub description: String,
    /// The action taken (snake_case), if any.
    pub action: Option<String>,
    /// `recorded` (a decision without an action), `ok`, `failed: …` or `skipped: …`.
    pub result: String,
    pub duration_ms: Option<i64>,
}

impl HealingRecord {
    /// A decision without an action, dated now.
    pub fn recorded(
        event_type: EventKind,
        severity: Severity,
        category: Option<Category>,
        description: impl Into<String>,
    ) -> HealingRecord {
        HealingRecord {
            id: None,
            at: Utc::now(),
            event_type,
            severity,
            category,
            service: None,
            description: description.into(),
            action: None,
            result: "recorded".into(),
            duration_ms: None,
        }
    }
}

/// A row of `self_healing_events`. A category this build does not know (no
/// version has written one, but the column has no constraint) is served as
/// none, with a warning, rather than failing the whole listing; the event
/// kind is kept whatever it is ([`EventKind::Other`]). The severity column is
/// constrained to the three names.
impl sqlx::FromRow<'_, PgRow> for HealingRecord {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        let category: Option<String> = row.try_get("category")?;
        let category = category.and_then(|c| {
            let parsed = Category::parse(&c);
            if parsed.is_none() {
                tracing::warn!(
                    category = %c,
                    "self-healing event with an unknown category: served without one"
                );
            }
            parsed
        });
        Ok(HealingRecord {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            event_type: row.try_get("event_type")?,
            severity: row.try_get("severity")?,
            category,
            service: row.try_get("service")?,
            description: row.try_get("description")?,
            action: row.try_get("action")?,
            result: row.try_get("result")?,
            duration_ms: row.try_get("duration_ms")?,
        })
    }
}

/// Why `service` was last restarted, in words, from the log's tail: the
/// newest `service_down` (or other record naming it) since `since`.
pub fn restart_cause(log_dir: &Path, service: &str, since: DateTime<Utc>) -> Option<String> {
    let recent: Vec<HealingRecord> = tail_records(log_dir)
        .into_iter()
        .filter(|r| r.at >= since && r.service.as_deref() == Some(service))
        .filter(|r| r.event_type != EventKind::ServiceRecovered)
        .collect();
    recent
        .iter()
        .rev()
        .find(|r| r.event_type == EventKind::ServiceDown)
        .or_else(|| recent.last())
        .map(|r| r.description.clone())
}

/// The newest record of the JSON-lines log (reads only its tail).
pub fn last_logged(log_dir: &Path) -> Option<HealingRecord> {
    tail_records(log_dir).pop()
}

/// The records in the last 64 KiB of the log, oldest first. A line that is
/// not a record (cut at the start of the tail, or a severity or category
/// this build cannot name) is left out.
fn tail_records(log_dir: &Path) -> Vec<HealingRecord> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log_dir.join(LOG_FILE)) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = String::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .is_err()
        || f.read_to_string(&mut buf).is_err()
    {
        return Vec::new();
    }
    buf.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_itself_in_json_and_by_name() {
        for k in EventKind::KNOWN {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::json!(k.as_str()));
            assert_eq!(&serde_json::from_value::<EventKind>(json).unwrap(), k);
            assert_eq!(&EventKind::parse(k.as_str()), k);
            assert_eq!(k.to_string(), k.as_str());
        }
        let names: std::collections::BTreeSet<&str> =
            EventKind::KNOWN.iter().map(EventKind::as_str).collect();
        assert_eq!(names.len(), EventKind::KNOWN.len(), "a name used twice");
        assert_eq!(EventKind::ServiceStopStart.as_str(), "service_stop_start");
        assert_eq!(format!("{:?}", EventKind::Reboot), "Reboot");
    }

    #[test]
    fn an_unknown_kind_is_kept_verbatim() {
        let k: EventKind = serde_json::from_str("\"disk_critical\"").unwrap();
        assert_eq!(k, EventKind::Other("disk_critical".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"disk_critical\"");
        assert_eq!(k, "disk_critical");
    }

    #[test]
    fn severities_and_categories_keep_their_spelling() {
        for (s, name) in [
            (Severity::Info, "INFO"),
            (Severity::Warning, "WARNING"),
            (Severity::Critical, "CRITICAL"),
        ] {
            assert_eq!(s.as_str(), name);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(name));
            assert_eq!(serde_json::from_value::<Severity>(name.into()).unwrap(), s);
            assert_eq!(Severity::parse(name), Some(s));
        }
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        assert_eq!(Severity::parse("info"), None);
        assert!(serde_json::from_str::<Severity>("\"LOUD\"").is_err());
        for (c, name) in [
            (Category::A, "A"),
            (Category::B, "B"),
            (Category::C, "C"),
            (Category::D, "D"),
        ] {
            assert_eq!(c.as_str(), name);
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(name));
            assert_eq!(serde_json::from_value::<Category>(name.into()).unwrap(), c);
            assert_eq!(Category::parse(name), Some(c));
            assert_eq!(format!("{c:?}"), name);
        }
        assert_eq!(Category::parse("E"), None);
    }

    #[test]
    fn a_record_serialises_as_the_log_always_had_it() {
        let mut r = HealingRecord::recorded(
            EventKind::ServiceFailed,
            Severity::Critical,
            Some(Category::A),
            "gave up on llm",
        );
        r.at = "2026-03-01T10:00:00Z".parse().unwrap();
        r.service = Some("llm".into());
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"at":"2026-03-01T10:00:00Z","event_type":"service_failed","severity":"CRITICAL","category":"A","service":"llm","description":"gave up on llm","action":null,"result":"recorded","duration_ms":null}"#
        );
        assert_eq!(serde_json::from_str::<HealingRecord>(&line).unwrap(), r);
    }

    #[test]
    fn log_lines_this_build_cannot_read_are_left_out_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let good = HealingRecord::recorded(
            EventKind::ServiceDown,
            Severity::Warning,
            Some(Category::A),
            "down",
        );
        let mut unknown_kind = serde_json::to_value(&good).unwrap();
        unknown_kind["event_type"] = "from_a_newer_version".into();
        let mut bad_severity = serde_json::to_value(&good).unwrap();
        bad_severity["severity"] = "LOUD".into();
        let lines = [
            serde_json::to_string(&good).unwrap(),
            unknown_kind.to_string(),
            bad_severity.to_string(),
            "not json".into(),
        ];
        std::fs::write(dir.path().join(LOG_FILE), lines.join("\n")).unwrap();
        let tail = tail_records(dir.path());
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0], good);
        assert_eq!(
            tail[1].event_type,
            EventKind::Other("from_a_newer_version".into())
        );
        assert_eq!(
            last_logged(dir.path()).unwrap().event_type,
            tail[1].event_type
        );
    }
}
