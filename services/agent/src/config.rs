//! The agent's config file (TOML), with `FLEETBUS_AGENT__<KEY>` environment overrides.
//!
//! ```toml
//! version = 1
//! ingest_url = "http://127.0.0.1:8470"
//! agent = "web-1"
//! host = "web-1"
//! key_file = "/etc/fleetbus/agent.key"   # mode 0600, written by `fleetctl agent add --key-file`
//! interval_secs = 10
//! buffer_dir = "/var/lib/fleetbus-agent/buffer"
//! buffer_max_bytes = 16777216
//!
//! [[services]]
//! name = "nginx"
//! manager = "runit"      # or "systemd"; omitted: systemd when the host runs it, else runit
//! unit = "/etc/sv/nginx" # systemd unit or runit service dir; omitted: the name
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetbus_schemas::{AgentId, HostId, ServiceName};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// The config file format version this agent understands.
pub(crate) const CONFIG_VERSION: u32 = 1;

/// Which service manager to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// `systemctl show`.
    Systemd,
    /// `sv status`.
    Runit,
}

/// One service to watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceWatch {
    /// The service's name in fleetbus.
    pub name: ServiceName,
    /// The manager; `None` picks systemd when the host runs it, runit otherwise.
    #[serde(default)]
    pub manager: Option<Manager>,
    /// The systemd unit or runit service directory; `None` means the name.
    #[serde(default)]
    pub unit: Option<String>,
}

impl ServiceWatch {
    /// What to pass to the manager.
    pub fn unit(&self) -> String {
        self.unit
            .clone()
            .unwrap_or_else(|| self.name.as_str().to_owned())
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Must be [`CONFIG_VERSION`].
    pub version: u32,
    /// Base URL of ingest's agent API.
    #[serde(default = "default_ingest_url")]
    pub ingest_url: String,
    /// This agent's id.
    pub agent: AgentId,
    /// The host it runs on.
    pub host: HostId,
    /// File holding the agent's bearer key (mode 0600).
    pub key_file: PathBuf,
    /// Seconds between reports.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// The services to watch.
    #[serde(default)]
    pub services: Vec<ServiceWatch>,
    /// Where reports wait while ingest is unreachable.
    pub buffer_dir: PathBuf,
    /// Upper bound of the buffer on disk; the oldest reports are dropped beyond it.
    #[serde(default = "default_buffer_max")]
    pub buffer_max_bytes: u64,
    /// Most reports per batch request when the buffer drains.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Timeout of one HTTP request, seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// The file system whose usage is reported.
    #[serde(default = "default_disk_path")]
    pub disk_path: PathBuf,
    /// Where procfs is mounted (tests point it at fixtures).
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// Managed configuration (see [`crate::managed`]); absent: report-only.
    #[serde(default)]
    pub managed: Option<crate::managed::ManagedSettings>,
}

fn default_ingest_url() -> String {
    "http://127.0.0.1:8470".into()
}
fn default_interval() -> u64 {
    10
}
fn default_buffer_max() -> u64 {
    16 * 1024 * 1024
}
fn default_batch_max() -> usize {
    100
}
fn default_request_timeout() -> u64 {
    10
}
fn default_disk_path() -> PathBuf {
    PathBuf::from("/")
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

impl AgentConfig {
    /// Loads the file (if any) and the `FLEETBUS_AGENT__*` overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<AgentConfig, AgentError> {
        let config: AgentConfig = fleetbus_runtime::config::load(path, "agent")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), AgentError> {
        let invalid = |key: &'static str, reason: String| Err(AgentError::Config { key, reason });
        if self.version != CONFIG_VERSION {
            return invalid(
                "version",
                format!(
                    "is {}, this agent reads version {CONFIG_VERSION}",
                    self.version
                ),
            );
        }
        match reqwest::Url::parse(&self.ingest_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return invalid(
                    "ingest_url",
                    format!("scheme {:?}, expected http or https", u.scheme()),
                )
            }
            Err(e) => return invalid("ingest_url", format!("{:?}: {e}", self.ingest_url)),
        }
        if self.interval_secs == 0 || self.interval_secs > 86_400 {
            return invalid(
                "interval_secs",
                format!("is {}, expected 1..=86400", self.interval_secs),
            );
        }
        // Ingest takes at most 500 reports per batch request.
        if self.batch_max == 0 || self.batch_max > 500 {
            return invalid(
                "batch_max",
                format!("is {}, expected 1..=500", self.batch_max),
            );
        }
        if self.request_timeout_secs == 0 {
            return invalid("request_timeout_secs", "must be at least 1".into());
        }
        if self.buffer_max_bytes < 4096 {
            return invalid(
                "buffer_max_bytes",
                format!("is {}, expected at least 4096", self.buffer_max_bytes),
            );
        }
        let mut names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return invalid("services", format!("service {:?} is listed twice", w[0]));
        }
        Ok(())
    }

    /// Seconds between reports as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Reads the bearer key. The file must not be readable by others; the key never reaches an
    /// error message or a log line.
    pub fn read_key(&self) -> Result<String, AgentError> {
        let path = &self.key_file;
        let key_err = |reason: String| AgentError::Key {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| key_err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(format!(
                "mode {mode:o} lets others read it; run `chmod 600 {}`",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
        let key = text.trim();
        if key.is_empty() || key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(key_err(
                "expected one line with the key printed by `fleetctl agent add`".into(),
            ));
        }
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("agent.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = "version = 1\nagent = \"web-1\"\nhost = \"web-1\"\n\
key_file = \"/k\"\nbuffer_dir = \"/b\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = AgentConfig::load(Some(&write(dir.path(), MINIMAL))).unwrap();
        assert_eq!(c.interval_secs, 10);
        assert_eq!(c.ingest_url, "http://127.0.0.1:8470");
        assert!(c.services.is_empty());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (format!("{MINIMAL}bogus = 1\n"), "bogus"),
            (MINIMAL.replace("web-1\"\nhost", "Web 1\"\nhost"), "agent"),
            (MINIMAL.replace("version = 1", "version = 2"), "version"),
            (format!("{MINIMAL}interval_secs = 0\n"), "interval_secs"),
            (format!("{MINIMAL}ingest_url = \"ftp://x\"\n"), "ingest_url"),
            (
                format!("{MINIMAL}[[services]]\nname = \"a\"\n[[services]]\nname = \"a\"\n"),
                "listed twice",
            ),
            (
                format!("{MINIMAL}[[services]]\nname = \"a\"\nmanager = \"upstart\"\n"),
                "services",
            ),
        ];
        for (text, needle) in cases {
            let err = AgentConfig::load(Some(&write(dir.path(), &text)))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn key_file_must_be_private_and_sane() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key");
        let mut c = AgentConfig::load(Some(&write(dir.path(), MINIMAL))).unwrap();
        c.key_file = key.clone();
        assert!(c.read_key().is_err(), "missing file");
        std::fs::write(&key, "s3cret-key\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = c.read_key().unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("s3cret"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.read_key().unwrap(), "s3cret-key");
        std::fs::write(&key, "two words\n").unwrap();
        assert!(c.read_key().is_err());
    }
}
