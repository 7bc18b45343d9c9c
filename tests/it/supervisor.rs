//! The supervisor on the real Docker engine, with the test runtime image
//! built locally from scratch (scripts/testrt-image; no registry). Each test
//! has its own project label and network, and removes every container and
//! network it made, even when it fails.

use crate::common;

mod backup;

use std::time::{Duration, Instant};

use arasuld::docker::{ServiceState, SupervisorHandle};
use arasuld::tasks::Workers;
use common::docker::{IMAGE, Project, SOCKET, docker, spawn_supervisor};
use common::wait_until;

/// One test's corner of the engine.
struct Env {
    project: Project,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new(tag: &str) -> Env {
        Env {
            project: Project::new(tag),
            dir: tempfile::tempdir().unwrap(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn network(&self) -> String {
        self.project.network()
    }

    /// The two-service catalog of these tests, with `extra` YAML added to the
    /// embeddings service.
    fn catalog(&self, embeddings_extra: &str) -> arasuld::docker::Catalog {
        let text = format!(
            r#"project: {p}
network: {n}
services:
- name: llm
  image: {IMAGE}
  role: llm
  critical: true
  memory_limit: 128m
  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
- name: embeddings
  image: {IMAGE}
  role: embeddings
  depends_on: [llm]
  health: {{http: {{port: 11434, path: /health}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
{embeddings_extra}"#,
            p = self.project.name,
            n = self.network(),
        );
        arasuld::docker::catalog::parse("test", &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn start(
        &self,
        catalog: arasuld::docker::Catalog,
        socket: &str,
    ) -> (Workers, SupervisorHandle) {
        let _guard = self.rt.enter();
        spawn_supervisor(self.dir.path(), catalog, socket)
    }

    fn stop(&self, workers: Workers) {
        let stuck = self.rt.block_on(workers.shutdown(Duration::from_secs(5)));
        assert!(stuck.is_empty(), "workers did not stop: {stuck:?}");
    }

    fn wait_state(&self, h: &SupervisorHandle, name: &str, want: ServiceState, timeout: Duration) {
        wait_until(&format!("{name} to be {want:?}"), timeout, || {
            (h.service(name)?.state == want).then_some(())
        });
    }

    fn container(&self, service: &str) -> String {
        self.project.container(service)
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.container(service)])
    }
}

#[test]
fn fresh_start_creates_the_network_and_starts_in_dependency_order() {
    let env = Env::new("order");
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );

    assert_eq!(
        docker(&["network", "inspect", "-f", "{{.Name}}", &env.network()]),
        env.network()
    );
    // embeddings was started only after llm answered its health check.
    let llm_started = env.inspect("llm", "{{.State.StartedAt}}");
    let emb_started = env.inspect("embeddings", "{{.State.StartedAt}}");
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert!(
        t(&emb_started) > t(&llm_started),
        "{llm_started} vs {emb_started}"
    );
    assert_eq!(
        env.inspect("llm", "{{index .Config.Labels \"io.arasul.service\"}}"),
        "llm"
    );
    // Limits from the catalog reach Docker; ports bind to loopback only.
    assert_eq!(
        env.inspect("llm", "{{.HostConfig.Memory}}"),
        (128u64 << 20).to_string()
    );
    let llm = h.service("llm").unwrap();
    assert!(llm.container_id.is_some() && llm.image_id.is_some() && llm.started_at.is_some());
    env.stop(workers);
}

#[test]
fn a_restarted_daemon_adopts_running_containers_and_recreates_only_changed_ones() {
    let env = Env::new("adopt");
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );
    let ids = |h: &SupervisorHandle| {
        (
            h.service("llm").unwrap().container_id.unwrap(),
            h.service("embeddings").unwrap().container_id.unwrap(),
        )
    };
    let before = ids(&h);
    let llm_started = env.inspect("llm", "{{.State.StartedAt}}");
    env.stop(workers);

    // Same catalog: same containers, not restarted.
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );
    assert_eq!(ids(&h), before);
    assert_eq!(env.inspect("llm", "{{.State.StartedAt}}"), llm_started);
    env.stop(workers);

    // embeddings changed: only it is recreated.
    let (workers, h) = env.start(env.catalog("  env: {EXTRA: \"1\"}\n"), SOCKET);
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );
    let after = ids(&h);
    assert_eq!(after.0, before.0, "llm must be adopted");
    assert_ne!(after.1, before.1, "embeddings must be recreated");
    assert_eq!(env.inspect("llm", "{{.State.StartedAt}}"), llm_started);
    env.stop(workers);
}

#[test]
fn docker_kill_is_seen_through_events_within_a_second() {
    let env = Env::new("kill");
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    let t0 = Instant::now();
    docker(&["kill", &env.container("llm")]);
    env.wait_state(&h, "llm", ServiceState::Unhealthy, Duration::from_secs(5));
    let seen = t0.elapsed();
    assert!(seen < Duration::from_secs(1), "state change took {seen:?}");
    assert_eq!(h.service("llm").unwrap().last_exit_code, Some(137));
    env.stop(workers);
}

#[test]
fn a_missing_image_is_reported_without_a_crash_loop() {
    let env = Env::new("noimg");
    let text = format!(
        "project: {}\nnetwork: {}\nservices:\n- name: ghost\n  image: arasul-no-such-image:1\n\
         - name: dependent\n  image: {IMAGE}\n  depends_on: [ghost]\n\
         - name: unrelated\n  image: {IMAGE}\n",
        env.project.name,
        env.network()
    );
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let (workers, h) = env.start(catalog, SOCKET);
    env.wait_state(
        &h,
        "ghost",
        ServiceState::ImageMissing,
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        h.service("ghost").unwrap().state,
        ServiceState::ImageMissing
    );
    let sup = workers
        .statuses()
        .into_iter()
        .find(|w| w.name == "supervisor")
        .unwrap();
    assert_eq!(
        sup.errors, 0,
        "the supervisor must not fail over a missing image"
    );
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.arasul.project={}", env.project.name),
            "--filter",
            "label=io.arasul.service=ghost",
        ]),
        ""
    );
    // Offline (docker.pull: never): the reason says how to get it.
    let ghost = h.service("ghost").unwrap();
    assert!(
        ghost
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("docker.pull is never"),
        "{ghost:?}"
    );
    // What needs it waits and says so; what does not, runs.
    env.wait_state(
        &h,
        "unrelated",
        ServiceState::Healthy,
        Duration::from_secs(15),
    );
    let dependent = h.service("dependent").unwrap();
    assert_eq!(
        dependent.last_error.as_deref(),
        Some("waiting for ghost (image_missing)")
    );
    // Asking for it gives a clear error, not a crash.
    let err = env.rt.block_on(h.start("ghost")).unwrap_err();
    assert!(err.to_string().contains("arasul-no-such-image:1"), "{err}");
    env.stop(workers);
}

#[test]
fn a_wrong_socket_means_unknown_until_it_is_fixed() {
    let env = Env::new("sock");
    let link = env.dir.path().join("docker.sock");
    let (workers, h) = env.start(env.catalog(""), link.to_str().unwrap());
    env.wait_state(&h, "llm", ServiceState::Unknown, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        h.services()
            .iter()
            .all(|s| s.state == ServiceState::Unknown)
    );
    let err = env.rt.block_on(h.restart("llm")).unwrap_err();
    assert!(err.to_string().contains("not reachable"), "{err}");

    std::os::unix::fs::symlink(SOCKET, &link).unwrap();
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(40));
    env.stop(workers);
}

#[test]
fn a_service_stopped_on_purpose_stays_stopped_across_restarts() {
    let env = Env::new("stop");
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );
    env.rt.block_on(h.stop("embeddings")).unwrap();
    assert_eq!(
        h.service("embeddings").unwrap().state,
        ServiceState::Stopped
    );
    assert!(h.service("embeddings").unwrap().stopped_on_purpose);
    assert_eq!(env.inspect("embeddings", "{{.State.Running}}"), "false");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        h.service("embeddings").unwrap().state,
        ServiceState::Stopped
    );
    env.stop(workers);

    // A new daemon reads the persisted decision and leaves it stopped.
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Stopped,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.inspect("embeddings", "{{.State.Running}}"), "false");

    // Starting it through the API clears the decision.
    env.rt.block_on(h.start("embeddings")).unwrap();
    env.wait_state(
        &h,
        "embeddings",
        ServiceState::Healthy,
        Duration::from_secs(30),
    );
    assert!(!h.service("embeddings").unwrap().stopped_on_purpose);
    env.stop(workers);
}

#[test]
fn an_out_of_memory_kill_is_flagged() {
    let env = Env::new("oom");
    let text = format!(
        "project: {}\nnetwork: {}\nservices:\n- name: hog\n  image: {IMAGE}\n  memory_limit: 32m\n  env: {{TESTRT_OOM: \"1\"}}\n",
        env.project.name,
        env.network()
    );
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let (workers, h) = env.start(catalog, SOCKET);
    wait_until("the OOM kill to be seen", Duration::from_secs(30), || {
        let s = h.service("hog")?;
        (s.oom_killed && s.state == ServiceState::Unhealthy).then_some(s)
    });
    assert_eq!(h.service("hog").unwrap().last_exit_code, Some(137));
    env.stop(workers);
}

/// What the host's engine reports as its CPU count.
fn engine_cpus() -> f64 {
    docker(&["info", "--format", "{{.NCPU}}"]).parse().unwrap()
}

#[test]
fn a_service_the_engine_refuses_fails_alone_and_limits_fit_the_host() {
    let env = Env::new("refused");
    // `tiny`: a memory limit Docker refuses at create (400, under 6 MB);
    // `big`: more cores than the host has, clamped instead of refused.
    let text = format!(
        "project: {p}\nnetwork: {n}\nservices:\n\
         - name: tiny\n  image: {IMAGE}\n  memory_limit: 1m\n\
         - name: big\n  image: {IMAGE}\n  cpu_limit: 512\n  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}\n",
        p = env.project.name,
        n = env.network()
    );
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let (workers, h) = env.start(catalog, SOCKET);
    env.wait_state(&h, "big", ServiceState::Healthy, Duration::from_secs(30));
    env.wait_state(&h, "tiny", ServiceState::Failed, Duration::from_secs(15));
    let tiny = h.service("tiny").unwrap();
    let err = tiny.last_error.unwrap_or_default();
    assert!(
        err.contains("refused") && err.to_lowercase().contains("memory"),
        "{err}"
    );
    // The engine answered: nothing is "unknown", the worker did not fail.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(h.service("big").unwrap().state, ServiceState::Healthy);
    let sup = workers
        .statuses()
        .into_iter()
        .find(|w| w.name == "supervisor")
        .unwrap();
    assert_eq!(sup.errors, 0, "an engine's refusal is not an outage");
    let container = env.project.container("big");
    let nano: f64 = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}}",
        &container,
    ])
    .parse()
    .unwrap();
    assert_eq!(nano, engine_cpus() * 1e9, "cpu_limit clamped to the host");
    // Every container's log is capped (json-file, 50 MB x 5 by default).
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}",
            &container
        ]),
        "json-file 50m 5"
    );
    env.stop(workers);
}

#[test]
fn a_daemon_removes_only_the_containers_it_created() {
    let env = Env::new("owner");
    let (workers, h) = env.start(env.catalog(""), SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    env.stop(workers);
    let llm = env.container("llm");
    let llm_id = docker(&["inspect", "-f", "{{.Id}}", &llm]);

    // A second daemon (its own state dir: another install, or a development
    // daemon) on the same engine and project, with none of those services.
    let other = tempfile::tempdir().unwrap();
    let parse = |services: &str| {
        arasuld::docker::catalog::parse(
            "t",
            &format!(
                "project: {}\nnetwork: {}\nservices: {services}\n",
                env.project.name,
                env.network()
            ),
        )
        .unwrap()
    };
    let (workers, h2) = {
        let _guard = env.rt.enter();
        spawn_supervisor(other.path(), parse("[]"), SOCKET)
    };
    // A command is answered only after the first reconcile.
    env.rt.block_on(h2.image_overrides()).unwrap();
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &llm]),
        llm_id,
        "another daemon's container must survive"
    );

    // What this daemon created itself and dropped from its catalog goes.
    let own = parse(&format!("[{{name: own, image: {IMAGE}}}]"));
    env.rt.block_on(h2.set_catalog(own)).unwrap();
    env.wait_state(&h2, "own", ServiceState::Healthy, Duration::from_secs(30));
    env.rt.block_on(h2.set_catalog(parse("[]"))).unwrap();
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=^{}$", env.container("own"))
        ]),
        ""
    );
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &llm]), llm_id);
    env.stop(workers);
}

#[test]
fn a_missing_image_is_pulled_through_a_stall_and_an_outage_and_refused_when_it_cannot_fit() {
    use common::docker::{spawn_supervisor_with, supervisor_config};
    use common::registry::{Flow, Images, Proxy, Registry, unique_image};

    let env = Env::new("pull");
    let registry = Registry::start();
    let p = &env.project.name;
    // Built here, pushed, and removed from the engine again: only the
    // registry has their noise layer.
    for tag in ["slow", "fast", "big"] {
        let local = unique_image(&format!("arasul-pulltest:{p}-{tag}"), 1_500_000);
        registry.push(&local, &format!("{p}/rt:{tag}"));
        docker(&["rmi", &local]);
    }
    let proxy = Proxy::start(registry.port, Flow::Slow);
    let catalog = |service: &str, image: &str| {
        arasuld::docker::catalog::parse(
            "t",
            &format!(
                "project: {p}\nnetwork: {n}\nservices:\n- name: {service}\n  image: {image}\n  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}\n",
                n = env.network()
            ),
        )
        .unwrap()
    };
    let slow = format!("127.0.0.1:{}/{p}/rt:slow", proxy.port);
    let fast = format!("127.0.0.1:{}/{p}/rt:fast", registry.port);
    let _pulled = Images(vec![slow.clone(), fast.clone()]);
    let pulling = |dir: &std::path::Path| {
        let mut cfg = supervisor_config(dir, SOCKET);
        cfg.pull.policy = arasuld::docker::pull::PullPolicy::Auto;
        cfg
    };
    let (workers, h) = {
        let _guard = env.rt.enter();
        spawn_supervisor_with(pulling(env.dir.path()), catalog("llm", &slow))
    };

    // Progress moves, in bytes of the size the registry's manifest gave.
    let first = wait_until("pull progress", Duration::from_secs(30), || {
        h.service("llm")?.pull.filter(|p| p.bytes_done > 0)
    });
    assert!(first.bytes_total >= 1_500_000, "{first:?}");
    assert!(first.bytes_done < first.bytes_total, "{first:?}");
    assert!(first.layers_total >= 1, "{first:?}");
    assert_eq!(h.service("llm").unwrap().state, ServiceState::ImageMissing);

    // The registry stops answering: the stall is seen and the pull retried.
    proxy.set(Flow::Freeze);
    wait_until("the stall to be seen", Duration::from_secs(15), || {
        let p = h.service("llm")?.pull?;
        p.last_error.filter(|e| e.contains("no progress"))
    });
    // It is gone altogether: the pull keeps retrying, nothing runs.
    proxy.set(Flow::Cut);
    wait_until(
        "a retry while the registry is away",
        Duration::from_secs(20),
        || h.service("llm")?.pull.filter(|p| p.attempt >= 3),
    );
    assert_eq!(h.service("llm").unwrap().state, ServiceState::ImageMissing);
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=^{}$", env.container("llm"))
        ]),
        ""
    );
    // Back: the pull completes and the service comes up.
    proxy.set(Flow::Fast);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(60));
    let s = h.service("llm").unwrap();
    assert!(s.pull.is_none() && s.last_error.is_none(), "{s:?}");
    env.stop(workers);

    // From an empty store to healthy, with nothing in the way (the figure
    // the README gives).
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (workers, h) = {
        let _guard = env.rt.enter();
        spawn_supervisor_with(pulling(dir.path()), catalog("fast", &fast))
    };
    env.wait_state(&h, "fast", ServiceState::Healthy, Duration::from_secs(60));
    eprintln!(
        "pull: empty image store to healthy in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    env.stop(workers);

    // A pull that would leave less than the free-space floor is refused
    // before a byte is written, with the numbers; nothing is left behind.
    let never = format!("127.0.0.1:{}/{p}/rt:big", registry.port);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = pulling(dir.path());
    cfg.pull.min_free = 1 << 60;
    let (workers, h) = {
        let _guard = env.rt.enter();
        spawn_supervisor_with(cfg, catalog("big", &never))
    };
    let why = wait_until("the refusal", Duration::from_secs(20), || {
        h.service("big")?
            .last_error
            .filter(|e| e.contains("not enough space"))
    });
    assert!(why.contains("MB") && why.contains("must keep"), "{why}");
    assert_eq!(h.service("big").unwrap().state, ServiceState::ImageMissing);
    assert_eq!(docker(&["images", "-q", &never]), "", "nothing pulled");
    env.stop(workers);
}

#[test]
fn the_shipped_catalog_comes_up_healthy_on_a_small_box_without_a_gpu() {
    let env = Env::new("shipped");
    let (text, _standins) =
        common::docker::shipped_with_standins(&env.project, &env.dir.path().join("data"));
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let t0 = Instant::now();
    let (workers, h) = env.start(catalog, SOCKET);
    for name in ["llm", "embeddings", "minio", "n8n"] {
        env.wait_state(&h, name, ServiceState::Healthy, Duration::from_secs(60));
    }
    eprintln!(
        "shipped catalog: all four healthy in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    // No GPU runtime on this engine: the LLM runs on the CPU, and says so;
    // its 6-core limit is clamped to the host.
    assert_eq!(h.service("llm").unwrap().gpu.as_deref(), Some("cpu"));
    let nano: f64 = env
        .inspect("llm", "{{.HostConfig.NanoCpus}}")
        .parse()
        .unwrap();
    assert!(nano <= engine_cpus() * 1e9, "{nano}");
    // MinIO runs with generated credentials, kept 0600 in the secrets dir.
    let secrets = env.dir.path().join("secrets");
    let user = std::fs::read_to_string(secrets.join("minio-root-user")).unwrap();
    let password = std::fs::read_to_string(secrets.join("minio-root-password")).unwrap();
    let minio_env = env.inspect("minio", "{{json .Config.Env}}");
    assert!(
        minio_env.contains(&format!("MINIO_ROOT_USER={}", user.trim())),
        "{minio_env}"
    );
    assert!(
        minio_env.contains(&format!("MINIO_ROOT_PASSWORD={}", password.trim())),
        "{minio_env}"
    );
    assert!(password.trim().len() >= 20 && !minio_env.contains("minioadmin"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(secrets.join("minio-root-password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        env.inspect("n8n", "{{json .Config.Env}}")
            .contains("N8N_ENCRYPTION_KEY=")
    );
    // No port is published on the host: arasuld's front door reaches each
    // one on its network address (and MinIO's console on its web port).
    for name in ["llm", "embeddings", "minio", "n8n"] {
        let bindings = env.inspect(name, "{{json .HostConfig.PortBindings}}");
        assert!(bindings == "{}" || bindings == "null", "{name}: {bindings}");
    }
    assert_eq!(h.service("minio").unwrap().web_port, Some(9001));
    assert_eq!(h.service("n8n").unwrap().web_port, Some(5678));
    // Every container's log is capped.
    for name in ["llm", "embeddings", "minio", "n8n"] {
        assert_eq!(
            env.inspect(
                name,
                "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}}"
            ),
            "json-file 50m",
            "{name}"
        );
    }
    env.stop(workers);
}

#[test]
fn a_slow_stop_runs_beside_the_loop_and_later_commands_wait_their_turn() {
    use common::docker::{spawn_supervisor_with, supervisor_config};
    let env = Env::new("slowstop");
    let health = "health: {http: {port: 11434, path: /api/version}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}";
    let text = format!(
        "project: {p}\nnetwork: {n}\nservices:\n\
         - name: slow\n  image: {IMAGE}\n  env: {{TESTRT_IGNORE_TERM: \"1\"}}\n  {health}\n\
         - name: other\n  image: {IMAGE}\n  {health}\n",
        p = env.project.name,
        n = env.network()
    );
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let mut cfg = supervisor_config(env.dir.path(), SOCKET);
    cfg.stop_timeout = Duration::from_secs(5);
    let (workers, h) = {
        let _guard = env.rt.enter();
        spawn_supervisor_with(cfg, catalog)
    };
    env.wait_state(&h, "slow", ServiceState::Healthy, Duration::from_secs(30));
    env.wait_state(&h, "other", ServiceState::Healthy, Duration::from_secs(30));

    // `slow` ignores SIGTERM: its stop takes the whole 5 s timeout.
    let t0 = Instant::now();
    let stop = {
        let h = h.clone();
        env.rt.spawn(async move { h.stop("slow").await })
    };
    // A start asked meanwhile waits for the stop, then runs.
    let start = {
        let h = h.clone();
        env.rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            h.start("slow").await
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile the loop goes on: a kill of another service is seen at once.
    docker(&["kill", &env.container("other")]);
    env.wait_state(&h, "other", ServiceState::Unhealthy, Duration::from_secs(2));
    assert!(
        !stop.is_finished(),
        "the kill must be seen while the stop still runs"
    );
    env.rt.block_on(stop).unwrap().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "the stop took its timeout"
    );
    env.rt.block_on(start).unwrap().unwrap();
    env.wait_state(&h, "slow", ServiceState::Healthy, Duration::from_secs(30));
    assert!(!h.service("slow").unwrap().stopped_on_purpose);
    env.stop(workers);
}

#[test]
fn a_registry_that_needs_a_login_is_pulled_from_with_the_boxs_credentials() {
    use common::docker::{spawn_supervisor_with, supervisor_config};
    use common::registry::{Images, Registry, unique_image};

    let env = Env::new("login");
    let registry = Registry::with_login("box", "s3cret-pull");
    let p = &env.project.name;
    let local = unique_image(&format!("arasul-pulltest:{p}-login"), 100_000);
    let image = registry.push(&local, &format!("{p}/rt:login"));
    docker(&["rmi", &local]);
    let _pulled = Images(vec![image.clone()]);
    let catalog = arasuld::docker::catalog::parse(
        "t",
        &format!(
            "project: {p}\nnetwork: {n}\nservices:\n- name: app\n  image: {image}\n",
            n = env.network()
        ),
    )
    .unwrap();
    let mut cfg = supervisor_config(env.dir.path(), SOCKET);
    cfg.pull.policy = arasuld::docker::pull::PullPolicy::Auto;
    let secrets = cfg.pull.secrets_dir.clone();
    let (workers, h) = {
        let _guard = env.rt.enter();
        spawn_supervisor_with(cfg, catalog)
    };
    // No login yet: the registry refuses, the pull keeps trying.
    let refused = wait_until("a refused pull", Duration::from_secs(20), || {
        h.service("app")?.pull?.last_error
    });
    assert_eq!(h.service("app").unwrap().state, ServiceState::ImageMissing);
    // The owner adds the box's login: the next attempt uses it.
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(
        secrets.join("registry-auth.json"),
        format!(
            "{{\"127.0.0.1:{}\": {{\"username\": \"box\", \"password\": \"s3cret-pull\"}}}}",
            registry.port
        ),
    )
    .unwrap();
    env.wait_state(&h, "app", ServiceState::Healthy, Duration::from_secs(30));
    assert!(!refused.is_empty());
    env.stop(workers);
}

/// POSTs JSON to a service's test runtime on its container address.
fn testrt_post(h: &SupervisorHandle, service: &str, path: &str, body: &str) {
    let addr = h.service(service).unwrap().address.unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-fsS",
            "--max-time",
            "5",
            "-H",
            "content-type: application/json",
        ])
        .args(["--data", body, &format!("http://{addr}:11434{path}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_runtime_that_answers_its_version_but_cannot_generate_is_unhealthy_with_that_reason() {
    let env = Env::new("model");
    let text = format!(
        r#"project: {p}
network: {n}
services:
- name: llm
  image: {IMAGE}
  role: llm
  health:
    http: {{port: 11434, path: /api/version}}
    interval: 300ms
    timeout: 1s
    retries: 2
    start_period: 5s
    model: {{model: "llama3.2:1b", interval: 1s, timeout: 5s}}
- name: embeddings
  image: {IMAGE}
  role: embeddings
  health:
    http: {{port: 11434, path: /api/version}}
    interval: 300ms
    timeout: 1s
    retries: 2
    start_period: 5s
    model: {{dimension: 768, interval: 1s, timeout: 5s}}
"#,
        p = env.project.name,
        n = env.network(),
    );
    let catalog = arasuld::docker::catalog::parse("t", &text).unwrap();
    let (workers, h) = env.start(catalog, SOCKET);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(30));
    // The model answers: healthy, and stays so over a few checks.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(h.service("llm").unwrap().state, ServiceState::Healthy);

    // Its runner dies; /api/version still answers.
    testrt_post(&h, "llm", "/testrt/generate", r#"{"status": 500}"#);
    env.wait_state(&h, "llm", ServiceState::Unhealthy, Duration::from_secs(20));
    let why = h.service("llm").unwrap().last_error.unwrap();
    assert!(
        why.contains("the model llama3.2:1b does not answer")
            && why.contains("llama runner process has terminated"),
        "{why}"
    );
    // Back: healthy again at the next check.
    testrt_post(&h, "llm", "/testrt/generate", r#"{"status": 200}"#);
    env.wait_state(&h, "llm", ServiceState::Healthy, Duration::from_secs(20));

    // The embedding model returns 384 dimensions where 768 are expected.
    wait_until(
        "the embeddings' model check",
        Duration::from_secs(30),
        || {
            let s = h.service("embeddings")?;
            (s.state == ServiceState::Unhealthy).then_some(s.last_error?)
        },
    );
    let why = h.service("embeddings").unwrap().last_error.unwrap();
    assert_eq!(
        why,
        "the model nomic-embed-text:latest returned vectors of 384 dimensions, expected 768"
    );
    env.stop(workers);
}
