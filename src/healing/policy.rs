//! The healing decisions of SPEC §7 as one deterministic function:
//! [`decide`] turns what the worker observes now ([`Snapshot`]) and what it
//! remembers ([`PolicyState`]) into [`Action`]s. No I/O, no clock, no tasks:
//! time is whatever the caller puts in `Snapshot::now`, so tests drive it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::Serialize;

use super::config::{HealingConfig, ServiceRules, SustainedAbove};
use super::record::{Category, EventKind, Severity};
use crate::docker::{Role, ServiceState, ServiceStatus};
use crate::metrics::collect::Sample;

/// A point on the caller's monotonic clock, in milliseconds since any fixed
/// origin (the worker uses the time since it started). Never wall-clock time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s * 1000)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
    pub fn after(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

/// One service as the policy needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub role: Role,
    pub critical: bool,
    pub state: ServiceState,
    /// Stopped through the API or config: the policy never starts it.
    pub stopped_on_purpose: bool,
    /// Consecutive failed health probes.
    pub health_failures: u32,
}

impl From<&ServiceStatus> for ServiceView {
    fn from(s: &ServiceStatus) -> Self {
        ServiceView {
            name: s.name.clone(),
            role: s.role,
            critical: s.critical,
            state: s.state,
            stopped_on_purpose: s.stopped_on_purpose,
            health_failures: s.health_failures,
        }
    }
}

/// The latest metric values; `None` when the series could not be sampled
/// (a rule with no reading is reset, never fired).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Readings {
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub gpu_percent: Option<f64>,
    /// The hottest of the board and the GPU.
    pub temperature_c: Option<f64>,
    pub disk_percent: Option<f64>,
}

impl Readings {
    pub fn from_sample(s: &Sample) -> Self {
        let gpu = s.gpu.as_ref();
        let gpu_temp = gpu.and_then(|g| g.temperature_c);
        let temperature_c = match (s.temperature_c, gpu_temp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Readings {
            cpu_percent: s.cpu_percent,
            ram_percent: s.ram_percent,
            gpu_percent: gpu.map(|g| g.utilization_percent),
            temperature_c,
            disk_percent: s.disk_percent,
        }
    }
}

/// What the worker found out before a reboot; the reboot counter comes from
/// storage that survives the reboot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RebootReadiness {
    /// Reboots arasuld requested in the last hour (wall clock, persisted).
    pub reboots_last_hour: u32,
    pub telemetry_flushed: bool,
    pub disk_state_recorded: bool,
    /// No workflow is still running (the drain timeout also lets it pass).
    pub workflows_drained: bool,
}

/// Everything the policy looks at in one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub now: Timestamp,
    pub services: Vec<ServiceView>,
    pub readings: Readings,
    pub docker_up: bool,
    pub db_up: bool,
    /// The caller's consistency check after a database recovery failed.
    pub db_inconsistent: bool,
    /// The GPU backend reports an error (NVML/tegra read failure, Xid, …).
    pub gpu_error: bool,
    pub update_in_progress: bool,
    /// Services an update is switching right now: the policy stands aside.
    pub switching: BTreeSet<String>,
    pub reboot: RebootReadiness,
}

impl Snapshot {
    /// A quiet box at `now`: everything reachable, no services, no readings.
    pub fn new(now: Timestamp) -> Self {
        Snapshot {
            now,
            services: Vec::new(),
            readings: Readings::default(),
            docker_up: true,
            db_up: true,
            db_inconsistent: false,
            gpu_error: false,
            update_in_progress: false,
            switching: BTreeSet::new(),
            reboot: RebootReadiness::default(),
        }
    }
}

/// One line of the audit trail; the worker adds the action's result and duration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub severity: Severity,
    pub category: Category,
    pub event_type: EventKind,
    pub service: Option<String>,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// Category A: down or failing its health checks.
    ServiceDown,
    /// RAM overload: the workflow service is restarted to free memory.
    RamOverload,
    /// Temperature above the restart-LLM threshold.
    Heat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskLevel {
    #[default]
    Normal,
    Warn,
    Cleanup,
    Critical,
    Reboot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootReason {
    DiskFullAfterCleanup,
    DbInconsistentAfterRecovery,
    GpuPermanentlyFailing,
    RepeatedCriticalEvents,
}

/// What the worker is asked to do. Service actions name their services; the
/// worker carries them out through the supervisor, the DB and the OS handles.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    RestartService {
        name: String,
        reason: RestartReason,
    },
    /// Stop, then start (a fresh container start, not a restart in place).
    StopStartService {
        name: String,
    },
    /// No more restarts until it is seen healthy again or an operator clears it.
    MarkFailed {
        name: String,
    },
    /// Ask the LLM runtime to drop its models (Ollama `keep_alive: 0`).
    UnloadLlmModels,
    ResetLlmSession,
    RunThrottleCommand,
    /// `until_below_c` is set when heat stopped it; a GPU error leaves it `None`.
    StopLlm {
        services: Vec<String>,
        until_below_c: Option<f64>,
    },
    StartLlm {
        services: Vec<String>,
    },
    HardRestartServices {
        services: Vec<String>,
    },
    /// Only the configured paths; `Critical` also prunes the retention-bound data.
    DiskCleanup {
        level: DiskLevel,
    },
    VacuumAnalyze,
    /// Only ever asked for with every LLM service stopped.
    GpuReset,
    /// Flush telemetry, record the disk state, save the state, ask active
    /// workflows to finish within `drain_timeout_s`.
    PrepareReboot {
        reason: RebootReason,
        drain_timeout_s: u64,
    },
    Reboot {
        reason: RebootReason,
    },
    RecordEvent(Event),
}

impl Action {
    /// What a record of this action carried out is about when no event
    /// follows it; its name is also the action's (as serde tags it), the
    /// `action` of every record of it. An event is its own kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Action::RestartService { .. } => EventKind::RestartService,
            Action::StopStartService { .. } => EventKind::StopStartService,
            Action::MarkFailed { .. } => EventKind::MarkFailed,
            Action::UnloadLlmModels => EventKind::UnloadLlmModels,
            Action::ResetLlmSession => EventKind::ResetLlmSession,
            Action::RunThrottleCommand => EventKind::RunThrottleCommand,
            Action::StopLlm { .. } => EventKind::StopLlm,
            Action::StartLlm { .. } => EventKind::StartLlm,
            Action::HardRestartServices { .. } => EventKind::HardRestartServices,
            Action::DiskCleanup { .. } => EventKind::DiskCleanup,
            Action::VacuumAnalyze => EventKind::VacuumAnalyze,
            Action::GpuReset => EventKind::GpuReset,
            Action::PrepareReboot { .. } => EventKind::PrepareReboot,
            Action::Reboot { .. } => EventKind::Reboot,
            Action::RecordEvent(ev) => ev.event_type.clone(),
        }
    }
}

/// Where a service stands on the category A ladder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Watching,
    /// Restarted at this time; re-checked `recheck_after` later.
    Restarted(Timestamp),
    /// Stopped and started at this time; re-checked `recheck_after` later.
    StopStarted(Timestamp),
}

/// What the policy remembers about one service.
#[derive(Clone, Debug, Default, PartialEq)]
struct ServiceTrack {
    step: Step,
    /// Restarts and stop + starts within the restart window, oldest first.
    restarts: VecDeque<Timestamp>,
    /// Plain restarts since the backoff was last reset: the next delay is
    /// `backoff_initial * 2^(rounds-1)`.
    rounds: u32,
    last_attempt: Option<Timestamp>,
    healthy_since: Option<Timestamp>,
    /// Down right now (from detection until seen healthy).
    in_incident: bool,
    /// This incident already went up to category C.
    escalated: bool,
    failed: bool,
}

/// A rule with hysteresis: it turns on above `above` and off only below
/// `above - margin`, so a value hovering at the threshold does not flap.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Hysteresis {
    on_since: Option<Timestamp>,
}

impl Hysteresis {
    /// Feeds the latest reading; returns how long the rule has been on.
    fn feed(
        &mut self,
        value: Option<f64>,
        above: f64,
        margin: f64,
        now: Timestamp,
    ) -> Option<Duration> {
        match (value, self.on_since) {
            (None, _) => self.on_since = None,
            (Some(v), None) if v > above => self.on_since = Some(now),
            (Some(v), Some(_)) if v < above - margin => self.on_since = None,
            _ => {}
        }
        self.on_since.map(|t| now.since(t))
    }

    fn sustained(
        &mut self,
        value: Option<f64>,
        rule: SustainedAbove,
        margin: f64,
        now: Timestamp,
    ) -> bool {
        self.feed(value, rule.above, margin, now)
            .is_some_and(|on| on >= rule.sustained)
    }
}

/// Actions with a cooldown (per service where the action names one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cooldown {
    UnloadLlmModels,
    RestartWorkflow(String),
    ResetLlmSession,
    Throttle,
    RestartLlm,
    HardRestart,
    DiskCleanup(DiskLevel),
    DiskEvent(DiskLevel),
    VacuumAnalyze,
    GpuReset,
    GpuErrorEvent,
    StopLlm,
    ServiceFailuresEvent,
    RebootRefused,
    RebootDisabled,
    Reboot,
}

/// A reboot being prepared.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PendingReboot {
    reason: RebootReason,
    since: Timestamp,
}

/// What the policy remembers between evaluations. The caller owns it and
/// passes the same value to every [`decide`]; it is plain data (restarts,
/// windows, latches), lost with the process, which is fine: the reboot
/// counter, the only thing that must survive, comes in through the snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    services: BTreeMap<String, ServiceTrack>,
    /// When a service went down and which (one entry per incident).
    failures: VecDeque<(Timestamp, String)>,
    /// When the policy raised a critical event.
    critical: VecDeque<Timestamp>,
    cpu: Hysteresis,
    ram: Hysteresis,
    gpu: Hysteresis,
    temp_throttle: Hysteresis,
    temp_restart: Hysteresis,
    temp_stop: Hysteresis,
    /// The LLM is stopped for heat until the temperature drops below resume.
    heat_hold_since: Option<Timestamp>,
    heat_escalated: bool,
    /// The LLM is stopped because the GPU reports an error.
    gpu_hold: bool,
    /// The LLM services the policy stopped; started again when no hold is left.
    llm_stopped_by_policy: BTreeSet<String>,
    /// GPU resets asked for since the GPU error began.
    gpu_resets: u32,
    disk_level: DiskLevel,
    last_cleanup: Option<Timestamp>,
    db_down_since: Option<Timestamp>,
    db_lost_reported: bool,
    docker_down_since: Option<Timestamp>,
    docker_lost_reported: bool,
    fired: BTreeMap<Cooldown, Timestamp>,
    reboot: Option<PendingReboot>,
}

impl PolicyState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Services the policy marked failed (no more restarts).
    pub fn failed_services(&self) -> Vec<String> {
        let failed = self.services.iter().filter(|(_, t)| t.failed);
        failed.map(|(n, _)| n.clone()).collect()
    }

    /// An operator's "try again": the service is restarted from a clean slate.
    pub fn clear_failed(&mut self, name: &str) {
        self.services.remove(name);
    }

    /// Restarts (and stop + starts) of `name` still inside the restart window
    /// as of the last evaluation.
    pub fn restarts_in_window(&self, name: &str) -> usize {
        self.services.get(name).map_or(0, |t| t.restarts.len())
    }

    /// True while the LLM is held stopped (heat or GPU error).
    pub fn llm_held(&self) -> bool {
        self.heat_hold_since.is_some() || self.gpu_hold
    }

    /// When the next evaluation is due for a timer of the policy (a re-check
    /// or the end of a backoff), if that is before the regular tick.
    pub fn next_wakeup(&self, cfg: &HealingConfig) -> Option<Timestamp> {
        let s = &cfg.services;
        self.services
            .values()
            .filter(|t| t.in_incident && !t.failed)
            .filter_map(|t| match t.step {
                Step::Restarted(at) | Step::StopStarted(at) => Some(at.after(s.recheck_after)),
                Step::Watching => t.last_attempt.map(|a| a.after(backoff_delay(s, t.rounds))),
            })
            .min()
    }

    fn ready(&mut self, key: Cooldown, every: Duration, now: Timestamp) -> bool {
        match self.fired.get(&key) {
            Some(&last) if now.since(last) < every => false,
            _ => {
                self.fired.insert(key, now);
                true
            }
        }
    }
}

/// The wait before the next plain restart after `rounds` of them:
/// 0, then 10 s, 20 s, 40 s, … capped at `backoff_max`.
pub fn backoff_delay(rules: &ServiceRules, rounds: u32) -> Duration {
    if rounds == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(rounds - 1).unwrap_or(u32::MAX);
    rules
        .backoff_initial
        .checked_mul(factor)
        .map_or(rules.backoff_max, |d| d.min(rules.backoff_max))
}

/// Collects the actions of one evaluation.
struct Out {
    actions: Vec<Action>,
}

impl Out {
    fn act(&mut self, a: Action) {
        self.actions.push(a);
    }
    fn event(
        &mut self,
        severity: Severity,
        category: Category,
        event_type: EventKind,
        service: Option<&str>,
        description: String,
    ) {
        self.actions.push(Action::RecordEvent(Event {
            severity,
            category,
            event_type,
            service: service.map(str::to_string),
            description,
        }));
    }
}

fn prune(window: &mut VecDeque<Timestamp>, span: Duration, now: Timestamp) {
    while window.front().is_some_and(|&t| now.since(t) >= span) {
        window.pop_front();
    }
}

fn is_running(s: &ServiceView) -> bool {
    !matches!(
        s.state,
        ServiceState::Stopped | ServiceState::Failed | ServiceState::ImageMissing
    )
}

/// Down in the sense of category A: exited (and not stopped on purpose), or
/// failing its health checks `health_failures` times in a row.
fn is_down(s: &ServiceView, rules: &ServiceRules) -> bool {
    match s.state {
        ServiceState::Stopped | ServiceState::Failed => true,
        ServiceState::Unhealthy | ServiceState::Starting | ServiceState::Unknown => {
            s.health_failures >= rules.health_failures
        }
        ServiceState::Healthy | ServiceState::Restarting | ServiceState::ImageMissing => false,
    }
}

/// One evaluation: what to do now. Updates `state` (windows, latches,
/// cooldowns) as if every returned action is carried out; every decision
/// comes with a [`Action::RecordEvent`]. Order: Docker reachability, the LLM
/// holds (heat, GPU error), category A per service, C triggers, B load
/// rules, disk, database, the hard restart, releasing the LLM, and last D,
/// which counts the critical events raised above.
pub fn decide(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig) -> Vec<Action> {
    let mut out = Out {
        actions: Vec::new(),
    };
    if !cfg.enabled {
        return out.actions;
    }
    let now = snap.now;
    let failures_window = cfg.critical.service_failures_window;
    state
        .failures
        .retain(|(t, _)| now.since(*t) < failures_window);
    prune(&mut state.critical, cfg.reboot.critical_events_window, now);

    let mut hard_restart_why: Vec<String> = Vec::new();
    docker_reachability(snap, state, cfg, &mut out);
    // Holds first, so category A already knows which LLM services are held;
    // the release (start) comes last, after A has looked at them.
    heat(snap, state, cfg, &mut out);
    gpu_error(snap, state, cfg, &mut out);
    if snap.docker_up {
        for svc in &snap.services {
            service_ladder(snap, svc, state, cfg, &mut out, &mut hard_restart_why);
        }
    }
    repeated_failures(snap, state, cfg, &mut out, &mut hard_restart_why);
    overload(snap, state, cfg, &mut out);
    disk(snap, state, cfg, &mut out);
    database(snap, state, cfg, &mut out, &mut hard_restart_why);
    hard_restart(snap, state, cfg, &mut out, &hard_restart_why);
    release_llm(snap, state, &mut out);

    let raised = out
        .actions
        .iter()
        .filter(|a| matches!(a, Action::RecordEvent(e) if e.severity == Severity::Critical));
    let raised = raised.count();
    state.critical.extend(std::iter::repeat_n(now, raised));
    reboot(snap, state, cfg, &mut out);
    out.actions
}

fn docker_reachability(
    snap: &Snapshot,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    out: &mut Out,
) {
    let now = snap.now;
    if snap.docker_up {
        if state.docker_lost_reported {
            out.event(
                Severity::Info,
                Category::C,
                EventKind::DockerRecovered,
                None,
                "the Docker engine is reachable again".into(),
            );
        }
        state.docker_down_since = None;
        state.docker_lost_reported = false;
        return;
    }
    let since = *state.docker_down_since.get_or_insert(now);
    if !state.docker_lost_reported && now.since(since) >= cfg.critical.docker_lost_after {
        state.docker_lost_reported = true;
        out.event(
            Severity::Critical,
            Category::C,
            EventKind::DockerUnreachable,
            None,
            format!(
                "the Docker engine has been unreachable for {}; service healing paused",
                format_duration(now.since(since))
            ),
        );
    }
}

/// Category A for one service.
fn service_ladder(
    snap: &Snapshot,
    svc: &ServiceView,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    out: &mut Out,
    hard_restart_why: &mut Vec<String>,
) {
    let now = snap.now;
    let rules = &cfg.services;
    let llm_held = (svc.role == Role::Llm && state.llm_held())
        || state.llm_stopped_by_policy.contains(&svc.name);
    let name = svc.name.as_str();
    let t = state.services.entry(svc.name.clone()).or_default();
    prune(&mut t.restarts, rules.restart_window, now);

    // Not ours to heal: the admin stopped it, an update is switching it, or
    // the policy itself holds it stopped. Whatever was going on is over.
    if svc.stopped_on_purpose || snap.switching.contains(name) || llm_held {
        t.step = Step::Watching;
        t.in_incident = false;
        t.healthy_since = None;
        return;
    }

    if svc.state == ServiceState::Healthy {
        let since = *t.healthy_since.get_or_insert(now);
        if t.failed || t.in_incident {
            let was_failed = std::mem::take(&mut t.failed);
            t.in_incident = false;
            t.step = Step::Watching;
            out.event(
                Severity::Info,
                Category::A,
                EventKind::ServiceRecovered,
                Some(name),
                if was_failed {
                    "healthy again; no longer marked failed".into()
                } else {
                    "healthy again".into()
                },
            );
        }
        if now.since(since) >= rules.backoff_reset_after {
            t.rounds = 0;
        }
        return;
    }
    t.healthy_since = None;
    if t.failed || !is_down(svc, rules) {
        // Failed: it stays down until someone intervenes. Not down yet
        // (starting, restarting, too few failed probes): wait, timers keep.
        return;
    }
    if !t.in_incident {
        t.in_incident = true;
        t.escalated = false;
        t.step = Step::Watching;
        state.failures.push_back((now, svc.name.clone()));
        out.event(
            Severity::Warning,
            Category::A,
            EventKind::ServiceDown,
            Some(name),
            match svc.state {
                ServiceState::Stopped | ServiceState::Failed => {
                    "the container is not running (exited or removed)".to_string()
                }
                state => format!(
                    "{state:?}: {} health checks failed in a row",
                    svc.health_failures
                ),
            },
        );
    }

    enum Next {
        Restart,
        StopStart,
        Wait,
    }
    let due = |t: &ServiceTrack| {
        t.last_attempt
            .is_none_or(|a| now >= a.after(backoff_delay(rules, t.rounds)))
    };
    let next = match t.step {
        Step::Watching => {
            if due(t) {
                Next::Restart
            } else {
                Next::Wait
            }
        }
        Step::Restarted(at) if now < at.after(rules.recheck_after) => Next::Wait,
        // Once this incident went up to C, later rounds are plain restarts
        // spaced by the backoff.
        Step::Restarted(_) if !t.escalated => Next::StopStart,
        Step::StopStarted(at) if now < at.after(rules.recheck_after) => Next::Wait,
        Step::Restarted(_) | Step::StopStarted(_) => {
            if !t.escalated {
                t.escalated = true;
                out.event(
                    Severity::Critical,
                    Category::C,
                    EventKind::ServiceEscalated,
                    Some(name),
                    "still down after restart and stop + start".into(),
                );
                hard_restart_why.push(format!("{name} still down after stop + start"));
            }
            t.step = Step::Watching;
            if due(t) { Next::Restart } else { Next::Wait }
        }
    };
    if matches!(next, Next::Wait) {
        return;
    }
    // Counted before each attempt, so the window fills under any backoff:
    // with the defaults the 6th restart lands about 5 min in, well inside 30 min.
    if t.restarts.len() > rules.max_restarts as usize {
        t.failed = true;
        t.step = Step::Watching;
        out.act(Action::MarkFailed { name: name.into() });
        out.event(
            Severity::Critical,
            Category::A,
            EventKind::ServiceFailed,
            Some(name),
            format!(
                "{} restarts within {}; marked failed, no more restarts",
                t.restarts.len(),
                format_duration(rules.restart_window)
            ),
        );
        return;
    }
    t.restarts.push_back(now);
    t.last_attempt = Some(now);
    match next {
        Next::Restart => {
            t.rounds = t.rounds.saturating_add(1);
            t.step = Step::Restarted(now);
            out.act(Action::RestartService {
                name: name.into(),
                reason: RestartReason::ServiceDown,
            });
            out.event(
                Severity::Warning,
                Category::A,
                EventKind::ServiceRestart,
                Some(name),
                format!(
                    "restart {} within the window; next backoff {}",
                    t.restarts.len(),
                    format_duration(backoff_delay(rules, t.rounds))
                ),
            );
        }
        Next::StopStart => {
            t.step = Step::StopStarted(now);
            out.act(Action::StopStartService { name: name.into() });
            out.event(
                Severity::Warning,
                Category::A,
                EventKind::ServiceStopStart,
                Some(name),
                "still down after a restart; stop + start".into(),
            );
        }
        Next::Wait => {}
    }
}

/// Category C: several different services went down within the window
/// (one service failing again and again is its own ladder's business).
fn repeated_failures(
    snap: &Snapshot,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    out: &mut Out,
    hard_restart_why: &mut Vec<String>,
) {
    let failed: BTreeSet<&str> = state.failures.iter().map(|(_, n)| n.as_str()).collect();
    if failed.len() < cfg.critical.service_failures as usize {
        return;
    }
    let why = format!(
        "{} services went down within {}: {}",
        failed.len(),
        format_duration(cfg.critical.service_failures_window),
        failed.into_iter().collect::<Vec<_>>().join(", ")
    );
    let every = cfg.cooldowns.hard_restart;
    if state.ready(Cooldown::ServiceFailuresEvent, every, snap.now) {
        out.event(
            Severity::Critical,
            Category::C,
            EventKind::ServiceFailures,
            None,
            why.clone(),
        );
    }
    hard_restart_why.push(why);
}

/// LLM services that the policy may act on (not stopped on purpose, not
/// being switched by an update).
fn llm_services(snap: &Snapshot, running: bool) -> Vec<&ServiceView> {
    snap.services
        .iter()
        .filter(|s| s.role == Role::Llm && is_running(s) == running)
        .filter(|s| !s.stopped_on_purpose && !snap.switching.contains(&s.name))
        .collect()
}

fn names(services: &[&ServiceView]) -> Vec<String> {
    services.iter().map(|s| s.name.clone()).collect()
}

/// Stops the running LLM services and remembers them for [`release_llm`].
/// Called on every evaluation while a hold lasts, so an LLM that is still
/// (or again) running is stopped, at most once per `cooldowns.stop_llm`.
fn hold_llm(
    snap: &Snapshot,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    until_below_c: Option<f64>,
    out: &mut Out,
) {
    let running = names(&llm_services(snap, true));
    if !snap.docker_up
        || running.is_empty()
        || !state.ready(Cooldown::StopLlm, cfg.cooldowns.stop_llm, snap.now)
    {
        return;
    }
    state.llm_stopped_by_policy.extend(running.iter().cloned());
    out.act(Action::StopLlm {
        services: running,
        until_below_c,
    });
}

/// Starts what [`hold_llm`] stopped once neither heat nor a GPU error holds it.
fn release_llm(snap: &Snapshot, state: &mut PolicyState, out: &mut Out) {
    if state.llm_held() || state.llm_stopped_by_policy.is_empty() || !snap.docker_up {
        return;
    }
    let services: Vec<String> = std::mem::take(&mut state.llm_stopped_by_policy)
        .into_iter()
        .filter(|n| !snap.switching.contains(n))
        .collect();
    if !services.is_empty() {
        out.act(Action::StartLlm { services });
    }
}

/// Every LLM service is stopped (or there is none): the GPU may be reset.
fn llm_stopped(snap: &Snapshot) -> bool {
    snap.services
        .iter()
        .filter(|s| s.role == Role::Llm)
        .all(|s| !is_running(s))
}

/// Category B, temperature: throttle, restart the LLM, stop it until it
/// cools down, and C if it stays critical with the LLM stopped.
fn heat(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig, out: &mut Out) {
    let now = snap.now;
    let o = &cfg.overload;
    let temp = snap.readings.temperature_c;
    let shown = temp.map_or("?".to_string(), |t| format!("{t:.1}"));
    let throttle = state
        .temp_throttle
        .sustained(temp, o.temp_throttle, o.temp_margin_c, now);
    let restart = state
        .temp_restart
        .sustained(temp, o.temp_restart_llm, o.temp_margin_c, now);
    let critical_for = state
        .temp_stop
        .feed(temp, o.temp_stop_llm_c, o.temp_margin_c, now);

    if let Some(held_since) = state.heat_hold_since {
        if temp.is_some_and(|t| t < o.temp_resume_llm_c) {
            state.heat_hold_since = None;
            state.heat_escalated = false;
            out.event(
                Severity::Info,
                Category::B,
                EventKind::HeatResolved,
                None,
                format!(
                    "{shown} °C, below {} °C: LLM may run again",
                    o.temp_resume_llm_c
                ),
            );
        } else if !state.heat_escalated
            && critical_for.is_some()
            && now.since(held_since) >= o.heat_escalate_after
        {
            state.heat_escalated = true;
            out.event(
                Severity::Critical,
                Category::C,
                EventKind::HeatCritical,
                None,
                format!(
                    "{shown} °C {} after the LLM was stopped",
                    format_duration(now.since(held_since))
                ),
            );
            if llm_stopped(snap) && state.ready(Cooldown::GpuReset, cfg.cooldowns.gpu_reset, now) {
                out.act(Action::GpuReset);
            }
        }
        if state.heat_hold_since.is_some() {
            hold_llm(snap, state, cfg, Some(o.temp_resume_llm_c), out);
        }
        return;
    }

    if critical_for.is_some() {
        state.heat_hold_since = Some(now);
        hold_llm(snap, state, cfg, Some(o.temp_resume_llm_c), out);
        out.event(
            Severity::Warning,
            Category::B,
            EventKind::HeatStopLlm,
            None,
            format!(
                "{shown} °C above {} °C: LLM stopped until below {} °C",
                o.temp_stop_llm_c, o.temp_resume_llm_c
            ),
        );
        return;
    }
    if restart && snap.docker_up {
        let running = names(&llm_services(snap, true));
        if !running.is_empty() && state.ready(Cooldown::RestartLlm, cfg.cooldowns.restart_llm, now)
        {
            for name in &running {
                out.act(Action::RestartService {
                    name: name.clone(),
                    reason: RestartReason::Heat,
                });
            }
            out.event(
                Severity::Warning,
                Category::B,
                EventKind::HeatRestartLlm,
                None,
                format!(
                    "{shown} °C above {} °C: LLM restarted",
                    o.temp_restart_llm.above
                ),
            );
        }
    }
    if throttle
        && !o.throttle_command.is_empty()
        && state.ready(Cooldown::Throttle, cfg.cooldowns.throttle, now)
    {
        out.act(Action::RunThrottleCommand);
        out.event(
            Severity::Warning,
            Category::B,
            EventKind::HeatThrottle,
            None,
            format!(
                "{shown} °C above {} °C for {}: throttling",
                o.temp_throttle.above,
                format_duration(o.temp_throttle.sustained)
            ),
        );
    }
}

/// Category B, CPU / RAM / GPU load.
fn overload(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig, out: &mut Out) {
    let now = snap.now;
    let o = &cfg.overload;
    let c = &cfg.cooldowns;
    let r = snap.readings;
    let cpu = state
        .cpu
        .sustained(r.cpu_percent, o.cpu_percent, o.percent_margin, now);
    let ram = state
        .ram
        .sustained(r.ram_percent, o.ram_percent, o.percent_margin, now);
    let gpu = state
        .gpu
        .sustained(r.gpu_percent, o.gpu_percent, o.percent_margin, now);
    let llm_up = !llm_services(snap, true).is_empty();
    let sustained = |rule: SustainedAbove, what: &str, v: Option<f64>| {
        format!(
            "{what} {:.1} % above {} % for {}",
            v.unwrap_or(f64::NAN),
            rule.above,
            format_duration(rule.sustained)
        )
    };

    if cpu && llm_up && state.ready(Cooldown::UnloadLlmModels, c.unload_llm_models, now) {
        out.act(Action::UnloadLlmModels);
        let why = sustained(o.cpu_percent, "CPU", r.cpu_percent);
        out.event(
            Severity::Warning,
            Category::B,
            EventKind::CpuOverload,
            None,
            format!("{why}: LLM models unloaded"),
        );
    }
    if ram && snap.docker_up {
        let workflow = snap.services.iter().filter(|s| {
            s.role == Role::Workflow
                && is_running(s)
                && !s.stopped_on_purpose
                && !snap.switching.contains(&s.name)
                && !state.services.get(&s.name).is_some_and(|t| t.failed)
        });
        let workflow: Vec<String> = workflow.map(|s| s.name.clone()).collect();
        for name in workflow {
            if state.ready(
                Cooldown::RestartWorkflow(name.clone()),
                c.restart_workflow,
                now,
            ) {
                out.act(Action::RestartService {
                    name: name.clone(),
                    reason: RestartReason::RamOverload,
                });
                let why = sustained(o.ram_percent, "RAM", r.ram_percent);
                out.event(
                    Severity::Warning,
                    Category::B,
                    EventKind::RamOverload,
                    Some(&name),
                    format!("{why}: restarted"),
                );
            }
        }
    }
    if gpu && llm_up && state.ready(Cooldown::ResetLlmSession, c.reset_llm_session, now) {
        out.act(Action::ResetLlmSession);
        let why = sustained(o.gpu_percent, "GPU", r.gpu_percent);
        out.event(
            Severity::Warning,
            Category::B,
            EventKind::GpuOverload,
            None,
            format!("{why}: LLM session reset"),
        );
    }
}

/// Category C, GPU error: stop the LLM, reset the GPU once it is stopped,
/// start the LLM again when the error is gone.
fn gpu_error(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig, out: &mut Out) {
    let now = snap.now;
    if !snap.gpu_error {
        if state.gpu_hold {
            state.gpu_hold = false;
            state.gpu_resets = 0;
            out.event(
                Severity::Info,
                Category::C,
                EventKind::GpuRecovered,
                None,
                "the GPU reports no error".into(),
            );
        }
        return;
    }
    state.gpu_hold = true;
    hold_llm(snap, state, cfg, None, out);
    if state.ready(Cooldown::GpuErrorEvent, cfg.cooldowns.repeat_event, now) {
        out.event(
            Severity::Critical,
            Category::C,
            EventKind::GpuError,
            None,
            "the GPU reports an error; LLM stopped for a GPU reset".into(),
        );
    }
    if llm_stopped(snap) && state.ready(Cooldown::GpuReset, cfg.cooldowns.gpu_reset, now) {
        state.gpu_resets += 1;
        out.act(Action::GpuReset);
        out.event(
            Severity::Warning,
            Category::C,
            EventKind::GpuReset,
            None,
            format!("GPU reset {} for this error", state.gpu_resets),
        );
    }
}

/// Disk levels 80 / 90 / 95 / 97 %: warn, clean up, critical cleanup + VACUUM.
/// The reboot level is judged in [`reboot`].
fn disk(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig, out: &mut Out) {
    let now = snap.now;
    let d = &cfg.disk;
    let threshold = |l: DiskLevel| match l {
        DiskLevel::Normal => f64::NEG_INFINITY,
        DiskLevel::Warn => d.warn_percent,
        DiskLevel::Cleanup => d.cleanup_percent,
        DiskLevel::Critical => d.critical_percent,
        DiskLevel::Reboot => d.reboot_percent,
    };
    const LEVELS: [DiskLevel; 5] = [
        DiskLevel::Normal,
        DiskLevel::Warn,
        DiskLevel::Cleanup,
        DiskLevel::Critical,
        DiskLevel::Reboot,
    ];
    let Some(v) = snap.readings.disk_percent else {
        return;
    };
    let reached = LEVELS
        .into_iter()
        .rfind(|&l| v >= threshold(l))
        .unwrap_or_default();
    // Up at once; down only once below the level's threshold minus the margin.
    let held = LEVELS
        .into_iter()
        .rfind(|&l| l <= state.disk_level && v >= threshold(l) - d.margin_percent)
        .unwrap_or_default();
    let level = reached.max(held);
    state.disk_level = level;

    if level >= DiskLevel::Warn
        && state.ready(
            Cooldown::DiskEvent(level.min(DiskLevel::Critical)),
            cfg.cooldowns.repeat_event,
            now,
        )
    {
        let (severity, category) = if level >= DiskLevel::Critical {
            (Severity::Critical, Category::C)
        } else {
            (Severity::Warning, Category::B)
        };
        out.event(
            severity,
            category,
            EventKind::DiskLevel,
            None,
            format!("disk {v:.1} % full ({level:?})"),
        );
    }
    let cleanup = match level {
        DiskLevel::Normal | DiskLevel::Warn => return,
        DiskLevel::Cleanup => DiskLevel::Cleanup,
        DiskLevel::Critical | DiskLevel::Reboot => DiskLevel::Critical,
    };
    if state.ready(
        Cooldown::DiskCleanup(cleanup),
        cfg.cooldowns.disk_cleanup,
        now,
    ) {
        state.last_cleanup = Some(now);
        out.act(Action::DiskCleanup { level: cleanup });
        out.event(
            Severity::Warning,
            if cleanup == DiskLevel::Critical {
                Category::C
            } else {
                Category::B
            },
            EventKind::DiskCleanup,
            None,
            format!("disk {v:.1} % full: cleanup of the configured paths ({cleanup:?})"),
        );
    }
    if cleanup == DiskLevel::Critical
        && snap.db_up
        && state.ready(Cooldown::VacuumAnalyze, cfg.cooldowns.vacuum_analyze, now)
    {
        out.act(Action::VacuumAnalyze);
        out.event(
            Severity::Info,
            Category::C,
            EventKind::VacuumAnalyze,
            None,
            "VACUUM ANALYZE after a critical disk level".into(),
        );
    }
}

/// Category C, database: lost for `db_lost_after` → hard restart; back → VACUUM ANALYZE.
fn database(
    snap: &Snapshot,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    out: &mut Out,
    hard_restart_why: &mut Vec<String>,
) {
    let now = snap.now;
    if snap.db_up {
        state.db_down_since = None;
        if std::mem::take(&mut state.db_lost_reported) {
            out.event(
                Severity::Info,
                Category::C,
                EventKind::DbRecovered,
                None,
                "the database is reachable again".into(),
            );
            if state.ready(Cooldown::VacuumAnalyze, cfg.cooldowns.vacuum_analyze, now) {
                out.act(Action::VacuumAnalyze);
                out.event(
                    Severity::Info,
                    Category::C,
                    EventKind::VacuumAnalyze,
                    None,
                    "VACUUM ANALYZE after the database came back".into(),
                );
            }
        }
        return;
    }
    let since = *state.db_down_since.get_or_insert(now);
    if !state.db_lost_reported && now.since(since) >= cfg.critical.db_lost_after {
        state.db_lost_reported = true;
        let why = format!(
            "the database has been unreachable for {}",
            format_duration(now.since(since))
        );
        out.event(
            Severity::Critical,
            Category::C,
            EventKind::DbLost,
            None,
            why.clone(),
        );
        hard_restart_why.push(why);
    }
}

/// Category C: one hard restart of every app service the policy may touch.
fn hard_restart(
    snap: &Snapshot,
    state: &mut PolicyState,
    cfg: &HealingConfig,
    out: &mut Out,
    why: &[String],
) {
    if why.is_empty() || !snap.docker_up {
        return;
    }
    let services: Vec<String> = snap
        .services
        .iter()
        .filter(|s| !s.stopped_on_purpose && !snap.switching.contains(&s.name))
        .filter(|s| !state.services.get(&s.name).is_some_and(|t| t.failed))
        .filter(|s| !(s.role == Role::Llm && state.llm_held()))
        .filter(|s| !state.llm_stopped_by_policy.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    if services.is_empty()
        || !state.ready(Cooldown::HardRestart, cfg.cooldowns.hard_restart, snap.now)
    {
        return;
    }
    out.act(Action::HardRestartServices { services });
    out.event(
        Severity::Warning,
        Category::C,
        EventKind::HardRestart,
        None,
        format!("hard restart of all app services: {}", why.join("; ")),
    );
}

/// Category D: triggers, the five safety checks, prepare, reboot.
fn reboot(snap: &Snapshot, state: &mut PolicyState, cfg: &HealingConfig, out: &mut Out) {
    let now = snap.now;
    let r = &cfg.reboot;
    let d = &cfg.disk;
    let trigger = if state.disk_level == DiskLevel::Reboot
        && snap
            .readings
            .disk_percent
            .is_some_and(|v| v >= d.reboot_percent)
        && state
            .last_cleanup
            .is_some_and(|t| now.since(t) >= d.reboot_after_cleanup)
    {
        Some(RebootReason::DiskFullAfterCleanup)
    } else if snap.db_inconsistent {
        Some(RebootReason::DbInconsistentAfterRecovery)
    } else if snap.gpu_error && state.gpu_resets >= r.gpu_resets_before_reboot {
        Some(RebootReason::GpuPermanentlyFailing)
    } else if state.critical.len() >= r.critical_events as usize {
        Some(RebootReason::RepeatedCriticalEvents)
    } else {
        None
    };
    if let Some(&asked) = state.fired.get(&Cooldown::Reboot)
        && now.since(asked) < cfg.cooldowns.reboot
    {
        return;
    }
    let reason = match (state.reboot, trigger) {
        (Some(p), _) => p.reason,
        (None, Some(reason)) => reason,
        (None, None) => return,
    };
    if !r.enabled {
        if state.ready(Cooldown::RebootDisabled, cfg.cooldowns.repeat_event, now) {
            out.event(
                Severity::Warning,
                Category::D,
                EventKind::RebootDisabled,
                None,
                format!("a reboot is called for ({reason:?}) but reboots are disabled"),
            );
        }
        return;
    }
    let refusal = if snap.reboot.reboots_last_hour >= r.max_per_hour {
        Some(format!(
            "{} reboots in the last hour",
            snap.reboot.reboots_last_hour
        ))
    } else if snap.update_in_progress {
        Some("an update is in progress".to_string())
    } else {
        None
    };
    if let Some(refusal) = refusal {
        state.reboot = None;
        if state.ready(Cooldown::RebootRefused, cfg.cooldowns.repeat_event, now) {
            out.event(
                Severity::Warning,
                Category::D,
                EventKind::RebootRefused,
                None,
                format!("reboot for {reason:?} refused: {refusal}"),
            );
        }
        return;
    }
    let pending = *state.reboot.get_or_insert_with(|| {
        out.act(Action::PrepareReboot {
            reason,
            drain_timeout_s: r.drain_timeout.as_secs(),
        });
        out.event(
            Severity::Warning,
            Category::D,
            EventKind::RebootPrepare,
            None,
            format!("preparing a reboot for {reason:?}: flush, record, drain workflows"),
        );
        PendingReboot { reason, since: now }
    });
    let waited = now.since(pending.since);
    let c = &snap.reboot;
    let mut missing = Vec::new();
    if !(snap.db_up && c.telemetry_flushed) {
        missing.push("database reachable and telemetry flushed");
    }
    if !c.disk_state_recorded {
        missing.push("disk state recorded");
    }
    if !(c.workflows_drained || waited >= r.drain_timeout) {
        missing.push("active workflows finished");
    }
    if missing.is_empty() {
        state.reboot = None;
        state.fired.insert(Cooldown::Reboot, now);
        out.act(Action::Reboot { reason });
        out.event(
            Severity::Critical,
            Category::D,
            EventKind::Reboot,
            None,
            format!("rebooting for {reason:?}"),
        );
    } else if waited >= r.prepare_timeout {
        state.reboot = None;
        out.event(
            Severity::Warning,
            Category::D,
            EventKind::RebootRefused,
            None,
            format!(
                "reboot for {reason:?} given up after {}: not {}",
                format_duration(waited),
                missing.join(", not ")
            ),
        );
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
