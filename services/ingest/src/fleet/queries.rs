//! The `fleet.q.config` read model (MessagePack request/reply, like every `fleet.q.*` model).
//!
//! Request [`ConfigQuery`]: without `agent`, a [`ConfigSummary`] of every agent fleetbus knows
//! plus the templates; with `agent`, that agent's [`AgentConfigView`] (desired config, overrides,
//! drift, instructions, snapshots). Credential material (passphrase hashes) never leaves.

use fleetbus_projections::configs::Configs;
use fleetbus_projections::State;
use fleetbus_schemas::queries::config::{
    AgentConfigView, AgentLine, ConfigQuery, ConfigSummary, TemplateLine,
};
use fleetbus_schemas::queries::{QueryError, QueryErrorKind, Reply};
use fleetbus_schemas::AgentId;
use serde::Serialize;

/// The summary of all agents.
pub(crate) fn summary(state: &State) -> ConfigSummary {
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
pub(crate) fn agent_view(state: &State, agent: &AgentId) -> Result<AgentConfigView, QueryError> {
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
pub(crate) fn answer(state: &State, payload: &[u8]) -> Vec<u8> {
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
