//! The executor's config file (TOML, `FLEETBUS_EXECUTOR__*` overrides).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fleetbus_runtime::nats::NatsConfig;
use fleetbus_schemas::events::job::TaskSpec;
use fleetbus_schemas::HostId;
use serde::{Deserialize, Serialize};

use crate::error::ExecError;

/// The config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// How to reach the bus.
    #[serde(default = "default_nats")]
    pub nats: NatsConfig,
    /// Where the known-hosts store, job journal and inventory cache live
    /// (default `<FLEETBUS_STATE>/executor`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// SSH settings.
    #[serde(default)]
    pub ssh: SshConfig,
    /// Concurrency limits.
    #[serde(default)]
    pub limits: Limits,
    /// Privileged verbs defined here, by name (`CLEAR-CACHE`), as task definitions.
    #[serde(default)]
    pub verbs: BTreeMap<String, TaskSpec>,
}

fn one() -> u32 {
    1
}

fn default_nats() -> NatsConfig {
    NatsConfig::for_role("executor")
}

/// SSH settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Private key (OpenSSH format). Default `<FLEETBUS_STATE>/demo/fleet_ed25519`.
    pub key: Option<PathBuf>,
    /// TOML file mapping host id → password (mode 0600); never logged.
    pub passwords_file: Option<PathBuf>,
    /// Connect + handshake + auth deadline.
    pub connect_timeout_secs: u64,
    /// Default command deadline.
    pub command_timeout_secs: u64,
    /// Grace between TERM and KILL when cancelling.
    pub kill_grace_secs: u64,
    /// Keepalive on pooled connections.
    pub keepalive_secs: u64,
    /// Reuse connections.
    pub pool: bool,
    /// Status reads for one host that start within this many milliseconds share one remote
    /// exec (0: each runs alone, at once).
    pub coalesce_window_ms: u64,
    /// At most this many status reads share one remote exec.
    pub coalesce_max_parts: usize,
    /// With `pool`: run coalesced status reads in one persistent remote shell per host instead
    /// of one exec per batch.
    pub coalesce_shell: bool,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            key: None,
            passwords_file: None,
            connect_timeout_secs: 10,
            command_timeout_secs: 600,
            kill_grace_secs: 3,
            keepalive_secs: 15,
            pool: true,
            coalesce_window_ms: crate::ssh::coalesce::DEFAULT_WINDOW.as_millis() as u64,
            coalesce_max_parts: crate::ssh::coalesce::DEFAULT_MAX_PARTS,
            coalesce_shell: true,
        }
    }
}

/// Concurrency limits; jobs beyond them wait in FIFO order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Jobs running at once, over all hosts.
    pub max_concurrent: usize,
    /// Jobs running at once on one host.
    pub max_per_host: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 64,
            max_per_host: 4,
        }
    }
}

impl Config {
    /// Defaults that run the demo.
    pub fn demo() -> Self {
        Config {
            version: 1,
            nats: default_nats(),
            state_dir: None,
            ssh: SshConfig::default(),
            limits: Limits::default(),
            verbs: BTreeMap::new(),
        }
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| fleetbus_runtime::state_dir().join("executor"))
    }

    /// The SSH key.
    pub fn key_path(&self) -> PathBuf {
        self.ssh.key.clone().unwrap_or_else(|| {
            fleetbus_runtime::state_dir()
                .join("demo")
                .join("fleet_ed25519")
        })
    }

    /// The default command deadline.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.ssh.command_timeout_secs.max(1))
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ExecError> {
        if self.version != 1 {
            return Err(ExecError::Config(format!(
                "version: {} is not supported, expected 1",
                self.version
            )));
        }
        if self.limits.max_concurrent == 0 || self.limits.max_per_host == 0 {
            return Err(ExecError::Config(
                "limits: max_concurrent and max_per_host must be at least 1".into(),
            ));
        }
        if self.ssh.coalesce_max_parts == 0 || self.ssh.coalesce_window_ms > 1000 {
            return Err(ExecError::Config(format!(
                "ssh: coalesce_max_parts must be at least 1 (is {}) and coalesce_window_ms at most 1000 (is {}); a status read waits that long for company",
                self.ssh.coalesce_max_parts, self.ssh.coalesce_window_ms
            )));
        }
        for (name, spec) in &self.verbs {
            if !crate::verbs::valid_name(name) {
                return Err(ExecError::Config(format!(
                    "verbs.{name}: not a VERB-NOUN name in capitals"
                )));
            }
            crate::tasks::validate(spec)
                .map_err(|e| ExecError::Config(format!("verbs.{name}: {e}")))?;
        }
        Ok(())
    }

    /// Reads the passwords file, if any (host id → password).
    pub fn passwords(&self) -> Result<std::collections::HashMap<HostId, String>, ExecError> {
        let Some(path) = &self.ssh.passwords_file else {
            return Ok(Default::default());
        };
        let text = std::fs::read_to_string(path).map_err(ExecError::io(format!(
            "reading passwords file {}",
            path.display()
        )))?;
        let map: BTreeMap<HostId, String> = toml::from_str(&text).map_err(|e| {
            // The parse error may quote file content: say where, not what.
            ExecError::Config(format!(
                "passwords file {} is not a TOML table of host = \"password\" (line {:?})",
                path.display(),
                e.span().map(|s| text[..s.start].lines().count())
            ))
        })?;
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_not_config_they_come_from_the_log() {
        let text = r#"
            [[hosts]]
            id = "demo-1"
            address = "127.0.0.2"
            user = "fleet"
        "#;
        assert!(toml::from_str::<Config>(text).is_err());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        Config::demo().validate().unwrap();
    }
}
