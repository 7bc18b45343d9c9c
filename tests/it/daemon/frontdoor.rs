//! The front door (issue 15) on the real binary: PostgreSQL, the Docker
//! engine with test-runtime containers in the roles of the LLM, n8n and
//! MinIO (no port published: the daemon reaches them on their network),
//! the official Ollama and OpenAI Python clients, a WebSocket through
//! `/n8n/`, webhooks within their limit, and API keys made over the API
//! and with `arasuld admin key`.

use std::process::Command;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::common::docker::{IMAGE, Project};
use super::common::*;

fn catalog(project: &Project) -> String {
    format!(
        r#"project: {p}
network: {n}
services:
- name: llm
  image: {img}
  role: llm
  env: {{TESTRT_TOKEN_DELAY_MS: "1"}}
  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
- name: n8n
  image: {img}
  role: workflow
  env: {{PORT: "5678"}}
  health: {{http: {{port: 5678, path: /healthz}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
- name: minio
  image: {img}
  role: storage
  env: {{PORT: "9000"}}
  web_port: 9000
  health: {{http: {{port: 9000, path: /minio/health/live}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
"#,
        p = project.name,
        n = project.network(),
        img = IMAGE,
    )
}

/// A daemon with the three apps healthy and the admin password changed.
struct FrontDoor {
    cfg: TestConfig,
    pg: PrivatePostgres,
    _project: Project,
    _daemon: Daemon,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    token: String,
}

impl FrontDoor {
    fn start(tag: &str, http: &str) -> FrontDoor {
        let project = Project::new(tag);
        let mut pg = PrivatePostgres::init(free_port());
        pg.start();
        let cfg = TestConfig::with_http(
            &pg.url(),
            http,
            // The box's own webhook probe would spend the quota under test.
            "metrics:\n  webhook_check: \"\"\n",
        );
        std::fs::write(cfg.dir.path().join("services.yaml"), catalog(&project)).unwrap();
        let daemon = Daemon::start(&cfg.path(), &[]);
        wait_until("the daemon to answer", Duration::from_secs(30), || {
            get_json(&cfg.url("/api/health")).filter(|(s, _)| *s == 200)
        });
        let token = admin_token(&cfg);
        wait_until("the three apps healthy", Duration::from_secs(60), || {
            let (_, v) = get_json_auth(&cfg.url("/api/services"), &token)?;
            let all = v["services"].as_array()?;
            (all.len() == 3 && all.iter().all(|s| s["state"] == "healthy")).then_some(())
        });
        FrontDoor {
            cfg,
            pg,
            _project: project,
            _daemon: daemon,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            token,
        }
    }

    fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.rt.block_on(async {
            let r = req.timeout(Duration::from_secs(30)).send().await.unwrap();
            let (s, h) = (r.status(), r.headers().clone());
            (s, h, r.text().await.unwrap())
        })
    }

    fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, String) {
        let mut r = self.http.get(self.cfg.url(path));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let (s, _, b) = self.send(r);
        (s, b)
    }

    /// Makes a key through the API: (id, key).
    fn make_key(&self, name: &str, scopes: &[&str], expires_at: Option<String>) -> (i64, String) {
        let mut body = json!({"name": name, "scopes": scopes});
        if let Some(e) = expires_at {
            body["expires_at"] = json!(e);
        }
        let (s, _, b) = self.send(
            self.http
                .post(self.cfg.url("/api/keys"))
                .bearer_auth(&self.token)
                .json(&body),
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        (
            v["id"].as_i64().unwrap(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// What the test runtime playing `service` received (its request log).
    fn received(&self, service: &str, port: u16) -> Vec<Value> {
        let (_, v) = get_json_auth(
            &self.cfg.url(&format!("/api/services/{service}")),
            &self.token,
        )
        .unwrap();
        let addr = v["service"]["address"].as_str().unwrap().to_owned();
        let (_, v) = get_json(&format!("http://{addr}:{port}/testrt/requests")).unwrap();
        v["requests"].as_array().cloned().unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .arg("--config")
            .arg(self.cfg.path())
            .args(["admin", "key"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Logs in as the dashboard does: the session and CSRF cookies.
    fn session_cookie(&self) -> String {
        let (s, h, b) = self.send(
            self.http
                .post(self.cfg.url("/api/auth/login"))
                .json(&json!({"username": "admin", "password": TEST_ADMIN_PASSWORD})),
        );
        assert_eq!(s, StatusCode::OK, "{b}");
        h.get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The next message of a WebSocket, as text.
async fn next_text<S>(ws: &mut S) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let m = ws.next().await.expect("a message").expect("no error");
    m.into_text().expect("text").to_string()
}

fn python(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/llm_clients.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn official_llm_clients_work_through_the_front_door_with_a_key_and_only_with_a_valid_one() {
    // Loopback is exempt from the per-address quotas here (the clients send
    // a burst); each key's own quota still applies.
    let fd = FrontDoor::start("keys", "  rate_limit_exempt: [127.0.0.0/8]\n");
    let base = fd.cfg.url("");

    // A key made in Settings (the API), listed without its secret.
    let (id, key) = fd.make_key("python", &["llm"], None);
    assert!(key.starts_with("ak_") && key.len() == 46, "{key}");
    let (s, list) = fd.get("/api/keys", Some(&fd.token));
    assert_eq!(s, StatusCode::OK);
    assert!(
        !list.contains(&key[3..]),
        "a listed key shows only its hint: {list}"
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["keys"][0]["name"], "python");
    assert_eq!(list["keys"][0]["scopes"], json!(["llm"]));

    // The official clients, native and OpenAI-compatible.
    let v = python(&[&base, &key, "use"]);
    eprintln!("clients through the front door: {v}");
    let models = json!(["llama3.2:1b", "nomic-embed-text:latest"]);
    assert_eq!(v["ollama_models"], models);
    assert_eq!(v["openai_models"], models);
    let answer = v["ollama_chat"].as_str().unwrap();
    // The test runtime answers by repeating the question it received.
    assert!(
        answer.contains("(llama3.2:1b) answering \"What is the capital of France?\""),
        "{answer}"
    );
    let streamed: Vec<&str> = v["ollama_chat_stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(streamed.len() > 2, "streamed in parts: {streamed:?}");
    assert_eq!(streamed.concat(), answer);
    assert_eq!(v["openai_chat"], answer);
    let oai: String = v["openai_chat_stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(oai, answer);
    assert_eq!(v["ollama_embed_dims"], v["openai_embed_dims"]);
    assert_eq!(v["ollama_embed_dims"].as_array().unwrap().len(), 2);
    assert_eq!(v["same_vector"], true);

    // The runtime never saw the key, and was told who asked and where from.
    let got = fd.received("llm", 11434);
    let chat = got
        .iter()
        .rev()
        .find(|r| r["path"] == "/v1/chat/completions")
        .expect("the OpenAI chat reached the runtime without the /ollama prefix");
    let h = &chat["headers"];
    assert!(h.get("authorization").is_none(), "{h}");
    assert_eq!(h["x-forwarded-prefix"], "/ollama");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");

    // Without a key, with a wrong one, a revoked one and an expired one: 401,
    // saying what is needed.
    let (s, b) = fd.get("/ollama/api/tags", None);
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains("an API key with the `llm` scope"), "{b}");
    assert_eq!(
        python(&[&base, "", "refused"]),
        json!({"ollama": 401, "openai": 401})
    );
    let wrong = format!("ak_{}", "A".repeat(43));
    assert_eq!(
        python(&[&base, &wrong, "refused"]),
        json!({"ollama": 401, "openai": 401})
    );
    let (s, _, b) = fd.send(
        fd.http
            .delete(fd.cfg.url(&format!("/api/keys/{id}")))
            .bearer_auth(&fd.token),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        python(&[&base, &key, "refused"]),
        json!({"ollama": 401, "openai": 401})
    );
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, expiring) = fd.make_key("short-lived", &["llm"], Some(soon));
    assert_eq!(
        fd.get("/ollama/api/tags", Some(&expiring)).0,
        StatusCode::OK
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        python(&[&base, &expiring, "refused"]),
        json!({"ollama": 401, "openai": 401})
    );

    // Scopes: an embeddings key is not an LLM key; model management needs
    // admin; an admin key works on the admin API but has no session.
    let (_, emb) = fd.make_key("emb", &["embeddings"], None);
    let (s, b) = fd.get("/ollama/api/tags", Some(&emb));
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("insufficient_scope"), "{b}");
    let (_, llm) = fd.make_key("llm", &["llm"], None);
    let pull = |k: &str| {
        fd.send(
            fd.http
                .post(fd.cfg.url("/ollama/api/pull"))
                .bearer_auth(k)
                .json(&json!({"model": "tinyllama", "stream": false})),
        )
        .0
    };
    assert_eq!(pull(&llm), StatusCode::FORBIDDEN);
    let (_, admin) = fd.make_key("admin", &["admin"], None);
    assert_eq!(pull(&admin), StatusCode::OK);
    assert_eq!(fd.get("/api/services/ai", Some(&admin)).0, StatusCode::OK);
    assert_eq!(
        fd.get("/api/services/ai", Some(&llm)).0,
        StatusCode::FORBIDDEN
    );
    let (s, b) = fd.get("/api/auth/sessions", Some(&admin));
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("session_required"), "{b}");
    // The chat route of the API takes an llm key.
    let (s, _, b) = fd.send(
        fd.http
            .post(fd.cfg.url("/api/llm/chat"))
            .bearer_auth(&llm)
            .json(&json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": false})),
    );
    assert_eq!(s, StatusCode::OK, "{b}");

    // Bad input changes nothing.
    for bad in [
        json!({"name": "", "scopes": ["llm"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["llm"], "expires_at": "2001-01-01T00:00:00Z"}),
    ] {
        let (s, _, b) = fd.send(
            fd.http
                .post(fd.cfg.url("/api/keys"))
                .bearer_auth(&fd.token)
                .json(&bad),
        );
        assert!(s.is_client_error(), "{bad}: {s} {b}");
    }
    let (_, list) = fd.get("/api/keys", Some(&fd.token));
    let names: Vec<String> = serde_json::from_str::<Value>(&list).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "llm", "emb", "short-lived"]);

    // The command line: a key made there is accepted within the refresh,
    // listed, and refused once revoked there.
    let (ok, out, err) = fd.cli(&["create", "cli-made", "--scope", "llm,metrics"]);
    assert!(ok, "{out}{err}");
    let cli_key = out
        .lines()
        .find(|l| l.starts_with("ak_"))
        .unwrap_or_default()
        .to_owned();
    assert!(cli_key.starts_with("ak_"), "{out}");
    wait_until(
        "the daemon to take the CLI's key",
        Duration::from_secs(10),
        || (fd.get("/ollama/api/tags", Some(&cli_key)).0 == StatusCode::OK).then_some(()),
    );
    let (ok, out, _) = fd.cli(&["list"]);
    assert!(
        ok && out.contains("cli-made") && out.contains("llm,metrics"),
        "{out}"
    );
    assert!(!out.contains(&cli_key[3..]), "{out}");
    let cli_id = out
        .lines()
        .find(|l| l.contains("cli-made"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let (ok, out, err) = fd.cli(&["revoke", &cli_id]);
    assert!(ok, "{out}{err}");
    wait_until(
        "the daemon to refuse the revoked key",
        Duration::from_secs(10),
        || (fd.get("/ollama/api/tags", Some(&cli_key)).0 == StatusCode::UNAUTHORIZED).then_some(()),
    );
    let (ok, _, err) = fd.cli(&["revoke", &cli_id]);
    assert!(!ok && err.contains("no live key"), "{err}");

    // Every creation and revocation is in the audit log.
    let (s, _, b) = fd.send(fd.http.get(fd.cfg.url("/api/keys")).bearer_auth(&fd.token));
    assert_eq!(s, StatusCode::OK, "{b}");
    let audit = Command::new(pg_bin().join("psql"))
        .args([
            &fd.pg.url(),
            "-tAc",
            "SELECT action || ':' || (detail->>'name') FROM audit_log WHERE action LIKE 'api_key_%' ORDER BY id",
        ])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    for line in [
        "api_key_created:python",
        "api_key_revoked:python",
        "api_key_created:cli-made",
        "api_key_revoked:cli-made",
    ] {
        assert!(
            audit.lines().any(|l| l == line),
            "{line} missing from {audit}"
        );
    }
}

#[test]
fn n8n_and_minio_open_with_the_admin_session_websockets_pass_and_webhooks_are_limited() {
    let fd = FrontDoor::start(
        "apps",
        "  rate_limits:\n    webhook: {count: 3, per: 1m, burst: 3}\n",
    );
    // A browser without a session is sent to the login, and back after it.
    let (s, h, _) = fd.send(
        fd.http
            .get(fd.cfg.url("/n8n/workflows?x=1"))
            .header("accept", "text/html"),
    );
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/?next=/n8n/workflows%3Fx%3D1");
    assert_eq!(
        fd.get("/n8n/rest/settings", None).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(fd.get("/n8n", None).0, StatusCode::PERMANENT_REDIRECT);

    // With the dashboard's session cookie: n8n's editor (prefix stripped),
    // its own cookie passed on, ours kept here.
    let cookies = format!("{}; n8n-auth=theirs", fd.session_cookie());
    let (s, _, b) = fd.send(
        fd.http
            .get(fd.cfg.url("/n8n/?from=test"))
            .header("cookie", &cookies),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let got = fd.received("n8n", 5678);
    let editor = got
        .iter()
        .rev()
        .find(|r| r["query"] == "from=test")
        .unwrap();
    assert_eq!(editor["path"], "/");
    assert_eq!(editor["headers"]["cookie"], "n8n-auth=theirs");
    assert_eq!(editor["headers"]["x-forwarded-prefix"], "/n8n");
    // Its pages post without our CSRF header; another site's page cannot.
    let post = |extra: (&str, &str)| {
        fd.send(
            fd.http
                .post(fd.cfg.url("/n8n/api/embed"))
                .header("cookie", &cookies)
                .header(extra.0, extra.1)
                .json(&json!({"model": "nomic-embed-text", "input": "x"})),
        )
        .0
    };
    assert_eq!(post(("sec-fetch-site", "same-origin")), StatusCode::OK);
    assert_eq!(
        post(("sec-fetch-site", "cross-site")),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(("origin", "http://evil.example")),
        StatusCode::FORBIDDEN
    );

    // n8n's push channel: a WebSocket through /n8n/, echoed both ways.
    let url = format!("ws://127.0.0.1:{}/n8n/rest/push?pushRef=abc", fd.cfg.port);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookies.parse().unwrap());
    let (hello, echo) = fd.rt.block_on(async {
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let hello = next_text(&mut ws).await;
        ws.send(Message::text("ping from the editor"))
            .await
            .unwrap();
        let echo = next_text(&mut ws).await;
        ws.close(None).await.unwrap();
        (hello, echo)
    });
    assert_eq!(echo, "ping from the editor");
    let hello: Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(hello["path"], "/rest/push");
    assert_eq!(hello["headers"]["cookie"], "n8n-auth=theirs");
    // Another site's page cannot open it, cookie or not.
    let mut req = format!("ws://127.0.0.1:{}/n8n/rest/push", fd.cfg.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookies.parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let refused = fd.rt.block_on(tokio_tungstenite::connect_async(req));
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
    // Without the session there is no tunnel.
    let req = format!("ws://127.0.0.1:{}/n8n/rest/push", fd.cfg.port)
        .into_client_request()
        .unwrap();
    let refused = fd.rt.block_on(tokio_tungstenite::connect_async(req));
    assert!(refused.is_err());

    // The MinIO console, on its web port, with the session.
    let (s, _, _) = fd.send(
        fd.http
            .get(fd.cfg.url("/minio/browser"))
            .header("cookie", &cookies),
    );
    assert_eq!(s, StatusCode::NOT_FOUND, "the console's own 404: forwarded");
    assert!(
        fd.received("minio", 9000)
            .iter()
            .any(|r| r["path"] == "/browser")
    );
    assert_eq!(fd.get("/minio/", None).0, StatusCode::UNAUTHORIZED);

    // Webhooks: public, path kept, counted against the webhook limit (3/min).
    for i in 0..3 {
        let (s, _, b) = fd.send(
            fd.http
                .post(fd.cfg.url(&format!("/webhook/order-{i}")))
                .header("origin", "https://shop.example")
                .json(&json!({"order": i})),
        );
        assert_eq!(s, StatusCode::NOT_FOUND, "forwarded to n8n: {b}");
    }
    let (s, h, b) = fd.send(
        fd.http
            .post(fd.cfg.url("/webhook/order-3"))
            .json(&json!({})),
    );
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(h.contains_key("retry-after"));
    let hooks: Vec<Value> = fd
        .received("n8n", 5678)
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/webhook/"))
        .collect();
    assert_eq!(hooks.len(), 3, "{hooks:?}");
    assert_eq!(hooks[0]["body"]["order"], 0);

    // A stopped app answers 503 in the envelope, with its state.
    let (s, _, b) = fd.send(
        fd.http
            .post(fd.cfg.url("/api/services/n8n/stop"))
            .bearer_auth(&fd.token),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = fd.send(fd.http.get(fd.cfg.url("/n8n/")).header("cookie", &cookies));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["code"], "service_unavailable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"n8n\" is stopped"),
        "{v}"
    );
    // The dashboard and the API are unchanged behind the same door.
    assert_eq!(fd.get("/api/health", None).0, StatusCode::OK);
    let (s, b) = fd.get("/", None);
    assert!(s == StatusCode::OK && b.contains("<html"), "{s}");
}

/// curl's answer: (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn https_with_a_self_signed_certificate_that_curl_checks_and_plain_http_redirecting_to_it() {
    let tls_port = free_port();
    let cfg = TestConfig::with_http(
        "postgres://nobody@127.0.0.1:1/none",
        &format!("  tls: {{self_signed: true, listen: 127.0.0.1:{tls_port}}}\n"),
        "mdns:\n  hostname: box7\n",
    );
    let _daemon = Daemon::start(&cfg.path(), &[]);
    let cert = cfg.dir.path().join("secrets/tls/cert.pem");
    let cert_arg = cert.to_str().unwrap();
    let resolve = format!("box7.local:{tls_port}:127.0.0.1");
    let url = |host: &str, path: &str| format!("https://{host}:{tls_port}{path}");
    wait_until("HTTPS to answer", Duration::from_secs(30), || {
        let (code, out, _) = curl(&[
            "--cacert",
            cert_arg,
            "--resolve",
            &resolve,
            &url("box7.local", "/api/health"),
        ]);
        (code == 0 && out.contains("\"ok\"")).then_some(())
    });
    // The certificate names the box, arasul.local and its addresses.
    for (host, resolve) in [
        ("box7.local", resolve.clone()),
        ("arasul.local", format!("arasul.local:{tls_port}:127.0.0.1")),
        ("127.0.0.1", format!("127.0.0.1:{tls_port}:127.0.0.1")),
    ] {
        let (code, out, err) = curl(&[
            "--cacert",
            cert_arg,
            "--resolve",
            &resolve,
            &url(host, "/api/health"),
        ]);
        assert_eq!(code, 0, "{host}: {err}");
        assert!(out.contains("\"ok\""), "{out}");
    }
    // Without trusting it, curl refuses (60: the peer's certificate is not trusted).
    let (code, _, _) = curl(&["--resolve", &resolve, &url("box7.local", "/api/health")]);
    assert_eq!(code, 60);

    // Plain HTTP sends everything to HTTPS, path and query kept.
    let (code, out, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &cfg.url("/api/system/info?x=1"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("308 https://127.0.0.1:{tls_port}/api/system/info?x=1")
    );

    // The login cookie over TLS: __Host- prefix, Secure, Path=/.
    let initial =
        std::fs::read_to_string(cfg.dir.path().join("secrets/initial-admin-password")).unwrap();
    let body = json!({"username": "admin", "password": initial.trim()}).to_string();
    let (code, headers, err) = curl(&[
        "--cacert",
        cert_arg,
        "--resolve",
        &resolve,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/json",
        "--data",
        &body,
        &url("box7.local", "/api/auth/login"),
    ]);
    assert_eq!(code, 0, "{err}");
    let session = headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-arasul_session=")
        })
        .unwrap_or_else(|| panic!("{headers}"));
    assert!(
        session.contains("Secure") && session.contains("Path=/;"),
        "{session}"
    );

    // The fingerprint the owner is shown is the certificate's.
    let expected = cert_fingerprint(&cert);
    let (code, out, _) = curl(&[
        "--cacert",
        cert_arg,
        "--resolve",
        &resolve,
        &url("box7.local", "/api/system/network"),
    ]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tls"]["fingerprint"], expected.as_str());
    assert_eq!(v["tls"]["port"], tls_port);
    assert_eq!(v["tls"]["self_signed"], true);
}
