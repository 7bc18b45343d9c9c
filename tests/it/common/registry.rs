//! A real image registry for the pull tests: Debian's `docker-registry`
//! (the CNCF distribution registry) on a free 127.0.0.1 port with its store
//! in a temp dir, and a TCP proxy in front of it that the test can slow
//! down, freeze (a stall) or cut (a registry gone mid-pull). The engine
//! treats 127.0.0.0/8 registries as plain HTTP, so no certificate is needed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::docker::docker;
use super::{free_port, wait_until};

pub struct Registry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    /// With a login: the docker CLI's own config dir (its `docker login`),
    /// so the machine's is never touched.
    cli_config: Option<std::path::PathBuf>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that answers only `user`/`password` (htpasswd, bcrypt).
    pub fn with_login(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let auth = match login {
            None => String::new(),
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (Debian package apache2-utils; scripts/test installs it)");
                assert!(out.status.success());
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: arasul-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/test installs it)");
        wait_until("the registry to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let cli_config = login.map(|(user, password)| {
            let cli = dir.path().join("docker-cli");
            let out = super::with_stdin(
                Command::new("docker")
                    .env("DOCKER_CONFIG", &cli)
                    .args(["login", "-u", user, "--password-stdin"])
                    .arg(format!("127.0.0.1:{port}")),
                password.as_bytes(),
            );
            assert!(
                out.status.success(),
                "docker login: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            cli
        });
        Registry {
            port,
            child,
            _dir: dir,
            cli_config,
        }
    }

    /// Pushes the local image `local` as `<registry>/<repo>` and removes
    /// the pushed tag locally again; returns the registry's reference.
    pub fn push(&self, local: &str, repo: &str) -> String {
        let remote = format!("127.0.0.1:{}/{repo}", self.port);
        docker(&["tag", local, &remote]);
        let mut push = Command::new("docker");
        if let Some(cli) = &self.cli_config {
            push.env("DOCKER_CONFIG", cli);
        }
        let out = push.args(["push", &remote]).output().unwrap();
        assert!(
            out.status.success(),
            "docker push {remote}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker(&["rmi", &remote]);
        remote
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does with the bytes it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Flow {
    /// Forward, at most ~160 KB/s per direction and connection.
    Slow = 0,
    /// Hold every connection open and forward nothing (a stalled pull).
    Freeze = 1,
    /// Close every connection and refuse new ones (the registry is gone).
    Cut = 2,
    /// Forward at full speed.
    Fast = 3,
}

/// A TCP proxy on its own port in front of `target`, run on its own thread.
pub struct Proxy {
    pub port: u16,
    flow: Arc<AtomicU8>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn start(target: u16, flow: Flow) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(AtomicU8::new(flow as u8));
        let s = state.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.load(Ordering::SeqCst) == Flow::Cut as u8 {
                    continue; // dropped: closed at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, s.clone()));
                tokio::spawn(pipe(sr, cw, s.clone()));
            }
        });
        Proxy {
            port,
            flow: state,
            _rt: rt,
        }
    }

    pub fn set(&self, flow: Flow) {
        self.flow.store(flow as u8, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flow: Arc<AtomicU8>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            match flow.load(Ordering::SeqCst) {
                f if f == Flow::Cut as u8 => return,
                f if f == Flow::Freeze as u8 => tokio::time::sleep(Duration::from_millis(50)).await,
                f if f == Flow::Slow as u8 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                _ => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An image of its own for a pull test: the test runtime plus a layer of
/// `noise` random bytes that no other image has (so a pull downloads it).
pub fn unique_image(name: &str, noise: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..noise).map(|_| rand::random::<u8>()).collect();
    std::fs::write(dir.path().join("noise"), bytes).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nCOPY noise /noise\n", super::docker::IMAGE),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", name, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name.to_string()
}

/// Removes these image references when dropped (a failed test too).
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in &self.0 {
            docker(&["rmi", "-f", i]);
        }
    }
}
