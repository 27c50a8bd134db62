//! The small runtime every fleetbus service shares: one shutdown path ([`shutdown`]), tracing
//! setup ([`init_tracing`]), config loading with environment overrides ([`config::load`]), and
//! NATS connections with NKey auth ([`nats::connect`]).

pub mod config;
pub mod nats;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use config::ConfigError;

/// Everything that can go wrong in the shared runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The service config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The NATS connection settings are unusable (bad user, unreadable seed, …).
    #[error("nats config: {0}")]
    NatsConfig(String),
    /// The server refused the connection or could not be reached.
    #[error("nats connect to {url} as {user}: {reason}")]
    NatsConnect {
        /// Server URL.
        url: String,
        /// User (role) name.
        user: String,
        /// Why it failed.
        reason: String,
    },
    /// Shutdown was requested before the operation finished.
    #[error("shutdown requested while {0}")]
    Cancelled(&'static str),
    /// The tracing subscriber could not be installed.
    #[error("tracing setup: {0}")]
    Tracing(String),
}

/// The state directory: `FLEETBUS_STATE` or `./state`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("FLEETBUS_STATE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./state"))
}

/// A token that is cancelled on SIGINT or SIGTERM: the one shutdown path of a service.
/// Must be called inside a tokio runtime.
pub fn shutdown() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        on_signal.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                res = tokio::signal::ctrl_c() => match res {
                    Ok(()) => tracing::info!(signal = "SIGINT", "shutting down"),
                    Err(e) => tracing::error!(error = %e, "cannot wait for SIGINT; shutting down"),
                },
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!(signal = "SIGINT", "shutting down"),
                Err(e) => tracing::error!(error = %e, "cannot wait for SIGINT; shutting down"),
            }
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for production log shippers.
    Json,
}

impl LogFormat {
    /// `FLEETBUS_LOG_FORMAT=json` selects JSON; anything else is text.
    pub fn from_env() -> LogFormat {
        match std::env::var("FLEETBUS_LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Install the global tracing subscriber: `RUST_LOG`-style filter (default `info`), output to
/// stderr in `format`. Fails if a subscriber is already installed or `RUST_LOG` is invalid.
pub fn init_tracing(format: LogFormat) -> Result<(), RuntimeError> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| RuntimeError::Tracing(format!("RUST_LOG '{v}': {e}")))?,
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    res.map_err(|e| RuntimeError::Tracing(e.to_string()))
}
