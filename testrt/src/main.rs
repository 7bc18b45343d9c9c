//! `testrt`: a tiny, statically linked stand-in for the Ollama LLM runtime
//! (and the embedding service) that arasuld's Docker tests supervise. It
//! speaks the Ollama API with realistic shapes, records what it received
//! (`GET /testrt/requests`) and misbehaves on request.
//!
//! Routes:
//! - Ollama: `GET /`, `/api/version`, `/api/tags`, `/api/ps`; `POST /api/show`,
//!   `/api/pull`, `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`;
//!   `DELETE /api/delete`. A pull resumes the bytes an earlier (cut) pull of
//!   the same blobs got. A model whose manifest appears in the store is
//!   installed (as Ollama lists what its store holds).
//! - Ollama's registry: `GET /v2/library/{model}/manifests/{tag}` (the
//!   layers with digests and sizes a pull then reports; 404 for names that
//!   fail to pull)
//! - Ollama's OpenAI-compatible API: `GET /v1/models`, `GET /v1/models/{name}`,
//!   `POST /v1/chat/completions` (`stream: true` → server-sent events ending in
//!   `data: [DONE]`), `POST /v1/embeddings` (`encoding_format` float | base64);
//!   errors as `{"error":{"message","type","param","code"}}`
//! - Embedding service: `GET /info`, `POST /embed`; health: `/health`,
//!   `/healthz`, `/minio/health/live`
//! - WebSocket echo (a stand-in for n8n's push channel): `GET /testrt/ws` or
//!   `/rest/push` with `Upgrade: websocket`. The first message is
//!   `{"type":"hello","path","query","headers":{…}}` (the request as it
//!   arrived); then every text/binary message is echoed, pings get pongs, a
//!   close gets a close. Idle connections close after 5 minutes.
//!
//! Environment (read at start):
//! - `PORT` (or `TESTRT_LISTEN=addr:port`, or `OLLAMA_HOST`): default `0.0.0.0:11434`
//! - `TESTRT_MODE=exit-now` (exit 3 at once) | `hang` | `oom` | `normal`
//! - `TESTRT_EXIT_AFTER=N`: exit with code 4 after N seconds
//! - `TESTRT_HANG_AFTER=N`: after N seconds accept connections, never answer
//! - `TESTRT_OOM=1`: allocate and touch memory until killed
//! - `TESTRT_IGNORE_TERM=1`: ignore SIGTERM (a stop takes its whole timeout)
//! - `TESTRT_MODELS=a,b`: installed models (default `llama3.2:1b,nomic-embed-text`)
//! - `TESTRT_PULL_DELAY_MS` (default 50), `TESTRT_TOKEN_DELAY_MS` (default 5)
//! - `OLLAMA_MODELS`: the model store (default `/root/.ollama/models` when
//!   `/root/.ollama` is a directory, i.e. mounted): pulls write partial
//!   blobs (`blobs/sha256-…-partial`, preallocated), finished blobs and
//!   manifests there
//! - `TESTRT_VERSION`: the `/api/version` answer (else the file `/version`, else
//!   `0.9.0-testrt`)
//!
//! Controls at run time: `POST /testrt/hang`, `POST /testrt/exit {"code":N}`,
//! `POST /testrt/oom`, `POST /testrt/health {"status":503}`,
//! `POST /testrt/generate {"status":500}` (every chat and generation fails
//! so, as when Ollama's runner died; `/api/version` still answers),
//! `GET|DELETE /testrt/requests` (the last 100 requests: `at`, `method`,
//! `path`, `query`, `body`, `headers` with lower-cased names),
//! `POST /testrt/pull {"stall_at": BYTES}` (the next pull stops growing there,
//! repeating its last line each second), `GET /testrt/pulls` (each streamed
//! pull: `model`, `resumed_from`, `stalled`, `finished`).

mod http;
mod ollama;
mod util;
mod ws;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use ollama::{After, App, Config};

const DEFAULT_PORT: u16 = 11434;

/// Exit codes.
const EXIT_BAD_CONFIG: i32 = 2;
const EXIT_NOW: i32 = 3;
const EXIT_AFTER: i32 = 4;

fn main() {
    signals::install(std::env::var("TESTRT_IGNORE_TERM").is_ok_and(|v| v == "1"));
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let fail = |msg: String| -> ! {
        eprintln!("testrt: {msg}");
        std::process::exit(EXIT_BAD_CONFIG)
    };
    let secs = |k: &str| -> Option<f64> {
        env(k).map(|v| match v.trim().parse::<f64>() {
            Ok(n) if n >= 0.0 && n.is_finite() => n,
            _ => fail(format!("{k}={v}: expected a number of seconds")),
        })
    };
    let millis = |k: &str, default: u64| -> Duration {
        Duration::from_millis(env(k).map_or(default, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| fail(format!("{k}={v}: expected milliseconds")))
        }))
    };

    let mode = env("TESTRT_MODE").unwrap_or_default();
    match mode.as_str() {
        "" | "normal" | "hang" | "oom" => {}
        "exit-now" => {
            println!("testrt: TESTRT_MODE=exit-now, exiting with code {EXIT_NOW}");
            std::process::exit(EXIT_NOW);
        }
        other => fail(format!(
            "TESTRT_MODE={other}: expected exit-now, hang, oom or normal"
        )),
    }

    let mut cfg = Config::default();
    if let Some(v) = env("TESTRT_VERSION").or_else(|| {
        std::fs::read_to_string("/version")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }) {
        cfg.version = v;
    }
    if let Some(m) = env("TESTRT_MODELS") {
        cfg.models = m.split(',').map(|s| s.trim().to_string()).collect();
    }
    cfg.pull_delay = millis("TESTRT_PULL_DELAY_MS", 50);
    // Ollama's store: OLLAMA_MODELS, else ~/.ollama/models when ~/.ollama is mounted.
    cfg.store = env("OLLAMA_MODELS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::path::Path::new("/root/.ollama")
                .is_dir()
                .then(|| std::path::PathBuf::from("/root/.ollama/models"))
        });
    cfg.token_delay = millis("TESTRT_TOKEN_DELAY_MS", 5);
    let addr = listen_addr(env("TESTRT_LISTEN"), env("PORT"), env("OLLAMA_HOST"))
        .unwrap_or_else(|e| fail(e));
    let exit_after = secs("TESTRT_EXIT_AFTER");
    let hang_after = if mode == "hang" {
        Some(0.0)
    } else {
        secs("TESTRT_HANG_AFTER")
    };
    let oom = mode == "oom" || env("TESTRT_OOM").is_some_and(|v| v != "0");

    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(format!("bind {addr}: {e}")));
    let app = Arc::new(App::new(cfg));
    let mut knobs = Vec::new();
    if let Some(n) = exit_after {
        knobs.push(format!("exit after {n}s"));
    }
    if let Some(n) = hang_after {
        knobs.push(format!("hang after {n}s"));
    }
    if oom {
        knobs.push("oom".to_string());
    }
    println!(
        "{} testrt {} listening on {} (pid {}, models: {}{}{})",
        util::rfc3339(SystemTime::now()),
        app.cfg.version,
        listener.local_addr().unwrap_or(addr),
        std::process::id(),
        app.cfg.models.join(","),
        if knobs.is_empty() { "" } else { "; " },
        knobs.join(", ")
    );

    if let Some(n) = exit_after {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(n));
            println!("testrt: TESTRT_EXIT_AFTER={n} reached, exiting with code {EXIT_AFTER}");
            std::process::exit(EXIT_AFTER);
        });
    }
    if let Some(n) = hang_after {
        let app = app.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(n));
            println!("testrt: hanging now: requests are accepted and never answered");
            app.hanging.store(true, Ordering::SeqCst);
        });
    }
    if oom {
        std::thread::spawn(eat_memory);
    }

    serve(listener, app);
}

/// `TESTRT_LISTEN` > `PORT` > `OLLAMA_HOST` > `0.0.0.0:11434`.
fn listen_addr(
    listen: Option<String>,
    port: Option<String>,
    ollama_host: Option<String>,
) -> Result<SocketAddr, String> {
    if let Some(l) = listen {
        return l
            .parse()
            .map_err(|_| format!("TESTRT_LISTEN={l}: expected addr:port"));
    }
    if let Some(p) = port {
        let p: u16 = p
            .trim()
            .parse()
            .map_err(|_| format!("PORT={p}: expected a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], p)));
    }
    if let Some(h) = ollama_host {
        let h = h.trim();
        let h = h
            .strip_prefix("http://")
            .or_else(|| h.strip_prefix("https://"))
            .unwrap_or(h)
            .trim_end_matches('/');
        if let Ok(a) = h.parse() {
            return Ok(a);
        }
        if let Ok(ip) = h.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, DEFAULT_PORT));
        }
        // A host name (this binary resolves none): listen everywhere.
        eprintln!("testrt: OLLAMA_HOST={h} is not an address; using 0.0.0.0:{DEFAULT_PORT}");
    }
    Ok(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))
}

fn serve(listener: TcpListener, app: Arc<App>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let app = app.clone();
                std::thread::spawn(move || connection(&app, stream));
            }
            Err(e) => {
                eprintln!("testrt: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Holds the connection open and never answers.
fn hang_forever(stream: TcpStream) -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = &stream;
    }
}

fn connection(app: &App, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    if app.hanging.load(Ordering::SeqCst) {
        println!(
            "{} {peer} accepted while hanging: never answering",
            util::rfc3339(SystemTime::now())
        );
        hang_forever(stream);
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut w = stream;
    let started = Instant::now();
    let req = match http::read_request(&mut reader) {
        Ok(r) => r,
        Err(http::ParseError::Closed) => return,
        Err(e) => {
            let (status, msg) = match e {
                http::ParseError::TooLarge => (413, "request too large".to_string()),
                http::ParseError::Bad(m) => (400, m.to_string()),
                http::ParseError::Io(e) => (400, e.to_string()),
                http::ParseError::Closed => unreachable!(),
            };
            let _ = http::write_full(&mut w, status, "text/plain", msg.as_bytes(), false);
            log(&peer, "-", "-", status, started);
            return;
        }
    };
    if app.hanging.load(Ordering::SeqCst) {
        log(&peer, &req.method, &req.path, 0, started);
        hang_forever(w);
    }
    let (status, after) = match app.handle(&req, &mut w) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("testrt: {} {}: write: {e}", req.method, req.path);
            (0, After::Nothing)
        }
    };
    log(&peer, &req.method, &req.path, status, started);
    let _ = w.flush();
    match after {
        After::Nothing => {}
        After::Exit(code) => {
            let _ = w.shutdown(std::net::Shutdown::Both);
            println!("testrt: exit requested, exiting with code {code}");
            std::process::exit(code);
        }
        After::Oom => {
            std::thread::spawn(eat_memory);
        }
        After::WebSocket => websocket(&peer, &req, &mut reader, &mut w),
    }
}

/// Runs the echo on a connection the handler switched to WebSocket. The
/// reader keeps any bytes the client sent right behind the handshake.
fn websocket(peer: &str, req: &http::Request, reader: &mut impl std::io::Read, w: &mut TcpStream) {
    // A push channel idles between messages: the 30 s read timeout of a
    // request would cut it.
    let _ = w.set_read_timeout(Some(ws::IDLE_TIMEOUT));
    let started = Instant::now();
    let outcome = match ws::echo(reader, w, &ws::hello(req).to_string()) {
        Ok(end) => format!("{} messages echoed, {}", end.messages, end.why),
        Err(e) => format!("error: {e}"),
    };
    println!(
        "{} {peer} websocket {} closed after {:.1}s: {outcome}",
        util::rfc3339(SystemTime::now()),
        req.path,
        started.elapsed().as_secs_f64()
    );
}

fn log(peer: &str, method: &str, path: &str, status: u16, started: Instant) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {peer} {method} {path} {status} {:.1}ms",
        util::rfc3339(SystemTime::now()),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Allocates and touches memory until the kernel kills the process.
fn eat_memory() {
    println!("testrt: allocating memory until killed");
    const CHUNK: usize = 8 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // `vec![x; n]` with x != 0 writes every byte: every page is touched.
        hoard.push(std::hint::black_box(vec![0xa5u8; CHUNK]));
        if hoard.len().is_multiple_of(8) {
            println!("testrt: holding {} MiB", hoard.len() * (CHUNK >> 20));
        }
    }
}

/// SIGTERM/SIGINT handling. As PID 1 in a container the default action of
/// SIGTERM is ignored, so `docker stop` would wait for its timeout without a
/// handler. libc is not a dependency; std links it, so declare what we use.
mod signals {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
        fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        fn _exit(status: i32) -> !;
    }

    extern "C" fn on_signal(_sig: i32) {
        // Only async-signal-safe calls here.
        const MSG: &[u8] = b"testrt: signal received, exiting\n";
        unsafe {
            write(1, MSG.as_ptr(), MSG.len());
            _exit(0);
        }
    }

    /// `ignore_term`: SIGTERM is ignored (`docker stop` then waits its
    /// whole timeout before the SIGKILL: a slow stop).
    pub fn install(ignore_term: bool) {
        const SIG_IGN: usize = 1;
        let handler = on_signal as extern "C" fn(i32) as usize;
        unsafe {
            signal(SIGTERM, if ignore_term { SIG_IGN } else { handler });
            signal(SIGINT, handler);
        }
    }
}

#[cfg(test)]
mod tests;
