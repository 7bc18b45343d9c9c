//! Policy tables: time is driven explicitly through `Snapshot::now`.

use super::*;

const API: &str = "api";
const LLM: &str = "ollama";
const N8N: &str = "n8n";

fn view(name: &str, role: Role) -> ServiceView {
    ServiceView {
        name: name.into(),
        role,
        critical: false,
        state: ServiceState::Healthy,
        stopped_on_purpose: false,
        health_failures: 0,
    }
}

/// A box with an app service, the LLM and n8n, all healthy, at t = 0.
struct World {
    cfg: HealingConfig,
    state: PolicyState,
    snap: Snapshot,
}

impl World {
    fn new() -> Self {
        let mut snap = Snapshot::new(Timestamp::from_secs(0));
        snap.services = vec![
            view(API, Role::Other),
            view(LLM, Role::Llm),
            view(N8N, Role::Workflow),
        ];
        World {
            cfg: HealingConfig::default(),
            state: PolicyState::new(),
            snap,
        }
    }

    fn svc(&mut self, name: &str) -> &mut ServiceView {
        self.snap
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap()
    }

    fn set(&mut self, name: &str, state: ServiceState) {
        let s = self.svc(name);
        s.state = state;
        s.health_failures = if state == ServiceState::Unhealthy {
            3
        } else {
            0
        };
    }

    fn at(&mut self, secs: u64) -> Vec<Action> {
        self.snap.now = Timestamp::from_secs(secs);
        decide(&self.snap, &mut self.state, &self.cfg)
    }

    /// Like [`World::run`], the actions only, without times or events.
    fn run_actions(&mut self, from: u64, to: u64, step: u64) -> Vec<Action> {
        let all: Vec<Action> = self
            .run(from, to, step)
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        acts(&all)
    }

    /// Evaluates every `step` seconds over `from..=to`; each action with its time.
    fn run(&mut self, from: u64, to: u64, step: u64) -> Vec<(u64, Action)> {
        let mut all = Vec::new();
        for t in (from..=to).step_by(step as usize) {
            all.extend(self.at(t).into_iter().map(|a| (t, a)));
        }
        all
    }
}

/// The actions without their audit events.
fn acts(actions: &[Action]) -> Vec<Action> {
    let it = actions
        .iter()
        .filter(|a| !matches!(a, Action::RecordEvent(_)));
    it.cloned().collect()
}

fn events(actions: &[Action]) -> Vec<Event> {
    let it = actions.iter().filter_map(|a| match a {
        Action::RecordEvent(e) => Some(e.clone()),
        _ => None,
    });
    it.collect()
}

fn has_event(actions: &[Action], event_type: &str, severity: Severity) -> bool {
    events(actions)
        .iter()
        .any(|e| e.event_type == event_type && e.severity == severity)
}

fn restart(name: &str) -> Action {
    Action::RestartService {
        name: name.into(),
        reason: RestartReason::ServiceDown,
    }
}

fn stop_start(name: &str) -> Action {
    Action::StopStartService { name: name.into() }
}

/// Times at which `name` was restarted or stopped + started by category A.
fn attempts(log: &[(u64, Action)], name: &str) -> Vec<u64> {
    log.iter()
        .filter(|(_, a)| *a == restart(name) || *a == stop_start(name))
        .map(|(t, _)| *t)
        .collect()
}

// ---- time and config ------------------------------------------------------

#[test]
fn timestamps_saturate_instead_of_wrapping() {
    let t = Timestamp::from_secs(5);
    assert_eq!(t.since(Timestamp::from_secs(7)), Duration::ZERO);
    assert_eq!(t.after(Duration::from_millis(1500)).as_millis(), 6500);
    assert_eq!(
        Timestamp::from_millis(u64::MAX)
            .after(Duration::MAX)
            .as_millis(),
        u64::MAX
    );
}

#[test]
fn backoff_doubles_from_10s_to_the_5min_cap() {
    let rules = ServiceRules::default();
    let delays: Vec<u64> = (0..9).map(|r| backoff_delay(&rules, r).as_secs()).collect();
    assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(backoff_delay(&rules, u32::MAX).as_secs(), 300);
}

#[test]
fn disabled_healing_decides_nothing() {
    let mut w = World::new();
    w.cfg.enabled = false;
    w.set(API, ServiceState::Stopped);
    w.snap.readings.disk_percent = Some(99.0);
    assert!(w.run(0, 600, 10).is_empty());
}

#[test]
fn a_healthy_quiet_box_gets_no_actions() {
    let mut w = World::new();
    w.snap.readings = Readings {
        cpu_percent: Some(40.0),
        ram_percent: Some(50.0),
        gpu_percent: Some(30.0),
        temperature_c: Some(55.0),
        disk_percent: Some(40.0),
    };
    assert!(w.run(0, 3600, 10).is_empty());
}

// ---- category A -----------------------------------------------------------

#[test]
fn killed_container_is_restarted_and_event_recorded() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    let out = w.at(0);
    assert_eq!(acts(&out), [restart(API)]);
    assert!(has_event(&out, "service_down", Severity::Warning));
    assert!(has_event(&out, "service_restart", Severity::Warning));
    assert!(
        events(&out)
            .iter()
            .all(|e| e.service.as_deref() == Some(API))
    );
}

#[test]
fn unhealthy_needs_three_failed_health_checks_in_a_row() {
    let mut w = World::new();
    for (failures, expect) in [(1, vec![]), (2, vec![]), (3, vec![restart(API)])] {
        let s = w.svc(API);
        s.state = ServiceState::Unhealthy;
        s.health_failures = failures;
        assert_eq!(acts(&w.at(failures as u64)), expect, "{failures} failures");
    }
}

#[test]
fn ladder_goes_restart_recheck_stop_start_then_category_c() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    let log = w.run(0, 14, 1);
    let at = |t: u64| -> Vec<Action> {
        log.iter()
            .filter(|(when, _)| *when == t)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert_eq!(acts(&at(0)), [restart(API)]);
    assert!((1..5).all(|t| at(t).is_empty()), "re-check only after 5 s");
    assert_eq!(acts(&at(5)), [stop_start(API)]);
    assert!((6..10).all(|t| at(t).is_empty()));
    let c = at(10);
    assert!(has_event(&c, "service_escalated", Severity::Critical));
    assert_eq!(
        acts(&c),
        [Action::HardRestartServices {
            services: vec![API.into(), LLM.into(), N8N.into()]
        }]
    );
    // After C the rounds are plain restarts, 10 s after the last attempt.
    assert_eq!(attempts(&log, API), [0, 5]);
    assert_eq!(acts(&w.at(15)), [restart(API)]);
    assert!(acts(&w.at(20)).is_empty(), "no stop + start after C");
}

#[test]
fn recovery_after_the_restart_ends_the_incident() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    assert_eq!(acts(&w.at(0)), [restart(API)]);
    w.set(API, ServiceState::Starting);
    assert!(w.at(3).is_empty(), "starting is not down");
    w.set(API, ServiceState::Healthy);
    let out = w.at(6);
    assert!(acts(&out).is_empty());
    assert!(has_event(&out, "service_recovered", Severity::Info));
    assert!(w.run(7, 600, 10).is_empty());
}

#[test]
fn crash_loop_is_marked_failed_within_the_window_despite_backoff() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped); // exits instantly, forever
    let log = w.run(0, 1800, 1);
    let tries = attempts(&log, API);
    // restart, stop + start, C, then restarts 10, 20, 40, 80 s apart.
    assert_eq!(tries, [0, 5, 15, 35, 75, 155]);
    let failed: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::MarkFailed { name: API.into() })
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        failed,
        [315],
        "the 7th attempt (155 + 160 s) marks it failed"
    );
    let at_failure: Vec<Action> = log
        .iter()
        .filter(|(t, _)| *t == 315)
        .map(|(_, a)| a.clone())
        .collect();
    assert!(has_event(&at_failure, "service_failed", Severity::Critical));
    assert_eq!(w.state.failed_services(), [API]);
    assert!(tries.len() <= 6);
    // Failed stays failed: nothing more for the next half hour.
    assert!(attempts(&w.run(1801, 3600, 10), API).is_empty());
}

#[test]
fn a_flapping_service_is_still_marked_failed() {
    // Comes up 3 s after each restart and dies 30 s later: every incident
    // recovers, yet the restarts pile up in the window and it is stopped.
    let mut w = World::new();
    let mut last_restart: Option<u64> = None;
    let mut tries = Vec::new();
    let mut failed_at = None;
    for t in 0..=1800 {
        let up = last_restart.is_some_and(|r| (3..33).contains(&(t - r)));
        w.set(
            API,
            if up {
                ServiceState::Healthy
            } else {
                ServiceState::Stopped
            },
        );
        for a in w.at(t) {
            if a == restart(API) || a == stop_start(API) {
                tries.push(t);
                last_restart = Some(t);
            }
            if a == (Action::MarkFailed { name: API.into() }) {
                failed_at = Some(t);
            }
        }
    }
    assert_eq!(tries, [0, 33, 66, 106, 186, 346]);
    assert_eq!(failed_at, Some(646));
}

#[test]
fn backoff_grows_between_rounds_and_caps_at_5_min() {
    let mut w = World::new();
    w.cfg.services.max_restarts = 1000;
    w.set(API, ServiceState::Stopped);
    let tries = attempts(&w.run(0, 2400, 1), API);
    // [0 restart, 5 stop+start], then one restart per round.
    let gaps: Vec<u64> = tries.windows(2).skip(1).map(|p| p[1] - p[0]).collect();
    assert_eq!(gaps[..8], [10, 20, 40, 80, 160, 300, 300, 300]);
}

#[test]
fn backoff_resets_only_after_10_min_healthy() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    w.run(0, 100, 1); // rounds at 0, 15, 35, 75
    assert_eq!(w.state.services[API].rounds, 4);
    w.set(API, ServiceState::Healthy);
    w.run(101, 101 + 599, 1);
    assert_eq!(
        w.state.services[API].rounds, 4,
        "9:59 healthy is not enough"
    );
    w.at(701);
    assert_eq!(w.state.services[API].rounds, 0);
    // Down again once the old restarts left the window: the full ladder from
    // the first rung, then 10 s again.
    w.run(702, 1999, 50);
    w.set(API, ServiceState::Stopped);
    let tries = attempts(&w.run(2000, 2030, 1), API);
    assert_eq!(tries, [2000, 2005, 2015]);
}

#[test]
fn next_wakeup_points_at_the_recheck_and_the_backoff() {
    let mut w = World::new();
    assert_eq!(w.state.next_wakeup(&w.cfg), None);
    w.set(API, ServiceState::Stopped);
    w.at(0);
    assert_eq!(w.state.next_wakeup(&w.cfg), Some(Timestamp::from_secs(5)));
    w.at(5);
    w.at(10);
    assert_eq!(w.state.next_wakeup(&w.cfg), Some(Timestamp::from_secs(15)));
}

#[test]
fn stopped_on_purpose_is_never_restarted() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    w.svc(API).stopped_on_purpose = true;
    assert!(w.run(0, 3600, 5).is_empty());
    // Not even by a category C hard restart.
    w.snap.db_up = false;
    let log = w.run(3601, 3700, 10);
    let hard: Vec<&Action> = log
        .iter()
        .map(|(_, a)| a)
        .filter(|a| matches!(a, Action::HardRestartServices { .. }))
        .collect();
    assert_eq!(
        hard,
        [&Action::HardRestartServices {
            services: vec![LLM.into(), N8N.into()]
        }]
    );
}

#[test]
fn a_service_stopped_mid_ladder_is_let_go() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    assert_eq!(acts(&w.at(0)), [restart(API)]);
    w.svc(API).stopped_on_purpose = true;
    assert!(w.run(1, 600, 1).is_empty());
}

#[test]
fn services_switched_by_an_update_are_left_alone() {
    let mut w = World::new();
    w.snap.update_in_progress = true;
    w.snap.switching.insert(N8N.into());
    w.set(N8N, ServiceState::Stopped);
    w.snap.readings.ram_percent = Some(99.0);
    assert!(w.run(0, 600, 10).is_empty());
    // Other services are still healed during the update.
    w.set(API, ServiceState::Stopped);
    assert_eq!(acts(&w.at(610)), [restart(API)]);
}

#[test]
fn an_operator_can_clear_failed() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    w.run(0, 400, 1);
    assert_eq!(w.state.failed_services(), [API]);
    w.state.clear_failed(API);
    assert!(w.state.failed_services().is_empty());
    assert_eq!(acts(&w.at(401))[0], restart(API));
}

#[test]
fn a_failed_service_seen_healthy_is_no_longer_failed() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    w.run(0, 400, 1);
    w.set(API, ServiceState::Healthy); // the admin started it
    let out = w.at(401);
    assert!(has_event(&out, "service_recovered", Severity::Info));
    assert!(w.state.failed_services().is_empty());
    // Its restarts are still in the window: failing again right away is
    // marked failed at once, not another storm.
    w.set(API, ServiceState::Stopped);
    assert_eq!(acts(&w.at(402)), [Action::MarkFailed { name: API.into() }]);
}

// ---- category B -----------------------------------------------------------

#[test]
fn sustained_cpu_unloads_llm_models_with_a_cooldown() {
    let mut w = World::new();
    w.snap.readings.cpu_percent = Some(95.0);
    let log = w.run(0, 900, 10);
    let unloads: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::UnloadLlmModels)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        unloads,
        [300, 600, 900],
        "after 5 min, then every 5 min cooldown"
    );
    assert!(
        log.iter()
            .any(|(_, a)| matches!(a, Action::RecordEvent(e) if e.event_type == "cpu_overload"))
    );
}

#[test]
fn cpu_overload_without_a_running_llm_does_nothing() {
    let mut w = World::new();
    w.set(LLM, ServiceState::Stopped);
    w.svc(LLM).stopped_on_purpose = true;
    w.snap.readings.cpu_percent = Some(99.0);
    assert!(w.run(0, 900, 10).is_empty());
}

#[test]
fn a_value_hovering_at_the_threshold_does_not_flap() {
    let mut w = World::new();
    // 89 / 91 alternating: the rule turns on at the first 91 and stays on
    // (89 is above 90 - 5), so the window completes once.
    let mut unloads = Vec::new();
    for t in (0..=900).step_by(10) {
        w.snap.readings.cpu_percent = Some(if t % 20 == 0 { 91.0 } else { 89.0 });
        if w.at(t).contains(&Action::UnloadLlmModels) {
            unloads.push(t);
        }
    }
    assert_eq!(unloads, [300, 600, 900]);
    // Below the margin it lets go; the next episode needs the full window.
    w.snap.readings.cpu_percent = Some(84.0);
    w.at(910);
    w.snap.readings.cpu_percent = Some(91.0);
    let log = w.run(920, 1230, 10);
    let again: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::UnloadLlmModels)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(again, [1220]);
    // Just under the threshold never turns the rule on.
    let mut w = World::new();
    w.snap.readings.cpu_percent = Some(90.0);
    assert!(w.run(0, 900, 10).is_empty());
}

#[test]
fn a_missing_reading_resets_the_window() {
    let mut w = World::new();
    w.snap.readings.cpu_percent = Some(95.0);
    w.run(0, 290, 10);
    w.snap.readings.cpu_percent = None;
    w.at(295);
    w.snap.readings.cpu_percent = Some(95.0);
    let log = w.run(300, 600, 10);
    let unloads: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::UnloadLlmModels)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(unloads, [600]);
}

#[test]
fn sustained_ram_restarts_n8n() {
    let mut w = World::new();
    w.snap.readings.ram_percent = Some(93.0);
    let log = w.run(0, 700, 10);
    let restarts: Vec<u64> = log
        .iter()
        .filter(|(_, a)| {
            *a == Action::RestartService {
                name: N8N.into(),
                reason: RestartReason::RamOverload,
            }
        })
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(restarts, [120], "after 2 min, then a 10 min cooldown");
}

#[test]
fn sustained_gpu_resets_the_llm_session() {
    let mut w = World::new();
    w.snap.readings.gpu_percent = Some(96.0);
    let log = w.run(0, 130, 10);
    let resets: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::ResetLlmSession)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(resets, [120]);
    // 95 exactly is not above 95.
    let mut w = World::new();
    w.snap.readings.gpu_percent = Some(95.0);
    assert!(w.run(0, 300, 10).is_empty());
}

#[test]
fn temperature_throttles_then_restarts_then_stops_the_llm_until_cool() {
    let mut w = World::new();
    w.cfg.overload.throttle_command = vec!["nvpmodel".into(), "-m".into(), "1".into()];
    // > 83 °C for 1 min: throttle.
    w.snap.readings.temperature_c = Some(84.0);
    let log = w.run(0, 60, 10);
    let throttled: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::RunThrottleCommand)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(throttled, [60]);
    // > 85 °C: the LLM is restarted at once.
    w.snap.readings.temperature_c = Some(86.0);
    assert_eq!(
        acts(&w.at(70)),
        [Action::RestartService {
            name: LLM.into(),
            reason: RestartReason::Heat
        }]
    );
    assert!(acts(&w.at(80)).is_empty(), "restart cooldown");
    // > 90 °C: stopped until below 80 °C.
    w.snap.readings.temperature_c = Some(91.0);
    let out = w.at(90);
    assert_eq!(
        acts(&out),
        [Action::StopLlm {
            services: vec![LLM.into()],
            until_below_c: Some(80.0)
        }]
    );
    assert!(has_event(&out, "heat_stop_llm", Severity::Warning));
    assert!(w.state.llm_held());
    // The stopped LLM is not healed by category A, and 80-85 °C keeps it stopped.
    w.set(LLM, ServiceState::Stopped);
    w.snap.readings.temperature_c = Some(82.0);
    assert!(w.run_actions(100, 150, 10).is_empty());
    w.snap.readings.temperature_c = Some(80.0);
    assert!(acts(&w.at(160)).is_empty(), "80 is not below 80");
    w.snap.readings.temperature_c = Some(79.0);
    let out = w.at(170);
    assert_eq!(
        acts(&out),
        [Action::StartLlm {
            services: vec![LLM.into()]
        }]
    );
    assert!(has_event(&out, "heat_resolved", Severity::Info));
    assert!(!w.state.llm_held());
}

#[test]
fn a_held_llm_that_still_runs_is_stopped_again() {
    let mut w = World::new();
    w.snap.docker_up = false; // the stop cannot be asked for yet
    w.snap.readings.temperature_c = Some(92.0);
    assert!(w.at(0).iter().all(|a| !matches!(a, Action::StopLlm { .. })));
    w.snap.docker_up = true;
    let stop = Action::StopLlm {
        services: vec![LLM.into()],
        until_below_c: Some(80.0),
    };
    assert_eq!(w.run_actions(10, 10, 1), std::slice::from_ref(&stop));
    assert!(w.run_actions(20, 30, 10).is_empty(), "one stop per 30 s");
    assert_eq!(w.run_actions(40, 40, 1), [stop]);
}

#[test]
fn no_throttle_command_means_no_throttle_step() {
    let mut w = World::new();
    w.snap.readings.temperature_c = Some(84.0);
    assert!(w.run(0, 300, 10).is_empty());
}

#[test]
fn heat_that_stays_critical_goes_to_category_c_with_a_gpu_reset() {
    let mut w = World::new();
    w.snap.readings.temperature_c = Some(92.0);
    w.at(0);
    w.set(LLM, ServiceState::Stopped);
    w.svc(LLM).stopped_on_purpose = true; // how the supervisor shows our stop
    assert!(w.run_actions(10, 110, 10).is_empty());
    let out = w.at(120);
    assert!(has_event(&out, "heat_critical", Severity::Critical));
    assert_eq!(acts(&out), [Action::GpuReset]);
    assert!(w.run(130, 600, 10).is_empty(), "once per heat episode");
    // Cooling down starts the LLM we stopped, even though it shows as stopped on purpose.
    w.snap.readings.temperature_c = Some(70.0);
    assert_eq!(
        acts(&w.at(610)),
        [Action::StartLlm {
            services: vec![LLM.into()]
        }]
    );
}

#[test]
fn an_llm_stopped_by_the_admin_is_not_started_after_heat() {
    let mut w = World::new();
    w.set(LLM, ServiceState::Stopped);
    w.svc(LLM).stopped_on_purpose = true;
    w.snap.readings.temperature_c = Some(95.0);
    assert!(acts(&w.at(0)).is_empty(), "nothing running to stop");
    w.snap.readings.temperature_c = Some(60.0);
    assert!(acts(&w.at(10)).is_empty());
}

// ---- category C -----------------------------------------------------------

#[test]
fn gpu_reset_only_with_the_llm_stopped() {
    let mut w = World::new();
    w.snap.gpu_error = true;
    let out = w.at(0);
    assert_eq!(
        acts(&out),
        [Action::StopLlm {
            services: vec![LLM.into()],
            until_below_c: None
        }]
    );
    assert!(has_event(&out, "gpu_error", Severity::Critical));
    assert!(acts(&w.at(10)).is_empty(), "still running: no reset yet");
    w.set(LLM, ServiceState::Stopped);
    assert_eq!(acts(&w.at(20)), [Action::GpuReset]);
    assert!(acts(&w.at(30)).is_empty(), "reset cooldown");
    w.snap.gpu_error = false;
    let out = w.at(40);
    assert_eq!(
        acts(&out),
        [Action::StartLlm {
            services: vec![LLM.into()]
        }]
    );
    assert!(has_event(&out, "gpu_recovered", Severity::Info));
}

#[test]
fn three_services_down_within_10_min_hard_restart_everything() {
    let mut w = World::new();
    w.set(API, ServiceState::Stopped);
    w.at(0);
    w.set(API, ServiceState::Healthy);
    w.at(10);
    w.set(N8N, ServiceState::Stopped);
    w.at(200);
    w.set(N8N, ServiceState::Healthy);
    w.at(210);
    w.set(LLM, ServiceState::Unhealthy);
    let out = w.at(400);
    assert!(has_event(&out, "service_failures", Severity::Critical));
    assert!(acts(&out).contains(&Action::HardRestartServices {
        services: vec![API.into(), LLM.into(), N8N.into()]
    }));
}

#[test]
fn one_service_failing_three_times_is_not_three_service_failures() {
    let mut w = World::new();
    let mut all = Vec::new();
    for t in [0, 100, 200] {
        w.set(API, ServiceState::Stopped);
        all.extend(w.at(t));
        w.set(API, ServiceState::Healthy);
        all.extend(w.at(t + 10));
    }
    assert_eq!(acts(&all), [restart(API), restart(API), restart(API)]);
}

#[test]
fn failures_spread_over_more_than_10_min_do_not_trigger_c() {
    let mut w = World::new();
    for (t, name) in [(0, API), (350, N8N), (700, LLM)] {
        w.set(name, ServiceState::Stopped);
        let out = w.at(t);
        assert!(!has_event(&out, "service_failures", Severity::Critical));
        w.set(name, ServiceState::Healthy);
        w.at(t + 10);
    }
}

#[test]
fn database_lost_for_30s_hard_restarts_and_vacuums_when_back() {
    let mut w = World::new();
    w.snap.db_up = false;
    assert!(w.run(0, 29, 1).is_empty());
    let out = w.at(30);
    assert!(has_event(&out, "db_lost", Severity::Critical));
    assert_eq!(
        acts(&out),
        [Action::HardRestartServices {
            services: vec![API.into(), LLM.into(), N8N.into()]
        }]
    );
    assert!(w.run(31, 300, 10).is_empty(), "reported once per outage");
    w.snap.db_up = true;
    let out = w.at(310);
    assert_eq!(acts(&out), [Action::VacuumAnalyze]);
    assert!(has_event(&out, "db_recovered", Severity::Info));
}

#[test]
fn docker_unreachable_pauses_service_healing_and_is_critical() {
    let mut w = World::new();
    w.snap.docker_up = false;
    w.set(API, ServiceState::Stopped); // stale: Docker is not answering
    w.snap.readings.ram_percent = Some(99.0);
    let log = w.run(0, 300, 10);
    assert!(log.iter().all(|(_, a)| matches!(a, Action::RecordEvent(_))));
    let critical: Vec<u64> = log
        .iter()
        .filter(
            |(_, a)| matches!(a, Action::RecordEvent(e) if e.event_type == "docker_unreachable"),
        )
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(critical, [30]);
    w.snap.docker_up = true;
    let out = w.at(310);
    assert!(has_event(&out, "docker_recovered", Severity::Info));
    assert!(acts(&out).contains(&restart(API)));
}

#[test]
fn disk_levels_warn_clean_and_go_critical() {
    // (disk %, expected actions, expected event severity) in order; the
    // level only drops below its threshold minus 2 points.
    let table: &[(f64, &[Action], Option<Severity>)] = &[
        (70.0, &[], None),
        (81.0, &[], Some(Severity::Warning)),
        (85.0, &[], None),
        (
            91.0,
            &[Action::DiskCleanup {
                level: DiskLevel::Cleanup,
            }],
            Some(Severity::Warning),
        ),
        (89.0, &[], None),
        (
            96.0,
            &[
                Action::DiskCleanup {
                    level: DiskLevel::Critical,
                },
                Action::VacuumAnalyze,
            ],
            Some(Severity::Critical),
        ),
        (94.0, &[], None),
        (92.0, &[], None),
    ];
    let mut w = World::new();
    for (i, (disk, expect, severity)) in table.iter().enumerate() {
        w.snap.readings.disk_percent = Some(*disk);
        let out = w.at(i as u64 * 10);
        assert_eq!(acts(&out), *expect, "at {disk} %");
        let level_event = events(&out)
            .into_iter()
            .find(|e| e.event_type == "disk_level");
        assert_eq!(level_event.map(|e| e.severity), *severity, "at {disk} %");
    }
    assert_eq!(
        w.state.disk_level,
        DiskLevel::Cleanup,
        "92 % is below 95 - 2"
    );
    w.snap.readings.disk_percent = Some(87.9);
    w.at(100);
    assert_eq!(w.state.disk_level, DiskLevel::Warn);
}

// ---- category D -----------------------------------------------------------

fn ready_for_reboot(w: &mut World) {
    w.cfg.reboot.enabled = true;
    w.snap.reboot = RebootReadiness {
        reboots_last_hour: 0,
        telemetry_flushed: true,
        disk_state_recorded: true,
        workflows_drained: true,
    };
}

#[test]
fn reboot_is_off_by_default() {
    let mut w = World::new();
    w.snap.db_inconsistent = true;
    let out = w.at(0);
    assert!(acts(&out).is_empty());
    assert!(has_event(&out, "reboot_disabled", Severity::Warning));
    assert!(w.run(10, 600, 10).is_empty(), "said once per cooldown");
}

#[test]
fn reboot_when_enabled_and_every_check_passes() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.db_inconsistent = true;
    let out = w.at(0);
    let reason = RebootReason::DbInconsistentAfterRecovery;
    assert_eq!(
        acts(&out),
        [
            Action::PrepareReboot {
                reason,
                drain_timeout_s: 60
            },
            Action::Reboot { reason }
        ]
    );
    assert!(has_event(&out, "reboot", Severity::Critical));
    assert!(
        w.run_actions(10, 590, 10).is_empty(),
        "one request per cooldown"
    );
}

#[test]
fn reboot_is_refused_during_an_update() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.db_inconsistent = true;
    w.snap.update_in_progress = true;
    let out = w.at(0);
    assert!(acts(&out).is_empty());
    assert!(has_event(&out, "reboot_refused", Severity::Warning));
    w.snap.update_in_progress = false;
    assert!(acts(&w.at(10)).contains(&Action::Reboot {
        reason: RebootReason::DbInconsistentAfterRecovery
    }));
}

#[test]
fn reboot_is_refused_after_two_reboots_in_the_hour() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.db_inconsistent = true;
    w.snap.reboot.reboots_last_hour = 2;
    let out = w.at(0);
    assert!(acts(&out).is_empty());
    assert!(has_event(&out, "reboot_refused", Severity::Warning));
    w.snap.reboot.reboots_last_hour = 1;
    assert!(acts(&w.at(10)).contains(&Action::Reboot {
        reason: RebootReason::DbInconsistentAfterRecovery
    }));
}

#[test]
fn reboot_waits_up_to_60s_for_workflows_and_for_the_flush() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.reboot.workflows_drained = false;
    w.snap.reboot.telemetry_flushed = false;
    w.snap.db_inconsistent = true;
    let reason = RebootReason::DbInconsistentAfterRecovery;
    assert_eq!(
        acts(&w.at(0)),
        [Action::PrepareReboot {
            reason,
            drain_timeout_s: 60
        }]
    );
    w.snap.reboot.telemetry_flushed = true;
    assert!(w.run_actions(1, 59, 1).is_empty(), "workflows get 60 s");
    assert_eq!(acts(&w.at(60)), [Action::Reboot { reason }]);
}

#[test]
fn a_reboot_whose_checks_never_pass_is_given_up() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.reboot.disk_state_recorded = false;
    w.snap.db_inconsistent = true;
    w.at(0);
    let log = w.run(10, 300, 10);
    assert!(!log.iter().any(|(_, a)| matches!(a, Action::Reboot { .. })));
    let given_up: Vec<u64> = log
        .iter()
        .filter(|(_, a)| matches!(a, Action::RecordEvent(e) if e.event_type == "reboot_refused"))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(given_up, [300]);
}

#[test]
fn three_critical_events_in_30_min_call_for_a_reboot() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.gpu_error = true; // critical 1 (and the LLM is stopped)
    w.set(LLM, ServiceState::Stopped);
    w.svc(LLM).stopped_on_purpose = true;
    w.cfg.reboot.gpu_resets_before_reboot = 100;
    w.at(0);
    w.snap.db_up = false; // critical 2, 30 s later
    w.run(10, 40, 10);
    w.snap.db_up = true;
    w.snap.readings.disk_percent = Some(96.0); // critical 3
    let out = w.at(50);
    assert!(acts(&out).contains(&Action::PrepareReboot {
        reason: RebootReason::RepeatedCriticalEvents,
        drain_timeout_s: 60
    }));
    assert!(acts(&out).contains(&Action::Reboot {
        reason: RebootReason::RepeatedCriticalEvents
    }));
}

#[test]
fn disk_still_full_after_cleanup_calls_for_a_reboot() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.readings.disk_percent = Some(98.0);
    let log = w.run(0, 300, 10);
    let reboots: Vec<u64> = log
        .iter()
        .filter(|(_, a)| {
            *a == Action::Reboot {
                reason: RebootReason::DiskFullAfterCleanup,
            }
        })
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(reboots, [300], "5 min after the critical cleanup at 0");
}

#[test]
fn a_gpu_failing_after_two_resets_calls_for_a_reboot() {
    let mut w = World::new();
    ready_for_reboot(&mut w);
    w.snap.gpu_error = true;
    w.set(LLM, ServiceState::Stopped);
    w.svc(LLM).stopped_on_purpose = true;
    let log = w.run(0, 600, 10);
    let resets: Vec<u64> = log
        .iter()
        .filter(|(_, a)| *a == Action::GpuReset)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(resets, [0, 600]);
    assert!(log.iter().any(|(t, a)| *t == 600
        && *a
            == Action::Reboot {
                reason: RebootReason::GpuPermanentlyFailing
            }));
}

#[test]
fn actions_serialize_with_a_tag() {
    let json = serde_json::to_value(restart(API)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"action": "restart_service", "name": "api", "reason": "service_down"})
    );
}
