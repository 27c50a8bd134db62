//! The host registry and host keys.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, DomainEvent};
use crate::ids::HostId;

/// How the executor treats a host's SSH host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// Only keys pinned in fleetbus' known-hosts store.
    Strict,
    /// Pin on first contact, refuse on change.
    #[default]
    AcceptNew,
    /// Accept anything (labs only; logged as a warning).
    Off,
}

/// A managed host as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostSpec {
    /// The host's id.
    pub host: HostId,
    /// Address to reach it over SSH (IP or DNS name).
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user on the host.
    pub user: String,
    /// Free-form tags (`web`, `eu`, …), each a valid name.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Roles (`db-primary`, …), each a valid name.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Host key policy.
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    /// Whether admins may run ad-hoc commands here.
    #[serde(default)]
    pub allow_adhoc: bool,
    /// Whether the host is disabled (kept, not polled, shown as DISABLED).
    #[serde(default)]
    pub disabled: bool,
}

/// Host facts. Entity token: the host id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum HostEvent {
    /// A host was added.
    Registered(HostSpec),
    /// A host's registration changed.
    Updated(HostSpec),
    /// A host was removed.
    Removed {
        /// The host.
        host: HostId,
    },
    /// A host key was pinned (first contact under accept-new, or trusted by a person).
    KeyPinned {
        /// The host.
        host: HostId,
        /// Key algorithm, e.g. `ssh-ed25519`.
        algorithm: String,
        /// `SHA256:…` fingerprint.
        fingerprint: String,
    },
    /// The host presented a key other than the pinned one; the connection was refused.
    KeyMismatch {
        /// The host.
        host: HostId,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint presented.
        presented: String,
    },
    /// The executor could not reach or log in to the host.
    Unreachable {
        /// The host.
        host: HostId,
        /// What went wrong.
        reason: String,
    },
    /// The host answered again after being unreachable.
    Reachable {
        /// The host.
        host: HostId,
    },
    /// Resource usage read over SSH (for hosts without an agent).
    ResourcesObserved {
        /// The host.
        host: HostId,
        /// The reading.
        resources: super::agent::Resources,
    },
}

impl HostEvent {
    /// The host the event is about.
    pub fn host(&self) -> &HostId {
        match self {
            Self::Registered(spec) | Self::Updated(spec) => &spec.host,
            Self::Removed { host }
            | Self::KeyPinned { host, .. }
            | Self::KeyMismatch { host, .. }
            | Self::Unreachable { host, .. }
            | Self::Reachable { host }
            | Self::ResourcesObserved { host, .. } => host,
        }
    }
}

impl DomainEvent for HostEvent {
    fn entity(&self) -> String {
        self.host().to_string()
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Registered(_) => "registered",
            Self::Updated(_) => "updated",
            Self::Removed { .. } => "removed",
            Self::KeyPinned { .. } => "key_pinned",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::Unreachable { .. } => "unreachable",
            Self::Reachable { .. } => "reachable",
            Self::ResourcesObserved { .. } => "resources_observed",
        }
    }
    fn samples() -> Vec<Self> {
        let host: HostId = id("web-1");
        let spec = HostSpec {
            host: host.clone(),
            address: "127.0.0.2".into(),
            port: 2222,
            user: "fleet".into(),
            tags: vec!["web".into(), "eu".into()],
            roles: vec!["frontend".into()],
            host_key_policy: HostKeyPolicy::AcceptNew,
            allow_adhoc: false,
            disabled: false,
        };
        vec![
            Self::Registered(spec.clone()),
            Self::Updated(HostSpec {
                allow_adhoc: true,
                ..spec
            }),
            Self::Removed { host: host.clone() },
            Self::KeyPinned {
                host: host.clone(),
                algorithm: "ssh-ed25519".into(),
                fingerprint: "SHA256:abc".into(),
            },
            Self::KeyMismatch {
                host: host.clone(),
                expected: "SHA256:abc".into(),
                presented: "SHA256:xyz".into(),
            },
            Self::Unreachable {
                host: host.clone(),
                reason: "connection refused".into(),
            },
            Self::Reachable { host: host.clone() },
            Self::ResourcesObserved {
                host,
                resources: super::agent::Resources::default(),
            },
        ]
    }
}
