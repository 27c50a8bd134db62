//! Managed agent configuration, live config, instructions to agents, disaster-recovery
//! snapshots and retrieval passphrases.
//!
//! Entity token: the agent id, or the template name for template events.
//!
//! An agent's desired config is a template (TOML) deep-merged with the agent's overrides. Every
//! change of what an agent should run is a [`ConfigEvent::DesiredSet`] carrying the whole merged
//! TOML text, so the log alone tells which config an agent was meant to have at any time.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_ulid, DomainEvent};
use crate::ids::{AgentId, EventId};

/// What an agent is told to do besides applying its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Instruction {
    /// Apply the desired config now, even if the agent thinks it already has it.
    Push,
    /// Update the agent binary to a given version.
    Update,
}

impl Instruction {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Update => "update",
        }
    }
}

/// Config facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ConfigEvent {
    /// The desired config of an agent changed (template merged with overrides).
    DesiredSet {
        /// The agent.
        agent: AgentId,
        /// Monotonic version, per agent.
        version: u64,
        /// The desired config as TOML text (exactly what the agent receives).
        toml: String,
        /// SHA-256 (hex) of `toml`'s bytes.
        hash: String,
        /// The template it is built from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
        /// The agent's own overrides (TOML), merged over the template; `None`: `toml` is the
        /// whole config.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overrides: Option<String>,
        /// Key paths (`a.b`, `*` matches one segment) whose values are expected to differ on the
        /// host and are left out of drift.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volatile: Vec<String>,
    },
    /// The agent is no longer managed: fleetbus forgets its desired config.
    Released {
        /// The agent.
        agent: AgentId,
    },
    /// A config template was created or changed.
    TemplateSet {
        /// The template's name (a valid name id).
        template: String,
        /// Its TOML text.
        toml: String,
        /// SHA-256 (hex) of `toml`'s bytes.
        hash: String,
        /// Volatile key paths of every agent using it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volatile: Vec<String>,
    },
    /// A config template was removed (no agent uses it any more).
    TemplateRemoved {
        /// The template's name.
        template: String,
    },
    /// An agent told ingest what config it runs now (sent when its live config changes).
    LiveReported {
        /// The agent.
        agent: AgentId,
        /// The desired version it last applied, if managed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// SHA-256 (hex) of the live config file's bytes.
        hash: String,
        /// The live config file, as TOML text.
        toml: String,
    },
    /// An operator asked the agent to act; delivered with the agent's next config poll.
    InstructionIssued {
        /// The agent.
        agent: AgentId,
        /// What to do.
        instruction: Instruction,
        /// For `update`: the agent version to install. For `push`: the desired version.
        target: String,
    },
    /// The agent reported back on an instruction (the envelope id of its `InstructionIssued`).
    InstructionAcknowledged {
        /// The agent.
        agent: AgentId,
        /// The instruction event being acknowledged.
        request: EventId,
        /// What it was.
        instruction: Instruction,
        /// Whether it worked.
        ok: bool,
        /// The agent's words (≤ 1,024 characters).
        message: String,
    },
    /// An encrypted snapshot was stored in the object store.
    SnapshotStored {
        /// The agent.
        agent: AgentId,
        /// Object name.
        object: String,
        /// Size in bytes (ciphertext).
        size: u64,
        /// SHA-256 (hex) of the plaintext.
        hash: String,
    },
    /// An old snapshot was deleted (only the last N per agent are kept).
    SnapshotDeleted {
        /// The agent.
        agent: AgentId,
        /// Object name.
        object: String,
    },
    /// The agent's retrieval passphrase was set; only its argon2id hash travels (`fleet.sec.…`).
    PassphraseSet {
        /// The agent.
        agent: AgentId,
        /// argon2id PHC string of the passphrase. Credential material.
        passphrase_hash: String,
    },
    /// Someone asked for the agent's recovery bundle.
    RecoveryAttempted {
        /// The agent.
        agent: AgentId,
        /// Whether the passphrase was right.
        ok: bool,
        /// The client address as ingest saw it.
        remote: String,
    },
}

impl ConfigEvent {
    /// The agent the event is about (`None` for template events).
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Self::DesiredSet { agent, .. }
            | Self::Released { agent }
            | Self::LiveReported { agent, .. }
            | Self::InstructionIssued { agent, .. }
            | Self::InstructionAcknowledged { agent, .. }
            | Self::SnapshotStored { agent, .. }
            | Self::SnapshotDeleted { agent, .. }
            | Self::PassphraseSet { agent, .. }
            | Self::RecoveryAttempted { agent, .. } => Some(agent),
            Self::TemplateSet { .. } | Self::TemplateRemoved { .. } => None,
        }
    }
}

impl DomainEvent for ConfigEvent {
    fn entity(&self) -> String {
        match self {
            Self::TemplateSet { template, .. } | Self::TemplateRemoved { template } => {
                template.clone()
            }
            other => other.agent().map(ToString::to_string).unwrap_or_default(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::DesiredSet { .. } => "desired_set",
            Self::Released { .. } => "released",
            Self::TemplateSet { .. } => "template_set",
            Self::TemplateRemoved { .. } => "template_removed",
            Self::LiveReported { .. } => "live_reported",
            Self::InstructionIssued { .. } => "instruction_issued",
            Self::InstructionAcknowledged { .. } => "instruction_acknowledged",
            Self::SnapshotStored { .. } => "snapshot_stored",
            Self::SnapshotDeleted { .. } => "snapshot_deleted",
            Self::PassphraseSet { .. } => "passphrase_set",
            Self::RecoveryAttempted { .. } => "recovery_attempted",
        }
    }
    fn is_secret(&self) -> bool {
        matches!(self, Self::PassphraseSet { .. })
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::DesiredSet {
                agent: id("web-1"),
                version: 1,
                toml: "interval_s = 10\n".into(),
                hash: "ef".repeat(32),
                template: Some("web".into()),
                overrides: Some("interval_s = 10\n".into()),
                volatile: vec!["state.last_run".into()],
            },
            Self::Released { agent: id("web-1") },
            Self::TemplateSet {
                template: "web".into(),
                toml: "interval_s = 30\n[nginx]\nworkers = 4\n".into(),
                hash: "aa".repeat(32),
                volatile: vec!["nginx.pid".into()],
            },
            Self::TemplateRemoved {
                template: "web".into(),
            },
            Self::LiveReported {
                agent: id("web-1"),
                version: Some(1),
                hash: "ef".repeat(32),
                toml: "interval_s = 10\n".into(),
            },
            Self::InstructionIssued {
                agent: id("web-1"),
                instruction: Instruction::Update,
                target: "0.2.0".into(),
            },
            Self::InstructionAcknowledged {
                agent: id("web-1"),
                request: EventId(sample_ulid(9)),
                instruction: Instruction::Update,
                ok: true,
                message: "updated to 0.2.0".into(),
            },
            Self::SnapshotStored {
                agent: id("web-1"),
                object: "web-1/01J".into(),
                size: 4096,
                hash: "01".repeat(32),
            },
            Self::SnapshotDeleted {
                agent: id("web-1"),
                object: "web-1/01H".into(),
            },
            Self::PassphraseSet {
                agent: id("web-1"),
                passphrase_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Self::RecoveryAttempted {
                agent: id("web-1"),
                ok: false,
                remote: "127.0.0.1".into(),
            },
        ]
    }
}
