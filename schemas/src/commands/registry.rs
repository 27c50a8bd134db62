//! Commands handled by ingest: the host/service registry, agent keys, users, alerts, configs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AreaCommand;
use crate::envelope::UserRole;
use crate::events::host::HostSpec;
use crate::events::service::ServiceSpec;
use crate::events::{id, sample_ulid};
use crate::ids::{AgentId, AlertId, HostId, ServiceName, UserName};

/// Registry commands (`fleet.cmd.host.<verb>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum HostCommand {
    /// Register a host (rejected as a conflict if it exists).
    Add(HostSpec),
    /// Change a host's registration.
    Update(HostSpec),
    /// Remove a host and its services.
    Remove {
        /// The host.
        host: HostId,
    },
    /// Register (or replace) a service on a registered host.
    AddService(ServiceSpec),
    /// Remove a service.
    RemoveService {
        /// The host.
        host: HostId,
        /// The service.
        name: ServiceName,
    },
    /// Pin or rotate a host key after a person checked it.
    TrustKey {
        /// The host.
        host: HostId,
        /// Key algorithm.
        algorithm: String,
        /// `SHA256:…` fingerprint.
        fingerprint: String,
    },
}

impl AreaCommand for HostCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::Add(_) => "add",
            Self::Update(_) => "update",
            Self::Remove { .. } => "remove",
            Self::AddService(_) => "add_service",
            Self::RemoveService { .. } => "remove_service",
            Self::TrustKey { .. } => "trust_key",
        }
    }
    fn samples() -> Vec<Self> {
        use crate::events::host::HostEvent;
        use crate::events::service::ServiceEvent;
        use crate::events::DomainEvent;
        let spec = match HostEvent::samples().remove(0) {
            HostEvent::Registered(spec) => spec,
            _ => unreachable!("first host sample is Registered"),
        };
        let service = match ServiceEvent::samples().remove(0) {
            ServiceEvent::Registered(spec) => spec,
            _ => unreachable!("first service sample is Registered"),
        };
        vec![
            Self::Add(spec.clone()),
            Self::Update(spec),
            Self::Remove { host: id("web-1") },
            Self::AddService(service),
            Self::RemoveService {
                host: id("web-1"),
                name: id("nginx"),
            },
            Self::TrustKey {
                host: id("web-1"),
                algorithm: "ssh-ed25519".into(),
                fingerprint: "SHA256:abc".into(),
            },
        ]
    }
}

/// Agent lifecycle commands (`fleet.cmd.agent.<verb>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Issue a key. The key itself is shown once by the issuer; only its hash is sent.
    IssueKey {
        /// The agent.
        agent: AgentId,
        /// Its host (must be registered).
        host: HostId,
        /// Short public key id.
        key_id: String,
        /// SHA-256 (hex) of the key.
        key_hash: String,
    },
    /// Revoke the agent's key.
    RevokeKey {
        /// The agent.
        agent: AgentId,
    },
    /// Block the agent.
    Block {
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: String,
    },
    /// Unblock the agent.
    Unblock {
        /// The agent.
        agent: AgentId,
    },
}

impl AreaCommand for AgentCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::IssueKey { .. } => "issue_key",
            Self::RevokeKey { .. } => "revoke_key",
            Self::Block { .. } => "block",
            Self::Unblock { .. } => "unblock",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::IssueKey {
                agent: id("web-1"),
                host: id("web-1"),
                key_id: "k-01".into(),
                key_hash: "cd".repeat(32),
            },
            Self::RevokeKey { agent: id("web-1") },
            Self::Block {
                agent: id("web-1"),
                reason: "decommissioning".into(),
            },
            Self::Unblock { agent: id("web-1") },
        ]
    }
}

/// User commands (`fleet.cmd.user.<verb>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum UserCommand {
    /// Create a user.
    Add {
        /// Login name.
        user: UserName,
        /// Role.
        role: UserRole,
        /// argon2id PHC string.
        password_hash: String,
    },
    /// Change a password.
    SetPassword {
        /// Login name.
        user: UserName,
        /// argon2id PHC string.
        password_hash: String,
    },
    /// Change a role.
    SetRole {
        /// Login name.
        user: UserName,
        /// New role.
        role: UserRole,
    },
    /// Remove a user.
    Remove {
        /// Login name.
        user: UserName,
    },
}

impl AreaCommand for UserCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::SetPassword { .. } => "set_password",
            Self::SetRole { .. } => "set_role",
            Self::Remove { .. } => "remove",
        }
    }
    fn samples() -> Vec<Self> {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string();
        vec![
            Self::Add {
                user: id("admin"),
                role: UserRole::Admin,
                password_hash: hash.clone(),
            },
            Self::SetPassword {
                user: id("admin"),
                password_hash: hash,
            },
            Self::SetRole {
                user: id("ops"),
                role: UserRole::Viewer,
            },
            Self::Remove { user: id("ops") },
        ]
    }
}

/// Alert commands (`fleet.cmd.alert.<verb>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AlertCommand {
    /// Acknowledge an open alert (stops escalation).
    Ack {
        /// The alert.
        alert: AlertId,
        /// Optional note.
        #[serde(default)]
        note: String,
    },
    /// Resolve an alert by hand.
    Resolve {
        /// The alert.
        alert: AlertId,
        /// Optional note.
        #[serde(default)]
        note: String,
    },
}

impl AreaCommand for AlertCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "ack",
            Self::Resolve { .. } => "resolve",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::Ack {
                alert: AlertId(sample_ulid(7)),
                note: "on it".into(),
            },
            Self::Resolve {
                alert: AlertId(sample_ulid(7)),
                note: String::new(),
            },
        ]
    }
}

/// Managed-config commands (`fleet.cmd.config.<verb>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ConfigCommand {
    /// Set an agent's whole desired config (TOML text), without a template.
    SetDesired {
        /// The agent.
        agent: AgentId,
        /// The desired config.
        toml: String,
    },
    /// Manage an agent: its desired config is `template` (if any) deep-merged with `overrides`.
    Assign {
        /// The agent.
        agent: AgentId,
        /// The template's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
        /// The agent's own keys (TOML), merged over the template.
        #[serde(default)]
        overrides: String,
        /// Extra volatile key paths for this agent.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volatile: Vec<String>,
    },
    /// Create or change a template; every agent using it gets a new desired version.
    SetTemplate {
        /// The template's name.
        template: String,
        /// Its TOML text.
        toml: String,
        /// Volatile key paths of every agent using it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volatile: Vec<String>,
    },
    /// Remove a template no agent uses.
    RemoveTemplate {
        /// The template's name.
        template: String,
    },
    /// Pull: make the agent's last reported live config its desired config ("create config from
    /// report" for a report-only agent).
    Import {
        /// The agent.
        agent: AgentId,
    },
    /// Stop managing an agent.
    Release {
        /// The agent.
        agent: AgentId,
    },
    /// Push: tell the agent to apply its desired config now.
    Push {
        /// The agent.
        agent: AgentId,
    },
    /// Tell the agent to update itself to a version.
    TriggerUpdate {
        /// The agent.
        agent: AgentId,
        /// The agent version to install.
        version: String,
    },
    /// Set the agent's retrieval passphrase. The passphrase is shown once by the issuer; only
    /// its argon2id hash is sent.
    SetPassphrase {
        /// The agent.
        agent: AgentId,
        /// argon2id PHC string.
        passphrase_hash: String,
    },
}

impl AreaCommand for ConfigCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::SetDesired { .. } => "set_desired",
            Self::Assign { .. } => "assign",
            Self::SetTemplate { .. } => "set_template",
            Self::RemoveTemplate { .. } => "remove_template",
            Self::Import { .. } => "import",
            Self::Release { .. } => "release",
            Self::Push { .. } => "push",
            Self::TriggerUpdate { .. } => "trigger_update",
            Self::SetPassphrase { .. } => "set_passphrase",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::SetDesired {
                agent: id("web-1"),
                toml: "interval_s = 10\n".into(),
            },
            Self::Assign {
                agent: id("web-1"),
                template: Some("web".into()),
                overrides: "[nginx]\nworkers = 8\n".into(),
                volatile: vec!["state.*".into()],
            },
            Self::SetTemplate {
                template: "web".into(),
                toml: "interval_s = 30\n".into(),
                volatile: vec![],
            },
            Self::RemoveTemplate {
                template: "web".into(),
            },
            Self::Import { agent: id("web-1") },
            Self::Release { agent: id("web-1") },
            Self::Push { agent: id("web-1") },
            Self::TriggerUpdate {
                agent: id("web-1"),
                version: "0.2.0".into(),
            },
            Self::SetPassphrase {
                agent: id("web-1"),
                passphrase_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
        ]
    }
}
