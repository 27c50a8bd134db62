//! `Configs`: the managed-config read model, a pure fold of the log (desired config per agent
//! and its history head, templates, live configs, pending instructions, snapshot metadata,
//! passphrase hashes). Ingest folds it in the writer together with the projections.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::config::Instruction;
use fleetbus_schemas::events::{AgentEvent, ConfigEvent, Event};
use fleetbus_schemas::{AgentId, Envelope};
use serde::{Deserialize, Serialize};

pub mod merge;

pub use fleetbus_schemas::queries::config::{
    Ack, Desired, Difference, DriftState, DriftView, Management, Pending, SnapshotMeta,
};

/// A config template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// TOML text.
    pub toml: String,
    /// SHA-256 (hex) of the text.
    pub hash: String,
    /// Volatile key paths for every agent using it.
    pub volatile: Vec<String>,
    /// Who changed it last.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// The config an agent last said it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// The desired version it applied last, if any.
    pub version: Option<u64>,
    /// SHA-256 (hex) of the live file.
    pub hash: String,
    /// The live file.
    pub toml: String,
    /// When it was sent.
    pub time: DateTime<Utc>,
}

/// What the agent's last report said about its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReport {
    /// When.
    pub time: DateTime<Utc>,
    /// The agent's version.
    pub agent_version: String,
    /// Applied desired version.
    pub config_version: Option<u64>,
    /// Hash of the live config.
    pub config_hash: Option<String>,
}

/// Everything fleetbus holds about one agent's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The desired config; `None`: not managed.
    pub desired: Option<Desired>,
    /// Highest version ever given (versions keep counting across release and re-manage).
    pub last_version: u64,
    /// The live config the agent sent last.
    pub live: Option<Live>,
    /// What its last report said.
    pub report: Option<LastReport>,
    /// The last push instruction.
    pub push: Option<Pending>,
    /// The last update instruction.
    pub update: Option<Pending>,
    /// Stored snapshots, oldest first.
    pub snapshots: Vec<SnapshotMeta>,
    /// argon2id hash of the retrieval passphrase. Credential material: never in a reply.
    pub passphrase_hash: Option<String>,
}

impl AgentConfig {
    /// Managed, report-only or pending; `None` for an agent with neither a config nor a report.
    pub fn management(&self) -> Option<Management> {
        match (&self.desired, &self.report) {
            (Some(_), Some(_)) => Some(Management::Managed),
            (Some(_), None) => Some(Management::Pending),
            (None, Some(_)) => Some(Management::ReportOnly),
            (None, None) => None,
        }
    }
}

/// The managed-config read model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configs {
    /// Templates by name.
    pub templates: BTreeMap<String, Template>,
    /// Agents by id.
    pub agents: BTreeMap<AgentId, AgentConfig>,
}

impl Configs {
    /// Folds one event.
    pub fn apply(&mut self, seq: u64, env: &Envelope) {
        match &env.event {
            Event::Agent(AgentEvent::Reported(r)) => {
                self.agents.entry(r.agent.clone()).or_default().report = Some(LastReport {
                    time: env.time,
                    agent_version: r.agent_version.clone(),
                    config_version: r.config_version,
                    config_hash: r.config_hash.clone(),
                });
            }
            Event::Config(e) => self.apply_config(seq, env, e),
            _ => {}
        }
    }

    fn apply_config(&mut self, seq: u64, env: &Envelope, event: &ConfigEvent) {
        let actor = env.actor.name.clone();
        match event {
            ConfigEvent::TemplateSet {
                template,
                toml,
                hash,
                volatile,
            } => {
                self.templates.insert(
                    template.clone(),
                    Template {
                        toml: toml.clone(),
                        hash: hash.clone(),
                        volatile: volatile.clone(),
                        actor,
                        time: env.time,
                    },
                );
            }
            ConfigEvent::TemplateRemoved { template } => {
                self.templates.remove(template);
            }
            ConfigEvent::DesiredSet {
                agent,
                version,
                toml,
                hash,
                template,
                overrides,
                volatile,
            } => {
                let a = self.agents.entry(agent.clone()).or_default();
                a.last_version = a.last_version.max(*version);
                a.desired = Some(Desired {
                    version: *version,
                    toml: toml.clone(),
                    hash: hash.clone(),
                    template: template.clone(),
                    overrides: overrides.clone(),
                    volatile: volatile.clone(),
                    actor,
                    time: env.time,
                    seq,
                });
            }
            ConfigEvent::Released { agent } => {
                if let Some(a) = self.agents.get_mut(agent) {
                    a.desired = None;
                    a.push = None;
                }
            }
            ConfigEvent::LiveReported {
                agent,
                version,
                hash,
                toml,
            } => {
                self.agents.entry(agent.clone()).or_default().live = Some(Live {
                    version: *version,
                    hash: hash.clone(),
                    toml: toml.clone(),
                    time: env.time,
                });
            }
            ConfigEvent::InstructionIssued {
                agent,
                instruction,
                target,
            } => {
                let pending = Some(Pending {
                    id: env.id,
                    target: target.clone(),
                    actor,
                    issued: env.time,
                    ack: None,
                });
                let a = self.agents.entry(agent.clone()).or_default();
                match instruction {
                    Instruction::Push => a.push = pending,
                    Instruction::Update => a.update = pending,
                }
            }
            ConfigEvent::InstructionAcknowledged {
                agent,
                request,
                instruction,
                ok,
                message,
            } => {
                let Some(a) = self.agents.get_mut(agent) else {
                    return;
                };
                let slot = match instruction {
                    Instruction::Push => &mut a.push,
                    Instruction::Update => &mut a.update,
                };
                if let Some(p) = slot.as_mut().filter(|p| p.id == *request) {
                    p.ack = Some(Ack {
                        ok: *ok,
                        message: message.clone(),
                        time: env.time,
                    });
                }
            }
            ConfigEvent::SnapshotStored {
                agent,
                object,
                size,
                hash,
            } => {
                let a = self.agents.entry(agent.clone()).or_default();
                a.snapshots.retain(|s| s.object != *object);
                a.snapshots.push(SnapshotMeta {
                    object: object.clone(),
                    size: *size,
                    hash: hash.clone(),
                    time: env.time,
                });
            }
            ConfigEvent::SnapshotDeleted { agent, object } => {
                if let Some(a) = self.agents.get_mut(agent) {
                    a.snapshots.retain(|s| s.object != *object);
                }
            }
            ConfigEvent::PassphraseSet {
                agent,
                passphrase_hash,
            } => {
                self.agents
                    .entry(agent.clone())
                    .or_default()
                    .passphrase_hash = Some(passphrase_hash.clone());
            }
            ConfigEvent::RecoveryAttempted { .. } => {}
        }
    }

    /// The volatile key paths in effect for an agent: its own plus its template's.
    pub fn volatile(&self, desired: &Desired) -> Vec<String> {
        let mut v = desired.volatile.clone();
        if let Some(t) = desired
            .template
            .as_ref()
            .and_then(|t| self.templates.get(t))
        {
            v.extend(t.volatile.iter().cloned());
        }
        v.sort();
        v.dedup();
        v
    }

    /// The drift view of one agent (`None` if fleetbus knows nothing about it).
    pub fn drift(&self, agent: &AgentId) -> Option<DriftView> {
        let a = self.agents.get(agent)?;
        let management = a.management()?;
        let mut view = DriftView {
            agent: agent.clone(),
            management,
            desired_version: a.desired.as_ref().map(|d| d.version),
            desired_hash: a.desired.as_ref().map(|d| d.hash.clone()),
            template: a.desired.as_ref().and_then(|d| d.template.clone()),
            applied_version: a
                .report
                .as_ref()
                .and_then(|r| r.config_version)
                .or_else(|| a.live.as_ref().and_then(|l| l.version)),
            live_hash: a.live.as_ref().map(|l| l.hash.clone()),
            live_known: a.live.is_some(),
            state: DriftState::Unknown,
            volatile: Vec::new(),
            differences: Vec::new(),
            error: None,
        };
        let (Some(desired), Some(live)) = (&a.desired, &a.live) else {
            view.state = if a.desired.is_none() {
                DriftState::Unmanaged
            } else {
                DriftState::Unknown
            };
            return Some(view);
        };
        view.volatile = self.volatile(desired);
        let parsed = merge::parse("desired config", &desired.toml)
            .and_then(|d| merge::parse("live config", &live.toml).map(|l| (d, l)));
        match parsed {
            Ok((d, l)) => {
                view.differences = merge::drift(&d, &l, &view.volatile);
                view.state = if !view.differences.is_empty() {
                    DriftState::Drifted
                } else if view.applied_version == Some(desired.version) {
                    DriftState::InSync
                } else {
                    // Same values, but the agent has not confirmed this version yet.
                    DriftState::Applying
                };
            }
            Err(e) => {
                view.state = DriftState::Drifted;
                view.error = Some(e);
            }
        }
        Some(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::EventId;

    /// SHA-256 (hex) of a config text, as ingest's `decide::text_hash` computes it.
    fn text_hash(text: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
    use fleetbus_schemas::events::agent::{AgentReport, Resources};
    use fleetbus_schemas::{Actor, HostId};

    fn agent() -> AgentId {
        AgentId::new("web-1").unwrap()
    }

    fn env(event: Event) -> Envelope {
        Envelope::new("test", Actor::service("test"), None, event)
    }

    fn desired(version: u64, toml: &str) -> Envelope {
        env(Event::Config(ConfigEvent::DesiredSet {
            agent: agent(),
            version,
            toml: toml.into(),
            hash: text_hash(toml),
            template: None,
            overrides: None,
            volatile: vec![],
        }))
    }

    fn reported(version: Option<u64>) -> Envelope {
        env(Event::Agent(AgentEvent::Reported(AgentReport {
            agent: agent(),
            host: HostId::new("web-1").unwrap(),
            agent_version: "0.1.0".into(),
            resources: Resources::default(),
            services: vec![],
            config_version: version,
            config_hash: None,
        })))
    }

    fn fold(events: &[Envelope]) -> Configs {
        let mut c = Configs::default();
        for (i, e) in events.iter().enumerate() {
            c.apply(i as u64 + 1, e);
        }
        c
    }

    #[test]
    fn pending_then_managed_then_released_keeps_counting_versions() {
        let c = fold(&[desired(1, "a = 1\n")]);
        assert_eq!(c.agents[&agent()].management(), Some(Management::Pending));
        assert_eq!(c.drift(&agent()).unwrap().state, DriftState::Unknown);
        let c = fold(&[desired(1, "a = 1\n"), reported(None)]);
        assert_eq!(c.agents[&agent()].management(), Some(Management::Managed));
        let released = env(Event::Config(ConfigEvent::Released { agent: agent() }));
        let c = fold(&[
            desired(1, "a = 1\n"),
            reported(None),
            desired(2, "a = 2\n"),
            released,
        ]);
        let a = &c.agents[&agent()];
        assert_eq!(a.management(), Some(Management::ReportOnly));
        assert_eq!(
            a.last_version, 2,
            "the next desired config must be version 3"
        );
        assert_eq!(c.drift(&agent()).unwrap().state, DriftState::Unmanaged);
        assert_eq!(fold(&[]).drift(&agent()), None);
    }

    #[test]
    fn an_ack_settles_only_the_instruction_it_names() {
        let issued = env(Event::Config(ConfigEvent::InstructionIssued {
            agent: agent(),
            instruction: Instruction::Update,
            target: "0.2.0".into(),
        }));
        let ack = |request| {
            env(Event::Config(ConfigEvent::InstructionAcknowledged {
                agent: agent(),
                request,
                instruction: Instruction::Update,
                ok: true,
                message: "done".into(),
            }))
        };
        let c = fold(&[issued.clone(), ack(EventId::new())]);
        assert!(c.agents[&agent()].update.as_ref().unwrap().ack.is_none());
        let c = fold(&[issued.clone(), ack(issued.id)]);
        assert!(
            c.agents[&agent()]
                .update
                .as_ref()
                .unwrap()
                .ack
                .as_ref()
                .unwrap()
                .ok
        );
        assert!(c.agents[&agent()].push.is_none());
    }

    #[test]
    fn snapshots_are_listed_oldest_first_and_deletions_remove_them() {
        let stored = |object: &str| {
            env(Event::Config(ConfigEvent::SnapshotStored {
                agent: agent(),
                object: object.into(),
                size: 10,
                hash: "00".repeat(32),
            }))
        };
        let deleted = env(Event::Config(ConfigEvent::SnapshotDeleted {
            agent: agent(),
            object: "web-1/a".into(),
        }));
        let c = fold(&[
            stored("web-1/a"),
            stored("web-1/b"),
            stored("web-1/c"),
            deleted,
        ]);
        let names: Vec<&str> = c.agents[&agent()]
            .snapshots
            .iter()
            .map(|s| s.object.as_str())
            .collect();
        assert_eq!(names, vec!["web-1/b", "web-1/c"]);
    }

    #[test]
    fn drift_is_in_sync_only_once_the_agent_confirmed_the_version() {
        let live = |toml: &str, version| {
            env(Event::Config(ConfigEvent::LiveReported {
                agent: agent(),
                version,
                hash: text_hash(toml),
                toml: toml.into(),
            }))
        };
        let c = fold(&[
            desired(3, "a = 1\nb = 2\n"),
            reported(Some(2)),
            live("b = 2\na = 1\n", Some(2)),
        ]);
        assert_eq!(c.drift(&agent()).unwrap().state, DriftState::Applying);
        let c = fold(&[
            desired(3, "a = 1\nb = 2\n"),
            reported(Some(3)),
            live("b = 2\na = 1\n", Some(3)),
        ]);
        assert_eq!(c.drift(&agent()).unwrap().state, DriftState::InSync);
        let c = fold(&[
            desired(3, "a = 1\n"),
            reported(Some(3)),
            live("a = [", Some(3)),
        ]);
        let d = c.drift(&agent()).unwrap();
        assert_eq!(d.state, DriftState::Drifted);
        assert!(d.error.unwrap().contains("live config is not valid TOML"));
    }
}
