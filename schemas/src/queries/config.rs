//! The `fleet.q.config` read model: the managed-config status of agents (MessagePack
//! request/reply like every `fleet.q.*` model; JSON in `fleetctl config --json`).
//!
//! Request [`ConfigQuery`]: without `agent`, a [`ConfigSummary`] of every agent fleetbus knows
//! plus the templates; with `agent`, that agent's [`AgentConfigView`] (desired config, overrides,
//! drift, instructions, snapshots). Credential material (passphrase hashes) never leaves.
//! Ingest folds the same types into its state (`fleetbus_projections::configs`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AgentId, EventId};

/// The model name: `fleet.q.config`.
pub const MODEL: &str = super::model::CONFIG;

/// An agent's current desired config.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Version (per agent, monotonic).
    pub version: u64,
    /// The whole desired TOML text.
    pub toml: String,
    /// SHA-256 (hex) of the text.
    pub hash: String,
    /// The template it is built from.
    pub template: Option<String>,
    /// The agent's overrides (`None`: `toml` is the whole config).
    pub overrides: Option<String>,
    /// The agent's own volatile key paths.
    pub volatile: Vec<String>,
    /// Who set it.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Log sequence of the event.
    pub seq: u64,
}

/// An instruction and its outcome.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The `InstructionIssued` event id (what the agent acknowledges).
    pub id: EventId,
    /// Target version (agent version for updates, desired version for pushes).
    pub target: String,
    /// Who asked.
    pub actor: String,
    /// When.
    pub issued: DateTime<Utc>,
    /// The agent's answer, once it came.
    pub ack: Option<Ack>,
}

/// An agent's answer to an instruction.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Whether it worked.
    pub ok: bool,
    /// The agent's words.
    pub message: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// Metadata of one stored snapshot (the bytes live encrypted in the object store).
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Object name in the `snapshots` bucket.
    pub object: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the plaintext.
    pub hash: String,
    /// When it was stored.
    pub time: DateTime<Utc>,
}

/// Whether fleetbus manages an agent's configuration.
#[derive(Debug, Clone, JsonSchema, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Management {
    /// Has a desired config and reports.
    Managed,
    /// Reports, but fleetbus holds no config for it.
    ReportOnly,
    /// Has a desired config but never reported.
    Pending,
}

impl Management {
    /// The wire name (`managed`, `report_only`, `pending`).
    pub fn as_str(self) -> &'static str {
        match self {
            Management::Managed => "managed",
            Management::ReportOnly => "report_only",
            Management::Pending => "pending",
        }
    }
}

/// How an agent's live config relates to its desired config.
#[derive(Debug, Clone, JsonSchema, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Live values equal desired values and the agent confirmed the version.
    InSync,
    /// Values equal, the agent has not yet reported the new version.
    Applying,
    /// Values differ (see `differences`).
    Drifted,
    /// The agent has not sent its live config yet.
    Unknown,
    /// Not managed: there is nothing to drift from.
    Unmanaged,
}

impl DriftState {
    /// The wire name (`in_sync`, `applying`, `drifted`, `unknown`, `unmanaged`).
    pub fn as_str(self) -> &'static str {
        match self {
            DriftState::InSync => "in_sync",
            DriftState::Applying => "applying",
            DriftState::Drifted => "drifted",
            DriftState::Unknown => "unknown",
            DriftState::Unmanaged => "unmanaged",
        }
    }
}

/// Drift of one agent, as `fleetctl config drift` and the web UI show it (JSON at the edges).
#[derive(Debug, Clone, JsonSchema, PartialEq, Serialize, Deserialize)]
pub struct DriftView {
    /// The agent.
    pub agent: AgentId,
    /// Managed, report-only or pending.
    pub management: Management,
    /// The summary.
    pub state: DriftState,
    /// Desired version.
    pub desired_version: Option<u64>,
    /// Desired text hash.
    pub desired_hash: Option<String>,
    /// The template in use.
    pub template: Option<String>,
    /// The version the agent last said it applied.
    pub applied_version: Option<u64>,
    /// Hash of the live config the agent sent last.
    pub live_hash: Option<String>,
    /// Whether the agent ever sent its live config.
    pub live_known: bool,
    /// Key paths left out of the comparison.
    pub volatile: Vec<String>,
    /// Per-key differences.
    pub differences: Vec<Difference>,
    /// Why the comparison could not be made (a config that no longer parses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a key differs between the desired and the live config.
#[derive(Debug, Clone, JsonSchema, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Desired has it, the live config does not.
    Missing,
    /// The live config has it, desired does not.
    Unexpected,
    /// Both have it with different values (or types).
    Changed,
}

impl DiffKind {
    /// The wire name (`missing`, `unexpected`, `changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Unexpected => "unexpected",
            DiffKind::Changed => "changed",
        }
    }
}

/// One per-key difference. Values are JSON so the web UI and `--json` show them as they are.
#[derive(Debug, Clone, JsonSchema, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// Dotted key path; array elements are numbered (`servers.0.port`).
    pub path: String,
    /// What kind of difference.
    pub kind: DiffKind,
    /// The desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<serde_json::Value>,
    /// The live value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<serde_json::Value>,
}

/// A `fleet.q.config` request.
#[derive(Debug, Clone, JsonSchema, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigQuery {
    /// One agent; `None`: the summary of all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// One line of the summary.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLine {
    /// The agent.
    pub agent: AgentId,
    /// Managed, report-only or pending.
    pub management: Management,
    /// Drift state.
    pub state: DriftState,
    /// Template in use.
    pub template: Option<String>,
    /// Desired version.
    pub desired_version: Option<u64>,
    /// Version the agent applied.
    pub applied_version: Option<u64>,
    /// Number of differing keys.
    pub differences: usize,
    /// Blocked in the registry.
    pub blocked: bool,
    /// Stored snapshots.
    pub snapshots: usize,
    /// A retrieval passphrase is set.
    pub has_passphrase: bool,
}

/// A template in the summary.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLine {
    /// Name.
    pub name: String,
    /// SHA-256 (hex) of its text.
    pub hash: String,
    /// Its TOML text.
    pub toml: String,
    /// Volatile key paths.
    pub volatile: Vec<String>,
    /// Agents using it.
    pub agents: usize,
    /// Who changed it last.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// The answer without `agent`.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// Every agent with a config or a report.
    pub agents: Vec<AgentLine>,
    /// Every template.
    pub templates: Vec<TemplateLine>,
}

/// The answer for one agent.
#[derive(Debug, Clone, JsonSchema, PartialEq, Serialize, Deserialize)]
pub struct AgentConfigView {
    /// Drift and status.
    pub drift: DriftView,
    /// The desired config.
    pub desired: Option<Desired>,
    /// The live config text the agent sent last.
    pub live_toml: Option<String>,
    /// The last push.
    pub push: Option<Pending>,
    /// The last update.
    pub update: Option<Pending>,
    /// Stored snapshots, oldest first.
    pub snapshots: Vec<SnapshotMeta>,
    /// A retrieval passphrase is set.
    pub has_passphrase: bool,
    /// Blocked in the registry.
    pub blocked: bool,
}
