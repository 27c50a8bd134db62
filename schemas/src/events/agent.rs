//! Agent events: reports, events an agent raises, keys, blocking and liveness.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_time, DomainEvent, Severity};
use crate::ids::{AgentId, HostId, ServiceName};

/// Resource usage of a host, as read from `/proc` by an agent or over SSH.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// CPU busy percentage since the previous sample, 0–100.
    pub cpu_pct: f32,
    /// Total memory in KiB.
    pub mem_total_kb: u64,
    /// Used memory (total − available) in KiB.
    pub mem_used_kb: u64,
    /// Size of the root file system in KiB.
    pub disk_total_kb: u64,
    /// Used space on the root file system in KiB.
    pub disk_used_kb: u64,
    /// 1-minute load average.
    pub load1: f32,
    /// 5-minute load average.
    pub load5: f32,
    /// 15-minute load average.
    pub load15: f32,
    /// Seconds since boot.
    pub uptime_s: u64,
}

/// The state of a service as a manager reports it, reduced to what the dashboard shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Up and running.
    Running,
    /// Deliberately stopped.
    Stopped,
    /// Crashed or exited with an error.
    Failed,
    /// On its way up.
    Starting,
    /// On its way down.
    Stopping,
    /// Reloading its configuration.
    Reloading,
    /// The manager does not know, or the answer could not be read.
    Unknown,
}

/// The colour of a status dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dot {
    /// Running.
    Green,
    /// Failed or stopped.
    Red,
    /// In between, or unknown.
    Amber,
}

impl ServiceState {
    /// The dashboard colour for this state.
    pub fn dot(self) -> Dot {
        match self {
            Self::Running => Dot::Green,
            Self::Failed | Self::Stopped => Dot::Red,
            Self::Starting | Self::Stopping | Self::Reloading | Self::Unknown => Dot::Amber,
        }
    }
    /// True for states that mean "down" and open an alert.
    pub fn is_down(self) -> bool {
        matches!(self, Self::Failed | Self::Stopped)
    }
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
            Self::Reloading => "reloading",
            Self::Unknown => "unknown",
        }
    }
}

/// One service's state as seen by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceObservation {
    /// The service.
    pub name: ServiceName,
    /// Its state.
    pub state: ServiceState,
    /// The manager's own words (sub-state, reason), at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A periodic report from an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentReport {
    /// The reporting agent.
    pub agent: AgentId,
    /// The host it runs on.
    pub host: HostId,
    /// The agent's version string.
    pub agent_version: String,
    /// Resource usage.
    pub resources: Resources,
    /// States of the services the agent watches.
    pub services: Vec<ServiceObservation>,
    /// Version of the managed config the agent has applied, if managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
    /// SHA-256 (hex) of the agent's live config, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// The allowlist of event types an agent may raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// A liveness ping (heartbeat checks listen for these).
    Heartbeat,
    /// A service stopped or crashed.
    ServiceDown,
    /// A service came back.
    ServiceUp,
    /// A file system is nearly full.
    DiskFull,
    /// The kernel killed a process for lack of memory.
    OomKill,
    /// The host rebooted.
    Reboot,
    /// Someone logged in.
    Login,
    /// A backup finished.
    BackupSucceeded,
    /// A backup failed.
    BackupFailed,
    /// A deployment happened.
    Deploy,
    /// Anything else the host wants on the timeline.
    Custom,
}

impl AgentEventKind {
    /// The lowercase name used on the wire and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::ServiceDown => "service_down",
            Self::ServiceUp => "service_up",
            Self::DiskFull => "disk_full",
            Self::OomKill => "oom_kill",
            Self::Reboot => "reboot",
            Self::Login => "login",
            Self::BackupSucceeded => "backup_succeeded",
            Self::BackupFailed => "backup_failed",
            Self::Deploy => "deploy",
            Self::Custom => "custom",
        }
    }
}

/// An event an agent raises (pushed over HTTP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentNotice {
    /// The agent.
    pub agent: AgentId,
    /// Its host.
    pub host: HostId,
    /// What happened, from the allowlist.
    pub kind: AgentEventKind,
    /// How bad it is.
    pub severity: Severity,
    /// A human message, at most 4,096 characters.
    pub message: String,
    /// The service it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// Extra key/value fields (at most 32, keys ≤ 64 and values ≤ 1,024 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// Agent facts. Entity token: the agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AgentEvent {
    /// An agent sent a report.
    Reported(AgentReport),
    /// An agent raised an event.
    Raised(AgentNotice),
    /// A key was issued; only its SHA-256 hash travels (on `fleet.sec.…`).
    KeyIssued {
        /// The agent.
        agent: AgentId,
        /// The host it belongs to.
        host: HostId,
        /// A short public id of the key (shown in listings).
        key_id: String,
        /// SHA-256 of the key, hex. Credential material: never on `fleet.evt.…`.
        key_hash: String,
    },
    /// The agent's key was revoked; it can no longer push.
    KeyRevoked {
        /// The agent.
        agent: AgentId,
    },
    /// The agent was blocked: its reports are stored but it raises no notifications.
    Blocked {
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: String,
    },
    /// The agent was unblocked.
    Unblocked {
        /// The agent.
        agent: AgentId,
    },
    /// Nothing was heard from the agent for the stale threshold.
    WentStale {
        /// The agent.
        agent: AgentId,
        /// When it was last heard from.
        last_seen: DateTime<Utc>,
    },
    /// Nothing was heard from the agent for the down threshold.
    WentDown {
        /// The agent.
        agent: AgentId,
        /// When it was last heard from.
        last_seen: DateTime<Utc>,
    },
    /// A stale or down agent reported again.
    Recovered {
        /// The agent.
        agent: AgentId,
    },
}

impl AgentEvent {
    /// The agent the event is about.
    pub fn agent(&self) -> &AgentId {
        match self {
            Self::Reported(r) => &r.agent,
            Self::Raised(n) => &n.agent,
            Self::KeyIssued { agent, .. }
            | Self::KeyRevoked { agent }
            | Self::Blocked { agent, .. }
            | Self::Unblocked { agent }
            | Self::WentStale { agent, .. }
            | Self::WentDown { agent, .. }
            | Self::Recovered { agent } => agent,
        }
    }
}

impl DomainEvent for AgentEvent {
    fn entity(&self) -> String {
        self.agent().to_string()
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Reported(_) => "reported",
            Self::Raised(_) => "raised",
            Self::KeyIssued { .. } => "key_issued",
            Self::KeyRevoked { .. } => "key_revoked",
            Self::Blocked { .. } => "blocked",
            Self::Unblocked { .. } => "unblocked",
            Self::WentStale { .. } => "went_stale",
            Self::WentDown { .. } => "went_down",
            Self::Recovered { .. } => "recovered",
        }
    }
    fn is_secret(&self) -> bool {
        matches!(self, Self::KeyIssued { .. })
    }
    fn samples() -> Vec<Self> {
        let agent: AgentId = id("web-1");
        let host: HostId = id("web-1");
        vec![
            Self::Reported(AgentReport {
                agent: agent.clone(),
                host: host.clone(),
                agent_version: "0.1.0".into(),
                resources: Resources {
                    cpu_pct: 12.5,
                    mem_total_kb: 2_048_000,
                    mem_used_kb: 1_024_000,
                    disk_total_kb: 10_000_000,
                    disk_used_kb: 4_000_000,
                    load1: 0.5,
                    load5: 0.25,
                    load15: 0.125,
                    uptime_s: 86_400,
                },
                services: vec![ServiceObservation {
                    name: id("nginx"),
                    state: ServiceState::Running,
                    detail: Some("running".into()),
                }],
                config_version: Some(3),
                config_hash: Some("ab".repeat(32)),
            }),
            Self::Raised(AgentNotice {
                agent: agent.clone(),
                host: host.clone(),
                kind: AgentEventKind::DiskFull,
                severity: Severity::Error,
                message: "/var is 97% full".into(),
                service: None,
                fields: BTreeMap::from([("mount".into(), "/var".into())]),
            }),
            Self::KeyIssued {
                agent: agent.clone(),
                host,
                key_id: "k-01".into(),
                key_hash: "cd".repeat(32),
            },
            Self::KeyRevoked {
                agent: agent.clone(),
            },
            Self::Blocked {
                agent: agent.clone(),
                reason: "decommissioning".into(),
            },
            Self::Unblocked {
                agent: agent.clone(),
            },
            Self::WentStale {
                agent: agent.clone(),
                last_seen: sample_time(),
            },
            Self::WentDown {
                agent: agent.clone(),
                last_seen: sample_time(),
            },
            Self::Recovered { agent },
        ]
    }
}
