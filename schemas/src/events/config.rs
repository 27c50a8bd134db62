//! Managed agent configuration, snapshots and assets. Entity token: the agent id (or `assets`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, DomainEvent};
use crate::ids::AgentId;

/// Config facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ConfigEvent {
    /// The desired config of an agent changed (template merged with overrides).
    DesiredSet {
        /// The agent.
        agent: AgentId,
        /// Monotonic version.
        version: u64,
        /// The desired config as TOML text.
        toml: String,
        /// SHA-256 (hex) of the canonical config.
        hash: String,
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
}

impl DomainEvent for ConfigEvent {
    fn entity(&self) -> String {
        match self {
            Self::DesiredSet { agent, .. } | Self::SnapshotStored { agent, .. } => {
                agent.to_string()
            }
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::DesiredSet { .. } => "desired_set",
            Self::SnapshotStored { .. } => "snapshot_stored",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::DesiredSet {
                agent: id("web-1"),
                version: 1,
                toml: "interval_s = 10\n".into(),
                hash: "ef".repeat(32),
            },
            Self::SnapshotStored {
                agent: id("web-1"),
                object: "web-1/01J".into(),
                size: 4096,
                hash: "01".repeat(32),
            },
        ]
    }
}
