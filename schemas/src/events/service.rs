//! The service registry and observed service status.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::agent::ServiceState;
use super::{id, sample_time, DomainEvent};
use crate::ids::{HostId, ServiceKey, ServiceName};

/// Which service manager runs a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceManager {
    /// systemd (`systemctl`, `journalctl`).
    Systemd,
    /// runit (`sv`), for hosts without systemd.
    Runit,
}

/// An action on a service, as offered by the dashboard buttons.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    /// Read structured status.
    Status,
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Restart.
    Restart,
    /// Reload configuration.
    Reload,
    /// Read recent log lines (capped at 500).
    Logs,
    /// Enable at boot.
    Enable,
    /// Disable at boot.
    Disable,
}

impl ServiceAction {
    /// The lowercase name used in URLs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::Logs => "logs",
            Self::Enable => "enable",
            Self::Disable => "disable",
        }
    }
    /// Every action.
    pub const ALL: [ServiceAction; 8] = [
        Self::Status,
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Reload,
        Self::Logs,
        Self::Enable,
        Self::Disable,
    ];
}

impl std::str::FromStr for ServiceAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action {s:?}, expected one of status, start, stop, restart, reload, logs, enable, disable"))
    }
}

/// A managed service as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceSpec {
    /// The host it runs on.
    pub host: HostId,
    /// Its name.
    pub name: ServiceName,
    /// The manager that runs it.
    pub manager: ServiceManager,
    /// The manager's handle: a systemd unit name (`nginx.service`) or an absolute runit
    /// service directory (`/etc/sv/nginx`). Validated by the executor before use.
    pub unit: String,
    /// The actions allowed on it (the allowlist behind the buttons).
    pub actions: Vec<ServiceAction>,
    /// For runit: the log file or svlogd directory to read logs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Whether the service is expected to run (a stopped service that is not expected to run
    /// opens no alert).
    #[serde(default = "yes")]
    pub expected_running: bool,
}

fn yes() -> bool {
    true
}

impl ServiceSpec {
    /// The service's key.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.host.clone(), self.name.clone())
    }
}

/// Structured status of a service, parsed from the manager's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceStatus {
    /// The reduced state (gives the dot colour).
    pub state: ServiceState,
    /// The manager's sub-state (`running`, `dead`, `exited`, `down`, …).
    pub sub_state: String,
    /// Main process id, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// Since when it is in this state, if the manager says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Service facts. Entity token: the service key `host:service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServiceEvent {
    /// A service was added to the registry.
    Registered(ServiceSpec),
    /// A service's registration changed.
    Updated(ServiceSpec),
    /// A service was removed from the registry.
    Removed {
        /// The host.
        host: HostId,
        /// The service.
        name: ServiceName,
    },
    /// The executor read a service's status over SSH.
    StatusObserved {
        /// The host.
        host: HostId,
        /// The service.
        name: ServiceName,
        /// What it found.
        status: ServiceStatus,
    },
}

impl ServiceEvent {
    /// The service the event is about.
    pub fn key(&self) -> ServiceKey {
        match self {
            Self::Registered(spec) | Self::Updated(spec) => spec.key(),
            Self::Removed { host, name } | Self::StatusObserved { host, name, .. } => {
                ServiceKey::new(host.clone(), name.clone())
            }
        }
    }
}

impl DomainEvent for ServiceEvent {
    fn entity(&self) -> String {
        self.key().to_string()
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Registered(_) => "registered",
            Self::Updated(_) => "updated",
            Self::Removed { .. } => "removed",
            Self::StatusObserved { .. } => "status_observed",
        }
    }
    fn samples() -> Vec<Self> {
        let spec = ServiceSpec {
            host: id("web-1"),
            name: id("nginx"),
            manager: ServiceManager::Systemd,
            unit: "nginx.service".into(),
            actions: vec![
                ServiceAction::Status,
                ServiceAction::Restart,
                ServiceAction::Logs,
            ],
            log_path: None,
            expected_running: true,
        };
        vec![
            Self::Registered(spec.clone()),
            Self::Updated(ServiceSpec {
                manager: ServiceManager::Runit,
                unit: "/etc/sv/nginx".into(),
                log_path: Some("/var/log/nginx/current".into()),
                ..spec
            }),
            Self::Removed {
                host: id("web-1"),
                name: id("nginx"),
            },
            Self::StatusObserved {
                host: id("web-1"),
                name: id("nginx"),
                status: ServiceStatus {
                    state: ServiceState::Running,
                    sub_state: "running".into(),
                    main_pid: Some(1234),
                    since: Some(sample_time()),
                },
            },
        ]
    }
}
