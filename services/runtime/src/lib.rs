//! The small runtime every fleetbus service shares: one shutdown path ([`shutdown`]), tracing
//! setup ([`init_tracing`]), config loading with environment overrides ([`config::load`]), and
//! NATS connections with NKey auth ([`nats::connect`]), in-order stream readers that resume from
//! a caller-kept position ([`reader::StreamReader`]), and the HTTP server loop with timeouts and
//! a connection limit ([`http::serve`]), and the bus toolkit: publishing with `Nats-Msg-Id`,
//! queries, commands awaited until their events are committed, job output ([`bus`]), and who
//! may send which command ([`authz`]).

pub mod authz;
pub mod bus;
pub mod config;
pub mod http;
pub mod nats;
pub mod objects;
pub mod reader;

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
/// Must be called inside a tokio runtime. The handlers are installed before this returns, so a
/// signal that arrives right after is not lost (and does not kill the process).
pub fn shutdown() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let on_signal = token.clone();
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        let name = match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Ok(mut term), Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGINT; only SIGTERM stops the service");
                term.recv().await;
                "SIGTERM"
            }
            (Err(e), Ok(mut int)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                int.recv().await;
                "SIGINT"
            }
            (Err(e), Err(_)) => {
                // Without handlers the default action (exit) still applies to both signals.
                tracing::error!(error = %e, "cannot install signal handlers");
                std::future::pending::<()>().await;
                "none"
            }
        };
        tracing::info!(signal = name, "shutting down");
        on_signal.cancel();
    });
    token
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
        LogFormat::parse(&std::env::var("FLEETBUS_LOG_FORMAT").unwrap_or_default())
    }

    /// `json` (any case) is JSON, anything else text.
    pub fn parse(value: &str) -> LogFormat {
        if value.trim().eq_ignore_ascii_case("json") {
            LogFormat::Json
        } else {
            LogFormat::Text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_json_case_insensitively() {
        assert_eq!(LogFormat::parse("json"), LogFormat::Json);
        assert_eq!(LogFormat::parse(" JSON "), LogFormat::Json);
        assert_eq!(LogFormat::parse(""), LogFormat::Text);
        assert_eq!(LogFormat::parse("pretty"), LogFormat::Text);
    }
}
