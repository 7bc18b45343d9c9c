//! The HTTP edge: the accept loop and what one client may hold open. Each
//! connection is served by hyper's HTTP/1 (with upgrades, for the WebSocket)
//! under a header and an idle timeout, within a global and a per-address
//! cap; live streams (WebSocket, SSE) are capped apart by [`StreamSlot`].
//! The loop owns every connection task. Nothing here knows a route.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Request;
use axum::http::request::Parts;
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::error::ApiError;
use crate::config::HttpConfig;

/// Files kept out of the connection cap for everything else the daemon
/// opens: the database pool, Docker and D-Bus sockets, logs, secrets,
/// update bundles.
pub const FILE_RESERVE: u64 = 256;

/// After an accept error that is about the process (no file left, no
/// memory), accepting again at once would only spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A repeated warning (accept errors, refused connections) is logged at
/// most this often; the lines in between are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the accept loop enforces, from `http.*` and the open-file limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl EdgeLimits {
    /// `http.max_connections`, held to the soft open-file limit less
    /// [`FILE_RESERVE`] (`None`: unlimited).
    pub fn new(http: &HttpConfig, soft_file_limit: Option<u64>) -> EdgeLimits {
        let by_files = soft_file_limit.map_or(usize::MAX, |soft| {
            usize::try_from(soft.saturating_sub(FILE_RESERVE))
                .unwrap_or(usize::MAX)
                .max(1)
        });
        EdgeLimits {
            max_connections: http.max_connections.min(by_files),
            max_connections_per_client: http.max_connections_per_client,
            header_timeout: http.header_timeout,
            idle_timeout: http.idle_timeout,
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves; then stops
/// accepting and lets every open connection finish its request (the caller
/// bounds that wait, and dropping this future cuts them all). Accept errors
/// never end it: it only returns after `stop`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: EdgeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_client = limits.max_connections_per_client,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        "http edge limits"
    );
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_client);
    let drain = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut accept_warn = WarnThrottle::new(WARN_EVERY);
    let mut refusals = RefusalLog::default();
    let mut stop = pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(done) = connections.join_next() => log_task_end(done),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match admission.admit(peer.ip()) {
                    Ok(slot) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            slot,
                            router.clone(),
                            limits,
                            drain.clone(),
                            tls.clone(),
                        ));
                    }
                    Err(refusal) => {
                        // Accepted and closed at once: the file is free again.
                        drop(stream);
                        refusals.record(peer, refusal, Instant::now());
                    }
                },
                Err(e) => {
                    if let Some(held) = accept_warn.tick(Instant::now()) {
                        tracing::warn!(error = %e, not_logged = held, "accepting a connection failed; going on");
                    }
                    if !is_connection_error(&e) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            },
        }
    }
    drop(listener);
    drain.cancel();
    tracing::debug!(
        open = connections.len(),
        "http: not accepting; draining connections"
    );
    while let Some(done) = connections.join_next().await {
        log_task_end(done);
    }
    Ok(())
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "an http connection task panicked");
    }
}

/// Errors about one connection (gone before it was accepted), not about the
/// process: the next accept may well succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// One connection: the TLS handshake when serving HTTPS (within
/// `header_timeout`), then hyper's HTTP/1 until the client is done, the
/// timeouts of `limits` expire, or a drain closes it after its request.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    router: Router,
    limits: EdgeLimits,
    drain: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let clock = Arc::new(ConnClock::new(Instant::now()));
    // The slot travels with the socket: after a WebSocket upgrade the
    // socket outlives this task, and the connection still counts.
    let io = MeteredIo {
        stream,
        clock: clock.clone(),
        _slot: slot,
    };
    let conn = Conn {
        peer,
        router,
        limits,
        drain,
        clock,
    };
    match tls {
        None => conn.drive(TokioIo::new(io), false).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => conn.drive(TokioIo::new(tls), true).await,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "no TLS handshake within http.header_timeout");
                }
            }
        }
    }
}

/// A request that came over TLS carries the `https` scheme in its URI
/// (what `api::auth` and the proxy read); hyper hands on only the path.
fn mark_https(req: &mut Request<Incoming>) {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .unwrap_or_else(|| axum::http::uri::Authority::from_static("localhost"));
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(axum::http::uri::Scheme::HTTPS);
    parts.authority = Some(host);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(axum::http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// What one connection's HTTP/1 loop needs.
struct Conn {
    peer: SocketAddr,
    router: Router,
    limits: EdgeLimits,
    drain: CancellationToken,
    clock: Arc<ConnClock>,
}

impl Conn {
    async fn drive<I>(self, io: I, https: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            router,
            limits,
            drain,
            clock,
        } = self;
        let service = {
            let clock = clock.clone();
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if https {
                    mark_https(&mut req);
                }
                let busy = clock.request_started();
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req).await?;
                    Ok::<_, Infallible>(resp.map(|inner| TrackedBody { inner, _busy: busy }))
                }
            })
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades();
        let mut conn = pin!(conn);
        let mut draining = false;
        let timer = tokio::time::sleep_until(clock.next_check(&limits, Instant::now()));
        let mut timer = pin!(timer);
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(client = %peer, error = %e, "http connection ended with an error");
                    }
                    return;
                }
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if let Some(d) = clock.deadline(&limits)
                        && d.at <= now
                    {
                        tracing::debug!(client = %peer, reason = d.why, "http connection closed");
                        return;
                    }
                    timer.as_mut().reset(clock.next_check(&limits, now));
                }
            }
        }
    }
}

/// Where a connection stands between requests, for its timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepted; no request yet.
    Fresh { since: Instant },
    /// A response went out; nothing read since.
    Idle { since: Instant },
    /// Part of a new request head arrived.
    InHead { since: Instant },
    /// Requests being handled or answered (hyper's HTTP/1 has one at a time).
    Busy(usize),
}

/// When a connection is closed unless a request arrives, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deadline {
    at: Instant,
    why: &'static str,
}

/// hyper's own `header_read_timeout` starts again when a keep-alive
/// connection goes idle, so it cannot tell the idle gap (`idle_timeout`)
/// from a slow request head (`header_timeout`). This clock can: the socket
/// reports reads, the service reports requests and finished responses.
///
/// Nothing wakes the connection's task when the phase changes (that would be
/// two extra wake-ups per request): its one timer is checked at
/// [`ConnClock::next_check`], never later than any deadline can fall.
struct ConnClock {
    phase: Mutex<Phase>,
}

impl ConnClock {
    fn new(accepted: Instant) -> ConnClock {
        ConnClock {
            phase: Mutex::new(Phase::Fresh { since: accepted }),
        }
    }

    /// When to look again: at the deadline, or sooner, after the shorter of
    /// the two timeouts. A phase that begins at `t >= now` gets a deadline
    /// of at least `t` plus that shorter timeout, so no deadline is missed.
    fn next_check(&self, limits: &EdgeLimits, now: Instant) -> Instant {
        let soonest = now + limits.header_timeout.min(limits.idle_timeout);
        self.deadline(limits).map_or(soonest, |d| d.at.min(soonest))
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self, limits: &EdgeLimits) -> Option<Deadline> {
        match *self.phase() {
            Phase::Fresh { since } => Some(Deadline {
                at: since + limits.header_timeout,
                why: "no complete request head within http.header_timeout",
            }),
            Phase::InHead { since } => Some(Deadline {
                at: since + limits.header_timeout,
                why: "request head not completed within http.header_timeout",
            }),
            Phase::Idle { since } => Some(Deadline {
                at: since + limits.idle_timeout,
                why: "idle longer than http.idle_timeout",
            }),
            Phase::Busy(_) => None,
        }
    }

    fn bytes_read(&self, now: Instant) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::InHead { since: now };
        }
    }

    fn request_started(self: &Arc<Self>) -> BusyGuard {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        BusyGuard(self.clone())
    }

    fn request_finished(&self, now: Instant) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle { since: now },
        };
    }
}

/// A request in flight, until its response body is done or dropped.
struct BusyGuard(Arc<ConnClock>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// The response body, holding its request's [`BusyGuard`].
struct TrackedBody {
    inner: Body,
    _busy: BusyGuard,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket: reports reads to the clock, holds the connection's
/// slot under the caps.
struct MeteredIo {
    stream: TcpStream,
    clock: Arc<ConnClock>,
    _slot: ConnectionSlot,
}

impl AsyncRead for MeteredIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read(Instant::now());
        }
        res
    }
}

impl AsyncWrite for MeteredIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Why a connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Full,
    ClientFull,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => {
                "the connection cap is reached (http.max_connections, or the open-file limit)"
            }
            Refusal::ClientFull => "this client address has http.max_connections_per_client open",
        }
    }
}

/// Counts refused connections; warns once per [`WARN_EVERY`] per reason.
struct RefusalLog {
    total: u64,
    full: WarnThrottle,
    client_full: WarnThrottle,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            total: 0,
            full: WarnThrottle::new(WARN_EVERY),
            client_full: WarnThrottle::new(WARN_EVERY),
        }
    }
}

impl RefusalLog {
    fn record(&mut self, peer: SocketAddr, refusal: Refusal, now: Instant) {
        self.total += 1;
        tracing::debug!(client = %peer, reason = refusal.as_str(), "connection refused");
        let throttle = match refusal {
            Refusal::Full => &mut self.full,
            Refusal::ClientFull => &mut self.client_full,
        };
        if let Some(held) = throttle.tick(now) {
            tracing::warn!(
                client = %peer.ip(),
                refused_total = self.total,
                not_logged = held,
                "connection refused: {}",
                refusal.as_str()
            );
        }
    }
}

/// Open connections, in all and per client address.
#[derive(Clone)]
struct Admission {
    open: Arc<Mutex<OpenCounts>>,
    max_total: usize,
    max_per_client: usize,
}

#[derive(Default)]
struct OpenCounts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Admission {
    fn new(max_total: usize, max_per_client: usize) -> Admission {
        Admission {
            open: Arc::default(),
            max_total,
            max_per_client,
        }
    }

    fn counts(&self) -> MutexGuard<'_, OpenCounts> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let ip = ip.to_canonical();
        let mut open = self.counts();
        if open.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let mine = open.per_client.entry(ip).or_default();
        if *mine >= self.max_per_client {
            return Err(Refusal::ClientFull);
        }
        *mine += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            admission: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; frees its place when dropped.
struct ConnectionSlot {
    admission: Admission,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.admission.counts();
        open.total -= 1;
        if let Some(n) = open.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&self.ip);
            }
        }
    }
}

/// Lets a repeated warning through at most once per period.
struct WarnThrottle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl WarnThrottle {
    fn new(every: Duration) -> WarnThrottle {
        WarnThrottle {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(lines held back since the last one)` when this one may be logged.
    fn tick(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// Live streams (the metrics WebSocket, every SSE endpoint) open at once,
/// at most `http.max_streams`. `api::router` installs it as an extension.
#[derive(Clone)]
pub struct StreamSlots(Arc<Semaphore>);

impl StreamSlots {
    pub fn new(max_streams: usize) -> StreamSlots {
        StreamSlots(Arc::new(Semaphore::new(max_streams)))
    }
}

/// An extractor: one live stream's place under `http.max_streams`, or 503
/// `too_many_streams`. The place is free again when the slot is dropped, so
/// a handler moves it into its stream ([`StreamSlot::hold`]) or its
/// WebSocket task.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

impl StreamSlot {
    /// `stream`, holding this slot for as long as it lives.
    pub fn hold<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _held = &self;
            item
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(slots) = parts.extensions.get::<StreamSlots>() else {
            return Err(ApiError::internal(
                "StreamSlots extension missing: api::router installs it",
            ));
        };
        slots
            .0
            .clone()
            .try_acquire_owned()
            .map(|permit| StreamSlot { _permit: permit })
            .map_err(|_| {
                let mut e = ApiError::unavailable(
                    "too_many_streams",
                    "too many live streams are open (http.max_streams); try again later",
                );
                e.retry_after_secs = Some(5);
                e
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(max_connections: usize) -> HttpConfig {
        HttpConfig {
            max_connections,
            ..HttpConfig::default()
        }
    }

    #[test]
    fn the_connection_cap_leaves_files_for_the_rest_of_the_daemon() {
        assert_eq!(
            EdgeLimits::new(&http(1024), Some(1024)).max_connections,
            768
        );
        assert_eq!(
            EdgeLimits::new(&http(1024), Some(65536)).max_connections,
            1024
        );
        assert_eq!(EdgeLimits::new(&http(1024), None).max_connections, 1024);
        // A limit below the reserve still serves someone.
        assert_eq!(EdgeLimits::new(&http(1024), Some(100)).max_connections, 1);
    }

    #[test]
    fn admission_caps_each_address_and_the_total_and_frees_on_drop() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(one).unwrap();
        // The IPv4-mapped form is the same client.
        let s2 = a.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(a.admit(one).err(), Some(Refusal::ClientFull));
        let s3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).err(), Some(Refusal::Full));
        drop(s1);
        let _s4 = a.admit(one).unwrap();
        drop((s2, s3));
        assert_eq!(a.counts().total, 1);
        assert_eq!(a.counts().per_client.get(&two), None);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_period_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut w = WarnThrottle::new(Duration::from_secs(10));
        assert_eq!(w.tick(t0), Some(0));
        assert_eq!(w.tick(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.tick(t0 + Duration::from_secs(9)), None);
        assert_eq!(w.tick(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(w.tick(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn the_idle_gap_and_a_slow_head_have_their_own_timeouts() {
        let limits = EdgeLimits {
            max_connections: 1,
            max_connections_per_client: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let clock = Arc::new(ConnClock::new(t0));
        let at = |c: &ConnClock| c.deadline(&limits).map(|d| d.at);
        // A fresh connection gets the header timeout, bytes or not.
        assert_eq!(at(&clock), Some(t0 + limits.header_timeout));
        clock.bytes_read(t0 + Duration::from_secs(3));
        assert_eq!(at(&clock), Some(t0 + limits.header_timeout));
        // No timeout while a request is handled.
        let busy = clock.request_started();
        assert_eq!(at(&clock), None);
        drop(busy);
        // Idle since the response: the idle timeout…
        let Phase::Idle { since: idle_since } = *clock.phase() else {
            panic!("not idle after the response: {:?}", *clock.phase());
        };
        assert_eq!(at(&clock), Some(idle_since + limits.idle_timeout));
        // …until a new head begins, which gets the header timeout.
        let t1 = idle_since + Duration::from_secs(30);
        clock.bytes_read(t1);
        assert_eq!(at(&clock), Some(t1 + limits.header_timeout));
        clock.bytes_read(t1 + Duration::from_secs(5));
        assert_eq!(at(&clock), Some(t1 + limits.header_timeout));
    }

    #[test]
    fn the_timer_is_never_set_past_a_deadline_that_can_still_begin() {
        let limits = EdgeLimits {
            max_connections: 1,
            max_connections_per_client: 1,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let clock = Arc::new(ConnClock::new(t0));
        // Fresh: the header deadline itself.
        assert_eq!(clock.next_check(&limits, t0), t0 + limits.header_timeout);
        // Busy: no deadline, looked at again after the shorter timeout, the
        // earliest a deadline beginning now could fall.
        let busy = clock.request_started();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(clock.next_check(&limits, t1), t1 + limits.header_timeout);
        drop(busy);
        // Idle for 60 s: checked after 10 s, since a head may begin at once.
        let t2 = Instant::now();
        let check = clock.next_check(&limits, t2);
        assert_eq!(check, t2 + limits.header_timeout);
        clock.bytes_read(t2);
        assert!(clock.deadline(&limits).unwrap().at >= check);
    }
}
