//! One HTTP server loop for every service that serves HTTP (ingest's agent API, web), in place of
//! `axum::serve`, which has no timeouts and no connection limit: a client that opens a
//! connection and sends half a header held it (and a file descriptor) forever.
//!
//! What [`serve`] adds, each set by [`HttpLimits`]:
//! - **Connection limit.** A semaphore permit is taken *before* `accept`, so at most
//!   `max_connections` connections are open; further clients wait in the kernel's listen backlog
//!   and are served as slots free.
//! - **Header read timeout.** hyper closes a connection whose request head is not complete within
//!   `header_read_timeout_ms`. The timer also runs while a keep-alive connection waits for its
//!   next request, so it is the idle timeout as well.
//! - **Body read timeout.** Reading the request body fails when no data arrives for
//!   `body_read_timeout_ms` (tower-http `RequestBodyTimeoutLayer`); handlers answer it like any
//!   body error.
//! - **Request timeout.** A request that has no response head after `request_timeout_ms` is
//!   answered `408` (tower-http `TimeoutLayer`); this bounds a body that trickles in just fast
//!   enough. Streamed responses (SSE) are not cut: the timeout ends when the head is sent.
//!
//! `ConnectInfo<SocketAddr>` keeps working (it is put in each request's extensions), upgrades
//! (WebSocket) work, and shutdown is graceful: on cancel the loop stops accepting, each connection
//! finishes its current request, and `serve` returns when all are closed.
//!
//! HTTP/1.1 only: TLS and HTTP/2 are terminated in front of the services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// Limits of an HTTP server (a `[http]`-style config table; every key has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request head must be complete this long after the connection opened or the previous
    /// response was sent (so this is also the keep-alive idle timeout).
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next chunk of a request body.
    pub body_read_timeout_ms: u64,
    /// Longest time from a request's head to its response head (`408` after that).
    pub request_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
        }
    }
}

impl HttpLimits {
    /// Checks the values; `key` is where the table sits in the service's config (e.g.
    /// `limits.http`), so the error names the full key.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err(format!("key '{key}.max_connections' must be at least 1"));
        }
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("key '{key}.{name}' must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Connection counts of a running [`serve`] (for tests and metrics).
#[derive(Debug, Default)]
pub struct ServeStats {
    open: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicUsize,
}

impl ServeStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// The most connections that were open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Decrements the open count when a connection task ends, however it ends.
struct OpenGuard(Arc<ServeStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    serve_with_stats(listener, app, limits, shutdown, Arc::default()).await;
}

/// [`serve`], counting connections into `stats`.
pub async fn serve_with_stats(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    stats: Arc<ServeStats>,
) {
    let app = app
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(
            limits.body_read_timeout_ms,
        )))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak.fetch_max(open, Ordering::Relaxed);
        let guard = OpenGuard(stats.clone());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            },
        ));
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Timeouts and clients that hang up land here; they are routine.
                tracing::debug!(peer = %peer, error = %e, "http connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
