//! The web service's config: `web.toml`, then `FLEETBUS_WEB__*` overrides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleetbus_runtime::nats::NatsConfig;
use serde::Deserialize;

/// Everything the web service needs to run. Defaults run the demo on 127.0.0.1:8080.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Config format version (1).
    pub version: u32,
    /// Address the HTTP server listens on (`FLEETBUS_WEB__HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// How to reach the bus (user `web`).
    pub nats: NatsConfig,
    /// Sessions end after this many seconds without a request.
    pub session_idle_s: u64,
    /// Sessions end this many seconds after login, however active.
    pub session_absolute_s: u64,
    /// How long a query may take before the page shows the bus as unavailable.
    pub query_timeout_ms: u64,
    /// How long to wait for the event (or rejection) a command causes.
    pub command_timeout_ms: u64,
    /// Failed logins per account within `login_window_s` before further attempts are refused.
    pub login_max_failures_per_account: u32,
    /// Failed logins per client address within `login_window_s` before attempts are refused.
    pub login_max_failures_per_address: u32,
    /// The throttling window.
    pub login_window_s: u64,
    /// Where API tokens (their SHA-256 hashes, never the tokens) are kept; default
    /// `<state>/web/tokens.json`.
    pub tokens_file: Option<PathBuf>,
    /// How many recent events the live stream keeps in memory for `Last-Event-ID` resume
    /// (older resumes are replayed from JetStream).
    pub live_buffer: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            version: 1,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nats: NatsConfig::for_role("web"),
            session_idle_s: 30 * 60,
            session_absolute_s: 12 * 3600,
            query_timeout_ms: 3_000,
            command_timeout_ms: 10_000,
            login_max_failures_per_account: 5,
            login_max_failures_per_address: 20,
            login_window_s: 15 * 60,
            tokens_file: None,
            live_buffer: 20_000,
        }
    }
}

impl WebConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version: {} is not supported, expected 1",
                self.version
            ));
        }
        if self.nats.user != "web" {
            return Err(format!(
                "nats.user: '{}' — the web service connects as 'web'",
                self.nats.user
            ));
        }
        if self.session_idle_s == 0 || self.session_absolute_s < self.session_idle_s {
            return Err(
                "session_idle_s must be > 0 and session_absolute_s >= session_idle_s".into(),
            );
        }
        if self.live_buffer == 0 {
            return Err("live_buffer must be > 0".into());
        }
        Ok(())
    }

    /// The API token file.
    pub fn tokens_path(&self) -> PathBuf {
        self.tokens_file.clone().unwrap_or_else(|| {
            fleetbus_runtime::state_dir()
                .join("web")
                .join("tokens.json")
        })
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_env_overrides_apply() {
        let env = vec![
            (
                "FLEETBUS_WEB__HTTP_ADDR".to_owned(),
                "127.0.0.1:9191".to_owned(),
            ),
            ("FLEETBUS_WEB__SESSION_IDLE_S".to_owned(), "60".to_owned()),
        ];
        let c: WebConfig =
            fleetbus_runtime::config::load_with_env(None, "web", &env).expect("load");
        assert_eq!(c.http_addr.port(), 9191);
        assert_eq!(c.session_idle_s, 60);
        assert!(c.validate().is_ok());
        let bad = vec![("FLEETBUS_WEB__LISTEN".to_owned(), "x".to_owned())];
        let err = fleetbus_runtime::config::load_with_env::<WebConfig>(None, "web", &bad)
            .expect_err("unknown key");
        assert!(err.to_string().contains("FLEETBUS_WEB__LISTEN"), "{err}");
        let wrong_user = WebConfig {
            nats: NatsConfig::for_role("admin"),
            ..WebConfig::default()
        };
        assert!(wrong_user.validate().is_err());
    }
}
