//! NATS connections with NKey auth, one user per service role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::ConnectErrorKind;
use fleetbus_bus_config::Role;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::RuntimeError;

/// Default server URL for the demo and development.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How a service reaches the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma separated for a cluster.
    #[serde(default = "default_url")]
    pub url: String,
    /// The NATS user, i.e. the role name (`ingest`, `executor`, …, `admin`, `tap`).
    pub user: String,
    /// The seed file; defaults to `<state>/nats/<user>.nk`.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
}

fn default_url() -> String {
    DEFAULT_URL.to_owned()
}

impl NatsConfig {
    /// Defaults for `role`: the local server, seed under the state dir.
    pub fn for_role(role: &str) -> NatsConfig {
        NatsConfig {
            url: default_url(),
            user: role.to_owned(),
            nkey_seed_file: None,
        }
    }

    /// The seed file to use: the configured one or `<state>/nats/<user>.nk`.
    pub fn seed_file(&self) -> PathBuf {
        self.nkey_seed_file.clone().unwrap_or_else(|| {
            crate::state_dir()
                .join("nats")
                .join(format!("{}.nk", self.user))
        })
    }

    /// The server addresses in `url` (comma separated).
    pub fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, RuntimeError> {
        let addrs = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| RuntimeError::NatsConfig(format!("nats.url '{u}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(RuntimeError::NatsConfig(
                "nats.url is empty, expected e.g. nats://127.0.0.1:4222".into(),
            ));
        }
        Ok(addrs)
    }

    /// The role this config connects as.
    pub fn role(&self) -> Result<Role, RuntimeError> {
        self.user
            .parse::<Role>()
            .map_err(|e| RuntimeError::NatsConfig(format!("nats.user: {e}")))
    }
}

fn read_seed(path: &Path) -> Result<String, RuntimeError> {
    // Validates mode and format without ever putting the seed into an error or log line.
    let key = fleetbus_bus_config::conf::load_seed(path)
        .map_err(|e| RuntimeError::NatsConfig(e.to_string()))?;
    key.seed()
        .map_err(|e| RuntimeError::NatsConfig(format!("{}: {e}", path.display())))
}

/// Connect as `config.user` with its NKey. While the server is unreachable, retry with
/// exponential backoff (100 ms … 5 s) until it answers or `shutdown` is cancelled; an auth
/// failure is returned at once. Once connected, the client reconnects on its own.
pub async fn connect(
    config: &NatsConfig,
    shutdown: &CancellationToken,
) -> Result<async_nats::Client, RuntimeError> {
    let role = config.role()?;
    let servers = config.server_addrs()?;
    let seed_file = config.seed_file();
    let seed = read_seed(&seed_file)?;
    let name = format!("fleetbus-{}-{}", role.name(), std::process::id());
    let mut backoff = Duration::from_millis(100);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let options = async_nats::ConnectOptions::with_nkey(seed.clone())
            .name(&name)
            .custom_inbox_prefix(role.inbox_prefix())
            .connection_timeout(Duration::from_secs(5));
        let result = tokio::select! {
            res = options.connect(servers.clone()) => res,
            () = shutdown.cancelled() => return Err(RuntimeError::Cancelled("connecting to nats")),
        };
        match result {
            Ok(client) => {
                tracing::info!(url = %config.url, user = %role, attempt, "connected to nats");
                return Ok(client);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::Authentication
                        | ConnectErrorKind::ServerParse
                        | ConnectErrorKind::Tls
                ) =>
            {
                return Err(RuntimeError::NatsConnect {
                    url: config.url.clone(),
                    user: role.name().to_owned(),
                    reason: format!("{e} (seed file {})", seed_file.display()),
                });
            }
            Err(e) => {
                tracing::warn!(url = %config.url, user = %role, attempt, error = %e,
                    retry_in_ms = backoff.as_millis() as u64, "nats not reachable, retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(RuntimeError::Cancelled("connecting to nats")),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_local_server_and_state_dir() {
        let c = NatsConfig::for_role("ingest");
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert!(c.seed_file().ends_with("nats/ingest.nk"));
        assert_eq!(c.role().ok(), Some(Role::Ingest));
        assert!(NatsConfig::for_role("root").role().is_err());
    }

    #[test]
    fn url_lists_and_bad_urls() {
        let mut c = NatsConfig::for_role("web");
        c.url = "nats://127.0.0.1:4222, nats://127.0.0.1:4223".into();
        assert_eq!(c.server_addrs().map(|a| a.len()).ok(), Some(2));
        c.url = "nats://127.0.0.1:notaport".into();
        let err = c
            .server_addrs()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("nats.url 'nats://127.0.0.1:notaport'"),
            "{err}"
        );
        c.url = " ".into();
        assert!(c.server_addrs().is_err());
    }

    #[tokio::test]
    async fn missing_seed_is_a_clear_error_not_a_retry_loop() {
        let c = NatsConfig {
            nkey_seed_file: Some(PathBuf::from("/nonexistent/fleetbus/web.nk")),
            ..NatsConfig::for_role("web")
        };
        let err = connect(&c, &CancellationToken::new()).await.err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("/nonexistent/fleetbus/web.nk"), "{text}");
    }

    #[tokio::test]
    async fn unreachable_server_retries_until_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = fleetbus_bus_config::Credentials::ensure(dir.path()).expect("creds");
        let c = NatsConfig {
            // Port 1 on loopback: nothing listens, connect is refused immediately.
            url: "nats://127.0.0.1:1".into(),
            user: "web".into(),
            nkey_seed_file: Some(creds.seed_path(Role::Web)),
        };
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let err = connect(&c, &token).await.err();
        assert!(matches!(err, Some(RuntimeError::Cancelled(_))), "{err:?}");
    }
}
