//! The agent ↔ ingest HTTP bodies of the managed-config and asset routes (JSON): what ingest
//! answers and accepts under `/v1/agents/{agent}/config…`, `/ack`, `/snapshots`, `/recover` and
//! `/v1/assets`. The agent, ingest and fleetctl use these types; nobody keeps a copy.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::config::Instruction;
use crate::{AgentId, EventId};

/// The header carrying a retrieval passphrase.
pub const PASSPHRASE_HEADER: &str = "x-fleetbus-passphrase";

/// A pending instruction, as the agent sees it.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionOut {
    /// The id to acknowledge.
    pub id: EventId,
    /// What to do.
    pub instruction: Instruction,
    /// Push: the desired version; update: the agent version to install.
    pub target: String,
}

/// The answer to `GET /v1/agents/{agent}/config`.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredReply {
    /// The agent.
    pub agent: AgentId,
    /// Whether fleetbus holds a config for it.
    pub managed: bool,
    /// Desired version.
    pub version: Option<u64>,
    /// SHA-256 (hex) of `toml`.
    pub hash: Option<String>,
    /// The desired config text: write it as is.
    pub toml: Option<String>,
    /// Key paths the hub ignores in drift.
    pub volatile: Vec<String>,
    /// Instructions not yet acknowledged.
    pub instructions: Vec<InstructionOut>,
    /// The agent is blocked: stay in limited mode.
    pub blocked: bool,
}

/// `PUT /v1/agents/{agent}/config/live`.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveBody {
    /// The desired version the agent applied last, if any.
    #[serde(default)]
    pub version: Option<u64>,
    /// The live config file.
    pub toml: String,
}

/// `POST /v1/agents/{agent}/ack`.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The instruction's id.
    pub request: EventId,
    /// What it was.
    pub instruction: Instruction,
    /// Whether it worked.
    pub ok: bool,
    /// What happened (≤ 1,024 characters).
    #[serde(default)]
    pub message: String,
}

/// The answer to a stored live config, ack or snapshot.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReply {
    /// False when nothing new had to be stored (same live config as last time).
    pub stored: bool,
    /// Log sequence of the event, when stored.
    pub seq: u64,
    /// Snapshot object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// SHA-256 (hex) of what was received.
    pub hash: String,
    /// Bytes received.
    pub size: u64,
}

/// One snapshot in a recovery bundle.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredSnapshot {
    /// Object name.
    pub object: String,
    /// SHA-256 (hex) of the plaintext.
    pub hash: String,
    /// When it was stored.
    pub time: DateTime<Utc>,
    /// The snapshot, base64 (standard alphabet, padded).
    pub data: String,
}

/// The recovery bundle: everything a fresh host needs to become the agent again.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReply {
    /// The agent.
    pub agent: AgentId,
    /// Desired config version.
    pub version: Option<u64>,
    /// The desired config text.
    pub toml: Option<String>,
    /// The latest snapshot.
    pub snapshot: Option<RecoveredSnapshot>,
}

/// One asset in the manifest.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetEntry {
    /// Name (may contain `/`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 (hex) of the content.
    pub sha256: String,
    /// MIME type served with it.
    pub content_type: String,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// `GET /v1/assets`.
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Assets by name.
    pub assets: Vec<AssetEntry>,
}

/// Passphrases are compared as lowercase words separated by single spaces, so "Apple  Tiger"
/// read over the phone matches "apple tiger".
pub fn normalize_passphrase(raw: &str) -> String {
    raw.split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The MIME type for a file name.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "txt" | "md" => "text/plain; charset=utf-8",
        "sh" => "text/x-shellscript; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "toml" => "application/toml",
        "yaml" | "yml" => "application/yaml",
        "tar" => "application/x-tar",
        "gz" | "tgz" => "application/gzip",
        "zip" => "application/zip",
        "deb" => "application/vnd.debian.binary-package",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}
