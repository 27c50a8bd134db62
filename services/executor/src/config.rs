//! The executor's config file (TOML, `FLEETBUS_EXECUTOR__*` overrides).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fleetbus_runtime::nats::NatsConfig;
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::TaskSpec;
use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};
use fleetbus_schemas::{HostId, ServiceName};
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
    /// Hosts known without registry events (tests, benchmarks, the demo fleet's hosts.toml).
    #[serde(default)]
    pub hosts: Vec<StaticHost>,
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

/// A host from the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    /// Its id.
    pub id: HostId,
    /// Address.
    pub address: String,
    /// SSH port.
    #[serde(default = "ssh_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Host key policy.
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Ad-hoc commands allowed.
    #[serde(default)]
    pub allow_adhoc: bool,
    /// Services.
    #[serde(default)]
    pub services: Vec<StaticService>,
    /// Informational (the demo fleet writes it): the key file and host key fingerprint.
    #[serde(default)]
    pub key_path: Option<String>,
    /// Informational: `SHA256:…` of the host key.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
}

fn ssh_port() -> u16 {
    22
}

/// A service of a config host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticService {
    /// Its name.
    pub name: ServiceName,
    /// Its manager.
    pub manager: ServiceManager,
    /// Unit name or absolute runit dir.
    pub unit: String,
    /// Allowed actions.
    pub actions: Vec<ServiceAction>,
    /// Log file or svlogd dir (runit).
    #[serde(default)]
    pub log_path: Option<String>,
}

impl StaticHost {
    /// As registry specs.
    pub fn specs(&self) -> (HostSpec, Vec<ServiceSpec>) {
        let host = HostSpec {
            host: self.id.clone(),
            address: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            tags: self.tags.clone(),
            roles: self.roles.clone(),
            host_key_policy: self.host_key_policy,
            allow_adhoc: self.allow_adhoc,
            disabled: false,
        };
        let services = self
            .services
            .iter()
            .map(|s| ServiceSpec {
                host: self.id.clone(),
                name: s.name.clone(),
                manager: s.manager,
                unit: s.unit.clone(),
                actions: s.actions.clone(),
                log_path: s.log_path.clone(),
                expected_running: true,
            })
            .collect();
        (host, services)
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
            hosts: Vec::new(),
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
        for h in &self.hosts {
            for s in h.specs().1 {
                crate::templates::validate_spec(&s).map_err(|e| {
                    ExecError::Config(format!("hosts.{}.services.{}: {e}", h.id, s.name))
                })?;
            }
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
    fn a_demo_hosts_file_parses() {
        let text = r#"
            [[hosts]]
            id = "demo-1"
            address = "127.0.0.2"
            port = 2201
            user = "fleet"
            host_key_policy = "accept_new"
            tags = ["demo"]
            [[hosts.services]]
            name = "web"
            manager = "runit"
            unit = "/srv/demo-1/sv/web"
            actions = ["status", "restart", "logs"]
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.hosts[0].specs().1[0].actions.len(), 3);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
