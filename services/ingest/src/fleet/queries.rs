//! The `fleet.q.config` read model (MessagePack request/reply, like every `fleet.q.*` model).
//!
//! Request [`ConfigQuery`]: without `agent`, a [`ConfigSummary`] of every agent fleetbus knows
//! plus the templates; with `agent`, that agent's [`AgentConfigView`] (desired config, overrides,
//! drift, instructions, snapshots). Credential material (passphrase hashes) never leaves.

use chrono::{DateTime, Utc};
use fleetbus_schemas::queries::{QueryError, QueryErrorKind, Reply};
use fleetbus_schemas::AgentId;
use serde::{Deserialize, Serialize};

use super::fold::{Configs, Desired, DriftState, DriftView, Management, Pending, SnapshotMeta};
use crate::state::State;

/// The model name: `fleet.q.config`.
pub const MODEL: &str = "config";

/// A `fleet.q.config` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigQuery {
    /// One agent; `None`: the summary of all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// Every agent with a config or a report.
    pub agents: Vec<AgentLine>,
    /// Every template.
    pub templates: Vec<TemplateLine>,
}

/// The answer for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The summary of all agents.
pub fn summary(state: &State) -> ConfigSummary {
    let configs: &Configs = &state.configs;
    let agents = configs
        .agents
        .iter()
        .filter_map(|(id, a)| {
            let drift = configs.drift(id)?;
            Some(AgentLine {
                agent: id.clone(),
                management: drift.management,
                state: drift.state,
                template: drift.template,
                desired_version: drift.desired_version,
                applied_version: drift.applied_version,
                differences: drift.differences.len(),
                blocked: state.projections.registry.is_blocked(id),
                snapshots: a.snapshots.len(),
                has_passphrase: a.passphrase_hash.is_some(),
            })
        })
        .collect();
    let templates = configs
        .templates
        .iter()
        .map(|(name, t)| TemplateLine {
            name: name.clone(),
            hash: t.hash.clone(),
            toml: t.toml.clone(),
            volatile: t.volatile.clone(),
            agents: configs
                .agents
                .values()
                .filter(|a| {
                    a.desired
                        .as_ref()
                        .is_some_and(|d| d.template.as_deref() == Some(name))
                })
                .count(),
            actor: t.actor.clone(),
            time: t.time,
        })
        .collect();
    ConfigSummary { agents, templates }
}

/// One agent's view.
pub fn agent_view(state: &State, agent: &AgentId) -> Result<AgentConfigView, QueryError> {
    let configs = &state.configs;
    let (Some(a), Some(drift)) = (configs.agents.get(agent), configs.drift(agent)) else {
        return Err(QueryError {
            kind: QueryErrorKind::NotFound,
            message: format!("agent '{agent}' has neither a desired config nor a report"),
        });
    };
    Ok(AgentConfigView {
        drift,
        desired: a.desired.clone(),
        live_toml: a.live.as_ref().map(|l| l.toml.clone()),
        push: a.push.clone(),
        update: a.update.clone(),
        snapshots: a.snapshots.clone(),
        has_passphrase: a.passphrase_hash.is_some(),
        blocked: state.projections.registry.is_blocked(agent),
    })
}

fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    fleetbus_schemas::encode(reply).unwrap_or_default()
}

/// Answers a `fleet.q.config` request (MessagePack in, MessagePack `Reply` out).
pub fn answer(state: &State, payload: &[u8]) -> Vec<u8> {
    let query: ConfigQuery = if payload.is_empty() {
        ConfigQuery::default()
    } else {
        match fleetbus_schemas::decode(payload) {
            Ok(q) => q,
            Err(e) => {
                return encode::<()>(&Reply::Error(QueryError {
                    kind: QueryErrorKind::BadRequest,
                    message: format!("expected a config query {{agent?}}: {e}"),
                }))
            }
        }
    };
    match query.agent {
        None => encode(&Reply::Ok(summary(state))),
        Some(agent) => match agent_view(state, &agent) {
            Ok(v) => encode(&Reply::Ok(v)),
            Err(e) => encode::<()>(&Reply::Error(e)),
        },
    }
}
