//! The web service's config: `web.toml`, then `FLEETBUS_WEB__*` overrides.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use fleetbus_runtime::http::HttpLimits;
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
    /// Failed logins per (account, client address) that cost nothing; after them each attempt
    /// waits `login_backoff_base_ms`, doubling per failure, up to `login_backoff_max_s`.
    pub login_free_failures: u32,
    /// The first wait after the free failures.
    pub login_backoff_base_ms: u64,
    /// The longest wait between attempts.
    pub login_backoff_max_s: u64,
    /// An (account, address) without failures for this long starts afresh.
    pub login_forget_s: u64,
    /// Where the throttle is kept across restarts; default `login-throttle.json` beside the
    /// tokens file (`<state>/web/`).
    pub login_throttle_file: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` is believed when they are the connection's peer (exact
    /// addresses). Default: none, so the client address is always the peer's.
    pub trusted_proxies: Vec<IpAddr>,
    /// The HTTP server: connection limit and header/body/request timeouts (`[http]`).
    pub http: HttpLimits,
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
            login_free_failures: 5,
            login_backoff_base_ms: 1_000,
            login_backoff_max_s: 15 * 60,
            login_forget_s: 24 * 3600,
            login_throttle_file: None,
            trusted_proxies: Vec::new(),
            http: HttpLimits::default(),
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
        if self.login_backoff_base_ms == 0
            || self.login_backoff_max_s.saturating_mul(1000) < self.login_backoff_base_ms
        {
            return Err(
                "login_backoff_base_ms must be > 0 and login_backoff_max_s at least as long".into(),
            );
        }
        self.http.validate("http")?;
        if self.http.request_timeout_ms <= self.command_timeout_ms {
            return Err(format!(
                "http.request_timeout_ms: {} must be longer than command_timeout_ms ({}), or a slow command answers 408",
                self.http.request_timeout_ms, self.command_timeout_ms
            ));
        }
        Ok(())
    }

    /// The login throttle file.
    pub fn login_throttle_path(&self) -> PathBuf {
        self.login_throttle_file
            .clone()
            .unwrap_or_else(|| self.tokens_path().with_file_name("login-throttle.json"))
    }

    pub(crate) fn login_backoff(&self) -> crate::throttle::Backoff {
        crate::throttle::Backoff {
            free: self.login_free_failures,
            base: Duration::from_millis(self.login_backoff_base_ms),
            max: Duration::from_secs(self.login_backoff_max_s),
            forget: Duration::from_secs(self.login_forget_s),
        }
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
            (
                "FLEETBUS_WEB__TRUSTED_PROXIES".to_owned(),
                r#"["10.0.0.9", "::1"]"#.to_owned(),
            ),
            (
                "FLEETBUS_WEB__HTTP__HEADER_READ_TIMEOUT_MS".to_owned(),
                "2500".to_owned(),
            ),
        ];
        let c: WebConfig =
            fleetbus_runtime::config::load_with_env(None, "web", &env).expect("load");
        assert_eq!(c.http_addr.port(), 9191);
        assert_eq!(c.session_idle_s, 60);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.http.header_read_timeout_ms, 2500);
        assert_eq!(
            c.http.max_connections,
            HttpLimits::default().max_connections
        );
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
