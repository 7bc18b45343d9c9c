//! The pure part of supervision: one service's state machine. What the
//! admin or self-healing wants of it is one [`Intent`]; Docker events, probe
//! results and our own starts move its [`ServiceState`]. No I/O and no
//! clock of its own: the shell (`supervisor.rs`) talks to Docker and passes
//! `now` in, so every rule here is unit-tested on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

use super::ServiceState;
use super::catalog::HealthSpec;

/// After a failed probe of a service that has been healthy, the next comes
/// this soon (or at its interval, if sooner): a hang is confirmed in
/// `retries` quick probes instead of `retries` intervals, while a healthy
/// service is still probed only every `interval`.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// What is wanted of a service: exactly one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Keep it running: start it when it is not.
    Run,
    /// Stopped through the API: nothing restarts it, and the stop outlives
    /// a restart of the daemon (`services-stopped.json`).
    Stopped,
    /// Stopped by self-healing for a while (a stop + start, the LLM held for
    /// heat or a GPU reset): like `Stopped`, but not kept across a daemon
    /// restart.
    Paused,
    /// The healing policy gave up on it, or the engine refused its container
    /// (a 400): held `failed`, whatever events and probes say, until the API
    /// starts, stops or restarts it.
    Failed,
}

/// A Docker event about the service's own container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Died {
        exit_code: Option<i64>,
    },
    Stopped,
    Started,
    Destroyed,
    /// The image's own HEALTHCHECK turned healthy (true) or not.
    Health(bool),
}

/// One service's state and the bookkeeping behind it.
#[derive(Clone, Debug)]
pub struct Core {
    pub state: ServiceState,
    pub intent: Intent,
    /// Consecutive failed probes.
    pub health_failures: u32,
    pub last_exit_code: Option<i64>,
    /// Healthy at least once since its last start.
    pub ever_healthy: bool,
    health: Option<HealthSpec>,
    /// Until then a failing probe means `starting`, not `unhealthy`.
    start_deadline: Instant,
    next_probe: Instant,
    probing: bool,
    /// When the next `health.model` check is due.
    next_model_check: Instant,
    /// Why the last model check failed; until one passes every probe
    /// checks the model again and fails with this.
    model_failure: Option<String>,
    /// When (ns since the epoch) our last start or restart of it completed:
    /// `die`/`stop` events from before then are the exits we caused.
    settled_ns: i64,
}

impl Core {
    pub fn new(health: Option<HealthSpec>, intent: Intent, now: Instant) -> Core {
        Core {
            state: ServiceState::Unknown,
            intent,
            health_failures: 0,
            last_exit_code: None,
            ever_healthy: false,
            health,
            start_deadline: now,
            next_probe: now,
            probing: false,
            next_model_check: now,
            model_failure: None,
            settled_ns: 0,
        }
    }

    /// Stopped through the API or by self-healing: nothing starts it.
    pub fn stopped_on_purpose(&self) -> bool {
        matches!(self.intent, Intent::Stopped | Intent::Paused)
    }

    /// Moves to `state` unless the service is held `failed`. True when the
    /// state changed.
    pub fn set_state(&mut self, state: ServiceState) -> bool {
        if self.intent == Intent::Failed && state != ServiceState::Failed {
            return false;
        }
        let changed = self.state != state;
        self.state = state;
        changed
    }

    /// A new intent from the API or self-healing. A pause of a service the
    /// admin stopped keeps the admin's stop.
    pub fn want(&mut self, intent: Intent) {
        self.intent = match (self.intent, intent) {
            (Intent::Stopped, Intent::Paused) => Intent::Stopped,
            (_, i) => i,
        };
        match self.intent {
            Intent::Failed => {
                self.state = ServiceState::Failed;
            }
            Intent::Run if self.state == ServiceState::Failed => {
                self.state = ServiceState::Unknown;
            }
            _ => {}
        }
    }

    /// The catalog gave it a new spec (its container is recreated).
    pub fn respec(&mut self, health: Option<HealthSpec>) {
        self.health = health;
        self.ever_healthy = false;
        if self.intent == Intent::Failed {
            self.intent = Intent::Run;
        }
    }

    /// How long a fresh container may fail its probes before it is unhealthy.
    pub fn start_budget(&self) -> Duration {
        self.health.as_ref().map_or(Duration::from_secs(10), |h| {
            h.start_period + h.interval * h.retries
        })
    }

    /// Started long enough ago that a dependent may go ahead without it
    /// answering.
    pub fn start_budget_spent(&self, now: Instant) -> bool {
        self.state == ServiceState::Starting && now >= self.start_deadline
    }

    /// Ready for what depends on it.
    pub fn ready_for_dependents(&self, now: Instant) -> bool {
        self.state == ServiceState::Healthy
            || self.start_budget_spent(now)
            || self.stopped_on_purpose()
    }

    /// A start or restart of ours completed at `settled_ns`: `starting`,
    /// with a fresh budget and the first probe soon.
    pub fn started(&mut self, now: Instant, settled_ns: i64) {
        self.settled_ns = settled_ns;
        self.fresh_start(now);
        self.set_state(ServiceState::Starting);
    }

    fn fresh_start(&mut self, now: Instant) {
        self.ever_healthy = false;
        self.health_failures = 0;
        self.model_failure = None;
        self.next_model_check = now;
        self.start_deadline = now + self.start_budget();
        self.next_probe = now + Duration::from_millis(200);
    }

    /// A running container found at adoption, not started by us just now.
    pub fn adopted_running(&mut self, now: Instant) {
        if matches!(
            self.state,
            ServiceState::Unknown | ServiceState::Stopped | ServiceState::Unhealthy
        ) && !self.ever_healthy
        {
            self.start_deadline = now + self.start_budget();
            self.set_state(ServiceState::Starting);
        }
    }

    /// An event about its own container. `time_ns`: when Docker says it
    /// happened; exits from before our last start are the ones we caused.
    /// The result is the state it moved to, if it moved.
    pub fn on_event(
        &mut self,
        ev: Event,
        time_ns: Option<i64>,
        now: Instant,
    ) -> Option<ServiceState> {
        let stale = time_ns.is_some_and(|t| t <= self.settled_ns);
        let before = self.state;
        match ev {
            Event::Died { .. } | Event::Stopped if stale => return None,
            Event::Died { exit_code } => {
                self.last_exit_code = exit_code;
                if self.stopped_on_purpose() {
                    self.set_state(ServiceState::Stopped);
                } else if self.state != ServiceState::Restarting {
                    self.set_state(ServiceState::Unhealthy);
                }
            }
            Event::Stopped if self.stopped_on_purpose() => {
                self.set_state(ServiceState::Stopped);
            }
            Event::Stopped => {}
            Event::Started => {
                if self.state != ServiceState::Restarting {
                    self.fresh_start(now);
                    self.set_state(ServiceState::Starting);
                }
            }
            Event::Destroyed => {
                if !self.stopped_on_purpose() {
                    self.set_state(ServiceState::Unhealthy);
                }
            }
            Event::Health(healthy) => {
                let uses_docker = self.health.as_ref().is_some_and(|h| h.docker);
                if uses_docker {
                    self.on_probe(
                        if healthy {
                            Ok(())
                        } else {
                            Err("docker healthcheck failing".into())
                        },
                        now,
                    );
                }
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// Whether a probe is due now; when it is, it counts as running until
    /// [`Core::on_probe`]. A service without a check is healthy once running.
    pub fn probe_due(&mut self, now: Instant, has_container: bool) -> Option<HealthSpec> {
        if self.probing
            || now < self.next_probe
            || !has_container
            || !matches!(
                self.state,
                ServiceState::Starting | ServiceState::Healthy | ServiceState::Unhealthy
            )
        {
            return None;
        }
        let Some(h) = self.health.clone() else {
            if self.state == ServiceState::Starting {
                self.set_state(ServiceState::Healthy);
                self.ever_healthy = true;
            }
            return None;
        };
        if h.docker {
            return None; // health_status events drive these
        }
        // Until it has been healthy once, every second (at most): a
        // service that came up is seen within a second, not an interval
        // (Docker's `start_interval`).
        self.next_probe = now
            + if self.ever_healthy {
                h.interval
            } else {
                h.interval.min(Duration::from_secs(1))
            };
        Some(h)
    }

    /// The probe could not run (no address yet).
    pub fn probe_skipped(&mut self) {
        self.probing = false;
    }

    pub fn probe_started(&mut self) {
        self.probing = true;
    }

    /// A probe's result. Returns it back when it counted (None: the service
    /// is not running, or held failed, so the probe is moot).
    /// Whether this probe also checks the model (`health.model`): once the
    /// service has come up, every `interval`, and at every probe while the
    /// last check failed.
    pub fn model_check_due(&mut self, now: Instant) -> bool {
        let Some(m) = self.health.as_ref().and_then(|h| h.model.as_ref()) else {
            return false;
        };
        if !self.ever_healthy || (self.model_failure.is_none() && now < self.next_model_check) {
            return false;
        }
        self.next_model_check = now + m.interval;
        true
    }

    /// A probe's result with the model check's, when one ran: a failed
    /// check is the probe's failure, and stays it until a check passes.
    pub fn with_model_check(
        &mut self,
        live: Result<(), String>,
        model: Option<Result<(), String>>,
    ) -> Result<(), String> {
        live?;
        match model {
            Some(Ok(())) => {
                self.model_failure = None;
                Ok(())
            }
            Some(Err(e)) => {
                self.model_failure = Some(e.clone());
                Err(e)
            }
            None => self.model_failure.clone().map_or(Ok(()), Err),
        }
    }

    pub fn on_probe(
        &mut self,
        result: Result<(), String>,
        now: Instant,
    ) -> Option<Result<(), String>> {
        self.probing = false;
        if self.intent == Intent::Failed
            || !matches!(
                self.state,
                ServiceState::Starting | ServiceState::Healthy | ServiceState::Unhealthy
            )
        {
            return None;
        }
        let retries = self.health.as_ref().map_or(3, |h| h.retries);
        match &result {
            Ok(()) => {
                self.health_failures = 0;
                self.ever_healthy = true;
                self.set_state(ServiceState::Healthy);
            }
            Err(_) => {
                self.health_failures += 1;
                if self.ever_healthy {
                    self.next_probe = self.next_probe.min(now + CONFIRM_AFTER);
                }
                if !self.ever_healthy && now < self.start_deadline {
                    self.set_state(ServiceState::Starting);
                } else if self.health_failures >= retries {
                    self.set_state(ServiceState::Unhealthy);
                }
            }
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(retries: u32) -> HealthSpec {
        HealthSpec {
            http: Some(super::super::catalog::HttpProbe {
                port: 80,
                path: "/".into(),
                status: 200,
            }),
            tcp: None,
            docker: false,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(30),
            model: None,
        }
    }

    fn started() -> Core {
        let now = Instant::now();
        let mut c = Core::new(Some(health(3)), Intent::Run, now);
        c.started(now, 100);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_probe_is_starting_within_the_budget_then_unhealthy_after_retries() {
        let mut c = started();
        assert_eq!(c.state, ServiceState::Starting);
        // Budget: start_period 30 s + 3 × 10 s.
        assert_eq!(c.start_budget(), Duration::from_secs(60));
        c.on_probe(Err("refused".into()), Instant::now());
        assert_eq!(c.state, ServiceState::Starting);
        tokio::time::advance(Duration::from_secs(61)).await;
        c.on_probe(Err("refused".into()), Instant::now());
        assert_eq!(c.state, ServiceState::Starting, "2 failures < 3 retries");
        c.on_probe(Err("refused".into()), Instant::now());
        assert_eq!(c.state, ServiceState::Unhealthy);
        c.on_probe(Ok(()), Instant::now());
        assert_eq!((c.state, c.health_failures), (ServiceState::Healthy, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn probes_come_every_second_until_first_healthy_then_every_interval() {
        let mut c = started();
        assert!(
            c.probe_due(Instant::now(), true).is_none(),
            "first after 200 ms"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(c.probe_due(Instant::now(), true).is_some());
        c.probe_started();
        assert!(c.probe_due(Instant::now(), true).is_none(), "one at a time");
        c.on_probe(Err("not yet".into()), Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.probe_due(Instant::now(), true).is_some());
        c.on_probe(Ok(()), Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            c.probe_due(Instant::now(), true).is_some(),
            "interval set before the answer"
        );
        c.on_probe(Ok(()), Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(c.probe_due(Instant::now(), true).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.probe_due(Instant::now(), true).is_some());
        // No container, no probe.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(c.probe_due(Instant::now(), false).is_none());
    }

    /// A service that was healthy and fails a probe is probed again after
    /// `CONFIRM_AFTER`, not after its interval; once it answers again, the
    /// interval is back.
    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_of_a_healthy_service_is_confirmed_within_seconds() {
        let mut c = started();
        tokio::time::advance(Duration::from_millis(200)).await;
        c.probe_due(Instant::now(), true).unwrap();
        c.probe_started();
        c.on_probe(Ok(()), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        // Hung: each probe takes its whole timeout (5 s) to fail.
        for n in 1..=3 {
            c.probe_due(Instant::now(), true).expect("due");
            c.probe_started();
            tokio::time::advance(Duration::from_secs(5)).await;
            c.on_probe(Err("timed out".into()), Instant::now());
            if n < 3 {
                assert_eq!(c.state, ServiceState::Healthy, "{n} failure(s) < 3 retries");
                tokio::time::advance(CONFIRM_AFTER - Duration::from_millis(1)).await;
                assert!(
                    c.probe_due(Instant::now(), true).is_none(),
                    "not before 1 s"
                );
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(
            c.state,
            ServiceState::Unhealthy,
            "3 failures in 17 s, not 25 s"
        );
        // Back: the interval applies again.
        tokio::time::advance(CONFIRM_AFTER).await;
        c.probe_due(Instant::now(), true).unwrap();
        c.probe_started();
        c.on_probe(Ok(()), Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(c.probe_due(Instant::now(), true).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.probe_due(Instant::now(), true).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_check_running_is_healthy() {
        let now = Instant::now();
        let mut c = Core::new(None, Intent::Run, now);
        c.started(now, 1);
        assert!(c.probe_due(Instant::now(), true).is_none());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(c.probe_due(Instant::now(), true).is_none());
        assert_eq!(c.state, ServiceState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn exits_we_caused_are_not_crashes_and_a_stop_on_purpose_is_stopped() {
        let mut c = started();
        // A die from before our start settled (ns 100).
        assert_eq!(
            c.on_event(
                Event::Died {
                    exit_code: Some(137)
                },
                Some(90),
                Instant::now()
            ),
            None
        );
        assert_eq!(c.state, ServiceState::Starting);
        // A real crash.
        let s = c.on_event(
            Event::Died { exit_code: Some(3) },
            Some(200),
            Instant::now(),
        );
        assert_eq!(s, Some(ServiceState::Unhealthy));
        assert_eq!(c.last_exit_code, Some(3));
        // Stopped by the admin: the die is a stop.
        c.want(Intent::Stopped);
        c.on_event(
            Event::Died { exit_code: Some(0) },
            Some(300),
            Instant::now(),
        );
        assert_eq!(c.state, ServiceState::Stopped);
        assert!(c.stopped_on_purpose());
        // Self-healing's pause does not undo the admin's stop.
        c.want(Intent::Paused);
        assert_eq!(c.intent, Intent::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_held_failed_ignores_events_and_probes_until_the_api_acts() {
        let mut c = started();
        c.want(Intent::Failed);
        assert_eq!(c.state, ServiceState::Failed);
        c.on_event(Event::Started, Some(500), Instant::now());
        c.on_probe(Ok(()), Instant::now());
        c.on_event(Event::Destroyed, None, Instant::now());
        assert_eq!(c.state, ServiceState::Failed);
        c.want(Intent::Run);
        assert_eq!(c.state, ServiceState::Unknown);
        c.started(Instant::now(), 600);
        assert_eq!(c.state, ServiceState::Starting);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_in_progress_is_not_a_crash_and_the_start_event_renews_the_budget() {
        let mut c = started();
        c.on_probe(Ok(()), Instant::now());
        c.set_state(ServiceState::Restarting);
        assert_eq!(
            c.on_event(
                Event::Died { exit_code: Some(0) },
                Some(700),
                Instant::now()
            ),
            None
        );
        assert_eq!(c.on_event(Event::Started, Some(701), Instant::now()), None);
        // A start we did not make (docker start by hand): starting, fresh budget.
        c.set_state(ServiceState::Unhealthy);
        let s = c.on_event(Event::Started, Some(800), Instant::now());
        assert_eq!(s, Some(ServiceState::Starting));
        assert!(!c.ever_healthy);
        assert!(!c.start_budget_spent(Instant::now()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.ready_for_dependents(Instant::now()), "budget spent");
    }

    #[tokio::test(start_paused = true)]
    async fn docker_healthchecks_drive_only_services_that_use_them() {
        let now = Instant::now();
        let mut h = health(1);
        h.http = None;
        h.docker = true;
        let mut c = Core::new(Some(h), Intent::Run, now);
        c.started(now, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            c.probe_due(Instant::now(), true).is_none(),
            "events drive it"
        );
        c.on_event(Event::Health(true), Some(2), Instant::now());
        assert_eq!(c.state, ServiceState::Healthy);
        let mut plain = started();
        plain.on_event(Event::Health(true), Some(200), Instant::now());
        assert_eq!(plain.state, ServiceState::Starting);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_model_check_fails_every_probe_until_one_passes() {
        let now = Instant::now();
        let mut h = health(2);
        h.model = Some(super::super::catalog::ModelCheck {
            model: None,
            dimension: None,
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        });
        let mut c = Core::new(Some(h), Intent::Run, now);
        c.started(now, 1);
        // Not before the service has come up.
        assert!(!c.model_check_due(Instant::now()));
        let ok = c.with_model_check(Ok(()), None);
        c.on_probe(ok, Instant::now());
        assert_eq!(c.state, ServiceState::Healthy);
        // Then at once, and not again within the interval.
        assert!(c.model_check_due(Instant::now()));
        let r = c.with_model_check(Ok(()), Some(Ok(())));
        c.on_probe(r, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!c.model_check_due(Instant::now()));
        tokio::time::advance(Duration::from_secs(240)).await;
        assert!(c.model_check_due(Instant::now()));
        // A failure counts like a failed probe, with its reason ...
        let why = "the model m does not answer: 500".to_string();
        let r = c.with_model_check(Ok(()), Some(Err(why.clone())));
        assert_eq!(c.on_probe(r, Instant::now()), Some(Err(why.clone())));
        assert_eq!(c.state, ServiceState::Healthy, "one failure of two");
        // ... is checked at every probe now, and a probe without a check
        // (none due) still reports it.
        assert!(c.model_check_due(Instant::now()));
        assert_eq!(c.with_model_check(Ok(()), None), Err(why.clone()));
        let r = c.with_model_check(Ok(()), Some(Err(why.clone())));
        c.on_probe(r, Instant::now());
        assert_eq!(c.state, ServiceState::Unhealthy);
        // A dead runtime is reported as such, not as the model.
        assert_eq!(
            c.with_model_check(Err("no answer".into()), None),
            Err("no answer".into())
        );
        // One passing check clears it.
        let r = c.with_model_check(Ok(()), Some(Ok(())));
        c.on_probe(r, Instant::now());
        assert_eq!(c.state, ServiceState::Healthy);
        assert!(!c.model_check_due(Instant::now()));
        // A restart forgets it and waits for the service to come up again.
        c.started(Instant::now(), 2);
        assert!(!c.model_check_due(Instant::now()));
    }
}
