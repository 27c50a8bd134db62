//! fleetbus web: the read-model dashboard and its JSON/SSE API.
//!
//! It reads only through the bus — `fleet.q.*` queries answered by ingest and an in-order
//! reader of the EVENTS stream ([`hub`]), folded privately ([`fold`]) with the same
//! `fleetbus_projections` folds ingest keeps (fleet, alerts, jobs, …) — and publishes
//! operators' commands on `fleet.cmd.*` through `fleetbus_runtime::bus`, waiting for the event
//! or rejection whose causation is the command's id. It never opens the log.

pub(crate) mod api;
pub mod auth;
pub(crate) mod bus;
pub(crate) mod config;
pub(crate) mod fold;
pub(crate) mod hub;
pub(crate) mod openapi;
pub(crate) mod pages;
pub(crate) mod security;
pub(crate) mod sse;
pub(crate) mod throttle;
pub(crate) mod tokens;
pub(crate) mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use fleetbus_schemas::JobId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::WebConfig;

use crate::auth::Sessions;
use crate::bus::Bus;
use crate::hub::Hub;
use crate::throttle::LoginThrottle;
use crate::tokens::Tokens;

/// Everything that can go wrong in the web service; each kind maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The request is malformed or a field is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not logged in / no valid token (401).
    #[error("authentication required")]
    Unauthorized,
    /// Logged in, but the role is too low or the action is not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The same work is already running, or the state conflicts (409).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The job already doing it.
        job: Option<JobId>,
    },
    /// Too many failed logins (429).
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// The bus or the query path is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an I/O failure (500).
    #[error("{0}")]
    Internal(String),
    /// The service could not start.
    #[error("startup: {0}")]
    Startup(String),
}

impl WebError {
    /// The status code of this kind.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Throttled(_) => "throttled",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) | Self::Startup(_) => "internal",
        }
    }
}

/// JSON error body: `{"error": kind, "message": text, "job": id?}`.
impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut body = serde_json::json!({"error": self.kind(), "message": self.to_string()});
        if let Self::Conflict { job: Some(job), .. } = &self {
            body["job"] = serde_json::Value::String(job.to_string());
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::Throttled(wait) = &self {
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs(*wait).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Shared state of the handlers.
pub struct AppState {
    /// Config.
    pub config: WebConfig,
    /// The bus.
    pub bus: Bus,
    /// The live event hub.
    pub hub: Arc<Hub>,
    /// Browser sessions.
    pub sessions: Sessions,
    /// Failed logins per (account, client address), kept across restarts.
    pub login_throttle: LoginThrottle,
    /// API tokens.
    pub tokens: Tokens,
    /// Ends long-lived responses (SSE) on shutdown.
    pub shutdown: CancellationToken,
    /// Every task the service starts (hub, session watcher, SSE feeds): `run` waits for them
    /// after the server stopped, so shutdown drains them like every other service's.
    pub tasks: TaskTracker,
}

/// Handler state.
pub type Shared = Arc<AppState>;

impl AppState {
    /// Builds the state around a connected client (the hub is not started).
    pub fn new(
        config: WebConfig,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<Shared, WebError> {
        let bus = Bus::new(client, config.query_timeout(), config.command_timeout());
        Ok(Arc::new(AppState {
            hub: Hub::new(config.live_buffer),
            sessions: Sessions::new(
                Duration::from_secs(config.session_idle_s),
                Duration::from_secs(config.session_absolute_s),
            ),
            login_throttle: LoginThrottle::load(
                &config.login_throttle_path(),
                config.login_backoff(),
            )?,
            tokens: Tokens::load(&config.tokens_path())?,
            shutdown,
            bus,
            config,
            tasks: TaskTracker::new(),
        }))
    }

    /// Starts the hub (EVENTS consumer) and the session watcher.
    pub fn start_background(self: &Arc<Self>, shutdown: &CancellationToken) {
        let hub = self.hub.clone();
        self.tasks
            .spawn(hub.run(self.bus.jetstream().clone(), shutdown.clone()));
        let state = self.clone();
        let token = shutdown.clone();
        self.tasks
            .spawn(async move { pages::users::watch_sessions(state, token).await });
    }
}

/// The whole application: pages, API, assets, with security headers and authentication.
pub fn app(state: Shared) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .merge(sse::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::authenticate,
        ))
        .layer(axum::middleware::from_fn(security::headers))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: WebConfig, shutdown: CancellationToken) -> Result<(), WebError> {
    let client = fleetbus_runtime::nats::connect(&config.nats, &shutdown)
        .await
        .map_err(|e| WebError::Startup(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| WebError::Startup(format!("listen on {}: {e}", config.http_addr)))?;
    let state = AppState::new(config, client, shutdown.clone())?;
    state.start_background(&shutdown);
    let addr = listener
        .local_addr()
        .map_err(|e| WebError::Startup(e.to_string()))?;
    tracing::info!(%addr, "web listening");
    let tasks = state.tasks.clone();
    serve(listener, state, shutdown).await?;
    // Every task watches the same token; give them a moment to finish.
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tasks.len(),
            "background tasks still running after 10 s"
        );
    }
    Ok(())
}

/// Serves `app(state)` on a bound listener until `shutdown` (tests and benches use this), with
/// the connection limit and timeouts of `config.http` (see `fleetbus_runtime::http`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    let limits = state.config.http.clone();
    fleetbus_runtime::http::serve(listener, app(state), limits, shutdown).await;
    Ok(())
}

/// A wait as whole seconds for `Retry-After`, rounded up (a client that waits that long is not
/// refused again) and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}
