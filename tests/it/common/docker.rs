//! The Docker side of the test harness: the locally built test runtime
//! image, one project label and network per test (removed on drop, even when
//! the test fails), and a supervisor spawned in-process on the real engine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use arasuld::docker::supervisor::SupervisorConfig;
use arasuld::docker::{Catalog, SupervisorHandle};
use arasuld::tasks::{RestartPolicy, Workers};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub const IMAGE: &str = "arasul-testrt:dev";
pub const SOCKET: &str = "/var/run/docker.sock";

/// Builds the test image once per machine (the script skips an unchanged
/// binary); serialised across test processes with flock.
pub fn ensure_image() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testrt-image");
    let out = Command::new("flock")
        .args(["/tmp/arasul-testrt-image.lock", script])
        .output()
        .expect("run scripts/testrt-image (needs the Docker engine)");
    assert!(
        out.status.success(),
        "building the test image failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the docker CLI; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A test's own project label and network; everything labelled with it is
/// removed when this is dropped.
pub struct Project {
    pub name: String,
}

impl Project {
    pub fn new(tag: &str) -> Project {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .finish()
            .with(arasuld::config::log_filter("arasuld=info").unwrap())
            .try_init();
        ensure_image();
        Project {
            name: format!("t{}-{tag}", std::process::id()),
        }
    }

    pub fn network(&self) -> String {
        format!("{}-net", self.name)
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.arasul.project={}", self.name),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &self.network()]);
    }
}

/// The supervisor's config in tests: the real socket unless told, fast stop
/// and pull timeouts, no free-space floor, secrets under `state_dir`. Pulls
/// are off (nothing here may reach Docker Hub); the pull tests turn them on
/// for their registry on 127.0.0.1.
pub fn supervisor_config(state_dir: &Path, socket: &str) -> SupervisorConfig {
    SupervisorConfig {
        socket: socket.to_string(),
        state_dir: state_dir.to_path_buf(),
        stop_timeout: Duration::from_secs(2),
        log_max_size: "50m".into(),
        log_max_files: 5,
        nvidia_runtime: false,
        pull: arasuld::docker::pull::PullSettings {
            policy: arasuld::docker::pull::PullPolicy::Never,
            stall_timeout: Duration::from_secs(3),
            min_free: 0,
            retry_max: Duration::from_secs(2),
            secrets_dir: state_dir.join("secrets"),
        },
        secrets_dir: state_dir.join("secrets"),
    }
}

/// Spawns the supervisor worker on the current runtime (call inside
/// `Runtime::enter`), with fast restarts and the real socket unless told.
pub fn spawn_supervisor(
    state_dir: &Path,
    catalog: Catalog,
    socket: &str,
) -> (Workers, SupervisorHandle) {
    spawn_supervisor_with(supervisor_config(state_dir, socket), catalog)
}

/// [`spawn_supervisor`] with a config of the test's making.
pub fn spawn_supervisor_with(
    cfg: SupervisorConfig,
    catalog: Catalog,
) -> (Workers, SupervisorHandle) {
    let workers = Workers::new(RestartPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
    let handle = arasuld::docker::spawn(&workers, cfg, catalog);
    (workers, handle)
}

/// The shipped catalog (`assets/services.yaml`) made runnable beside the
/// other tests: the project, network and host data directory are the
/// test's own, and each image is a stand-in built here under a name of the
/// test's own (`arasul-standin-<project>/<name>:<tag>`): the test runtime
/// speaks Ollama's API, and on MinIO's and n8n's ports it answers their
/// health paths. Everything else is as shipped. Returns the catalog text
/// and the stand-in images (removed when the guard drops).
pub fn shipped_with_standins(project: &Project, data: &Path) -> (String, super::registry::Images) {
    let shipped = include_str!("../../../assets/services.yaml");
    let catalog = arasuld::docker::catalog::parse("assets/services.yaml", shipped).unwrap();
    let mut text = shipped
        .replace("project: arasul\n", &format!("project: {}\n", project.name))
        .replace(
            "network: arasul-net\n",
            &format!("network: {}\n", project.network()),
        )
        .replace("/var/lib/arasul/", &format!("{}/", data.display()));
    let mut images = super::registry::Images(vec![]);
    for s in &catalog.services {
        let short = s.image.rsplit('/').next().unwrap();
        let standin = format!("arasul-standin-{}/{short}", project.name);
        let port = match s.name.as_str() {
            "minio" => Some("9000"),
            "n8n" => Some("5678"),
            _ => None,
        };
        if !images.0.contains(&standin) {
            match port {
                None => {
                    docker(&["tag", IMAGE, &standin]);
                }
                Some(port) => {
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(
                        dir.path().join("Dockerfile"),
                        format!("FROM {IMAGE}\nENV PORT={port}\n"),
                    )
                    .unwrap();
                    let out = Command::new("docker")
                        .args(["build", "-q", "-t", &standin, dir.path().to_str().unwrap()])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            images.0.push(standin.clone());
        }
        text = text.replace(
            &format!("image: {}\n", s.image),
            &format!("image: {standin}\n"),
        );
    }
    (text, images)
}
