//! The router in-process (`oneshot`, no port): a fresh secrets dir with
//! argon2 at toy cost, the daemon's shared state around a detached
//! supervisor, and the first login every admin route waits for.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arasuld::config::Config;
use arasuld::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct App {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub router: Router,
}

impl App {
    /// Over `offline_config()` (the database unreachable) after `tweak`,
    /// which sees the test's dir.
    pub fn new(tweak: impl FnOnce(&Path, &mut Config)) -> App {
        let dir = tempfile::tempdir().unwrap();
        let mut config = super::offline_config();
        tweak(dir.path(), &mut config);
        let workers = arasuld::tasks::Workers::new((&config.workers).into());
        let state = super::app_state(
            config,
            Arc::new(super::fast_auth(dir.path())),
            workers,
            arasuld::docker::SupervisorHandle::detached(),
        );
        let router = arasuld::api::router(state.clone());
        App { dir, state, router }
    }

    /// The password the daemon generated for the first login.
    pub fn initial_password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("secrets/initial-admin-password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// One request: status, headers, and the body as JSON (Null if not).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// As `send`, from the client `addr` (`ConnectInfo`: what the guard,
    /// the lockout and the rate limiter see).
    pub async fn send_from(
        &self,
        mut req: Request<Body>,
        addr: SocketAddr,
    ) -> (StatusCode, HeaderMap, Value) {
        req.extensions_mut().insert(ConnectInfo(addr));
        self.send(req).await
    }

    /// Logs in with the initial password and changes it to `new_password`
    /// (admin routes answer 403 until then), from `from` when given;
    /// returns the session token.
    pub async fn ready_token(&self, new_password: &str, from: Option<SocketAddr>) -> String {
        let send = |req: Request<Body>| async move {
            match from {
                Some(addr) => self.send_from(req, addr).await,
                None => self.send(req).await,
            }
        };
        let initial = self.initial_password();
        let (s, _, v) = send(post_json(
            "/api/auth/login",
            &json!({"username": "admin", "password": initial}),
            None,
        ))
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let token = v["token"].as_str().unwrap().to_owned();
        let (s, _, v) = send(post_json(
            "/api/auth/change-password",
            &json!({"current_password": initial, "new_password": new_password}),
            Some(&token),
        ))
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        token
    }
}

/// A JSON POST, with a Bearer token when given.
pub fn post_json(uri: &str, body: &Value, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}
