//! Config commands (`fleet.cmd.config.*`) validated against the registry and the [`Configs`]
//! fold; accepted ones become config events. Called by ingest's command dispatcher.

use fleetbus_projections::Registry;
use fleetbus_schemas::commands::ConfigCommand;
use fleetbus_schemas::events::config::Instruction;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{ConfigEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Command};
use sha2::{Digest, Sha256};
use toml::Table;

use crate::commands::Rejection;
use fleetbus_projections::configs::merge;
use fleetbus_projections::configs::{Configs, Desired};

/// Most agents one template change may re-version in one command (the events of one command
/// get ids numbered by a byte).
pub(crate) const MAX_AGENTS_PER_TEMPLATE: usize = 250;

fn reject(kind: RejectKind, message: impl Into<String>) -> Rejection {
    Rejection {
        kind,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    reject(RejectKind::Invalid, message)
}

/// SHA-256 (hex) of a config text, as agents compute it over their live file.
pub(crate) fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn check_template_name(name: &str) -> Result<(), Rejection> {
    fleetbus_schemas::validate_name("template name", name).map_err(|e| invalid(e.to_string()))
}

fn check_volatile(paths: &[String]) -> Result<(), Rejection> {
    if paths.len() > 100 {
        return Err(invalid("at most 100 volatile key paths"));
    }
    for p in paths {
        if p.is_empty()
            || p.len() > 256
            || p.split('.').any(str::is_empty)
            || p.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(format!(
                "volatile key path {p:?} must be dotted keys like 'a.b' or 'servers.*.pid'"
            )));
        }
    }
    Ok(())
}

fn known_agent(registry: &Registry, agent: &AgentId) -> Result<(), Rejection> {
    if registry.agents.contains_key(agent) {
        Ok(())
    } else {
        Err(reject(
            RejectKind::NotFound,
            format!("agent '{agent}' has never been issued a key"),
        ))
    }
}

/// The merged desired config of an agent built from `template` and `overrides`.
fn build(
    configs: &Configs,
    template: Option<&str>,
    overrides: &Table,
) -> Result<(String, Table), Rejection> {
    let merged = match template {
        Some(name) => {
            let t = configs.templates.get(name).ok_or_else(|| {
                reject(
                    RejectKind::NotFound,
                    format!("template '{name}' does not exist; create it with set_template"),
                )
            })?;
            let base = merge::parse("template", &t.toml).map_err(invalid)?;
            merge::deep_merge(&base, overrides)
        }
        None => overrides.clone(),
    };
    let text = merge::render(&merged).map_err(invalid)?;
    if text.len() > merge::MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "the merged config is {} bytes, at most {} are allowed",
            text.len(),
            merge::MAX_CONFIG_BYTES
        )));
    }
    Ok((text, merged))
}

fn desired_event(
    configs: &Configs,
    agent: &AgentId,
    toml: String,
    template: Option<String>,
    overrides: Option<String>,
    volatile: Vec<String>,
) -> Event {
    let version = configs.agents.get(agent).map_or(0, |a| a.last_version) + 1;
    Event::Config(ConfigEvent::DesiredSet {
        agent: agent.clone(),
        version,
        hash: text_hash(&toml),
        toml,
        template,
        overrides,
        volatile,
    })
}

/// Validates a config command and returns the events it causes.
pub(crate) fn decide(
    registry: &Registry,
    configs: &Configs,
    actor: &Actor,
    command: &ConfigCommand,
) -> Result<Vec<Event>, Rejection> {
    crate::commands::authorize(actor, &Command::Config(command.clone()))?;
    match command {
        ConfigCommand::SetDesired { agent, toml } => {
            set_desired(registry, configs, agent, toml).map(|e| vec![e])
        }
        ConfigCommand::Assign {
            agent,
            template,
            overrides,
            volatile,
        } => assign(
            registry,
            configs,
            agent,
            template.as_deref(),
            overrides,
            volatile,
        )
        .map(|e| vec![e]),
        ConfigCommand::SetTemplate {
            template,
            toml,
            volatile,
        } => set_template(configs, template, toml, volatile),
        ConfigCommand::RemoveTemplate { template } => {
            remove_template(configs, template).map(|e| vec![e])
        }
        ConfigCommand::Import { agent } => import(registry, configs, agent).map(|e| vec![e]),
        ConfigCommand::Release { agent } => {
            managed(configs, agent)?;
            Ok(vec![Event::Config(ConfigEvent::Released {
                agent: agent.clone(),
            })])
        }
        ConfigCommand::Push { agent } => {
            let d = managed(configs, agent)?;
            Ok(vec![Event::Config(ConfigEvent::InstructionIssued {
                agent: agent.clone(),
                instruction: Instruction::Push,
                target: d.version.to_string(),
            })])
        }
        ConfigCommand::TriggerUpdate { agent, version } => {
            trigger_update(registry, agent, version).map(|e| vec![e])
        }
        ConfigCommand::SetPassphrase {
            agent,
            passphrase_hash,
        } => set_passphrase(registry, agent, passphrase_hash).map(|e| vec![e]),
    }
}

/// The desired config of an agent that is managed (has one).
fn managed<'a>(configs: &'a Configs, agent: &AgentId) -> Result<&'a Desired, Rejection> {
    configs
        .agents
        .get(agent)
        .and_then(|a| a.desired.as_ref())
        .ok_or_else(|| {
            reject(
                RejectKind::NotFound,
                format!("agent '{agent}' is not managed (no desired config)"),
            )
        })
}

/// `set_desired`: a whole config text, no template.
fn set_desired(
    registry: &Registry,
    configs: &Configs,
    agent: &AgentId,
    toml: &str,
) -> Result<Event, Rejection> {
    known_agent(registry, agent)?;
    merge::parse("config", toml).map_err(invalid)?;
    Ok(desired_event(
        configs,
        agent,
        toml.to_string(),
        None,
        None,
        Vec::new(),
    ))
}

/// `assign`: a template (or none) plus overrides.
fn assign(
    registry: &Registry,
    configs: &Configs,
    agent: &AgentId,
    template: Option<&str>,
    overrides: &str,
    volatile: &[String],
) -> Result<Event, Rejection> {
    known_agent(registry, agent)?;
    check_volatile(volatile)?;
    let over = merge::parse("overrides", overrides).map_err(invalid)?;
    let (text, _) = build(configs, template, &over)?;
    Ok(desired_event(
        configs,
        agent,
        text,
        template.map(str::to_string),
        Some(overrides.to_string()),
        volatile.to_vec(),
    ))
}

/// `set_template`: the template, and a new desired version for every agent whose merged config
/// it changes.
fn set_template(
    configs: &Configs,
    template: &str,
    toml: &str,
    volatile: &[String],
) -> Result<Vec<Event>, Rejection> {
    check_template_name(template)?;
    check_volatile(volatile)?;
    let base = merge::parse("template", toml).map_err(invalid)?;
    let mut events = vec![Event::Config(ConfigEvent::TemplateSet {
        template: template.to_string(),
        toml: toml.to_string(),
        hash: text_hash(toml),
        volatile: volatile.to_vec(),
    })];
    let users: Vec<_> = configs
        .agents
        .iter()
        .filter_map(|(id, a)| a.desired.as_ref().map(|d| (id, d)))
        .filter(|(_, d)| d.template.as_deref() == Some(template))
        .collect();
    if users.len() > MAX_AGENTS_PER_TEMPLATE {
        return Err(reject(
            RejectKind::Conflict,
            format!(
                "template '{template}' is used by {} agents; one change may re-version at most {MAX_AGENTS_PER_TEMPLATE} — split it into several templates",
                users.len()
            ),
        ));
    }
    for (agent, d) in users {
        let over = match &d.overrides {
            Some(o) => merge::parse("overrides", o).map_err(invalid)?,
            None => Table::new(),
        };
        let text = merge::render(&merge::deep_merge(&base, &over)).map_err(invalid)?;
        if text == d.toml {
            continue;
        }
        events.push(desired_event(
            configs,
            agent,
            text,
            d.template.clone(),
            d.overrides.clone(),
            d.volatile.clone(),
        ));
    }
    Ok(events)
}

/// `remove_template`: only when no agent uses it.
fn remove_template(configs: &Configs, template: &str) -> Result<Event, Rejection> {
    if !configs.templates.contains_key(template) {
        return Err(reject(
            RejectKind::NotFound,
            format!("template '{template}' does not exist"),
        ));
    }
    let users: Vec<String> = configs
        .agents
        .iter()
        .filter(|(_, a)| {
            a.desired
                .as_ref()
                .is_some_and(|d| d.template.as_deref() == Some(template))
        })
        .map(|(id, _)| id.to_string())
        .collect();
    if !users.is_empty() {
        return Err(reject(
            RejectKind::Conflict,
            format!(
                "template '{template}' is used by {}; assign them another config first",
                users.join(", ")
            ),
        ));
    }
    Ok(Event::Config(ConfigEvent::TemplateRemoved {
        template: template.to_string(),
    }))
}

/// `import`: the live config becomes the desired one.
fn import(registry: &Registry, configs: &Configs, agent: &AgentId) -> Result<Event, Rejection> {
    known_agent(registry, agent)?;
    let a = configs.agents.get(agent);
    let live = a.and_then(|a| a.live.as_ref()).ok_or_else(|| {
        reject(
            RejectKind::NotFound,
            format!("agent '{agent}' has not reported a live config yet"),
        )
    })?;
    let live_table = merge::parse("the live config", &live.toml).map_err(invalid)?;
    let desired = a.and_then(|a| a.desired.as_ref());
    if let Some(event) = import_keeping_template(configs, agent, desired, &live_table)? {
        return Ok(event);
    }
    Ok(desired_event(
        configs,
        agent,
        live.toml.clone(),
        None,
        None,
        desired.map(|d| d.volatile.clone()).unwrap_or_default(),
    ))
}

/// Keep the template when the live config can be expressed as template + overlay; otherwise
/// (`None`) the live file becomes the whole desired config.
fn import_keeping_template(
    configs: &Configs,
    agent: &AgentId,
    desired: Option<&Desired>,
    live_table: &Table,
) -> Result<Option<Event>, Rejection> {
    let Some((d, name, t)) = desired.and_then(|d| {
        let name = d.template.as_ref()?;
        Some((d, name, configs.templates.get(name)?))
    }) else {
        return Ok(None);
    };
    let base = merge::parse("template", &t.toml).map_err(invalid)?;
    let over = merge::overlay(&base, live_table);
    if !merge::values_equal(
        &toml::Value::Table(merge::deep_merge(&base, &over)),
        &toml::Value::Table(live_table.clone()),
    ) {
        return Ok(None);
    }
    let overrides = merge::render(&over).map_err(invalid)?;
    let (text, _) = build(configs, Some(name), &over)?;
    Ok(Some(desired_event(
        configs,
        agent,
        text,
        Some(name.clone()),
        Some(overrides),
        d.volatile.clone(),
    )))
}

/// `trigger_update`: tell the agent to update itself to a version.
fn trigger_update(registry: &Registry, agent: &AgentId, version: &str) -> Result<Event, Rejection> {
    known_agent(registry, agent)?;
    if version.is_empty()
        || version.len() > 64
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
    {
        return Err(invalid(format!(
            "version {version:?} must be 1–64 of a-z, A-Z, 0-9, '.', '-', '+', '_' (like 0.2.0)"
        )));
    }
    Ok(Event::Config(ConfigEvent::InstructionIssued {
        agent: agent.clone(),
        instruction: Instruction::Update,
        target: version.to_string(),
    }))
}

/// `set_passphrase`: the argon2id hash of the passphrase that unlocks an agent's snapshots.
fn set_passphrase(
    registry: &Registry,
    agent: &AgentId,
    passphrase_hash: &str,
) -> Result<Event, Rejection> {
    known_agent(registry, agent)?;
    match argon2::PasswordHash::new(passphrase_hash) {
        Ok(h) if h.algorithm.as_str() == "argon2id" && h.hash.is_some() => {}
        _ => {
            return Err(invalid(
                "passphrase_hash must be an argon2id PHC string ($argon2id$v=19$…)",
            ))
        }
    }
    Ok(Event::Config(ConfigEvent::PassphraseSet {
        agent: agent.clone(),
        passphrase_hash: passphrase_hash.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_projections::registry::AgentRecord;
    use fleetbus_schemas::{Envelope, HostId, UserRole};

    fn agent(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        for a in ["web-1", "web-2"] {
            r.agents.insert(
                agent(a),
                AgentRecord {
                    host: HostId::new(a).unwrap(),
                    key_id: Some("k".into()),
                    key_hash: Some("00".repeat(32)),
                    blocked: false,
                    block_reason: None,
                },
            );
        }
        r
    }

    fn admin() -> Actor {
        Actor::user("ada", UserRole::Admin)
    }

    /// Decides and folds, like ingest does.
    fn run(
        reg: &Registry,
        configs: &mut Configs,
        seq: &mut u64,
        cmd: ConfigCommand,
    ) -> Result<Vec<Event>, Rejection> {
        let events = decide(reg, configs, &admin(), &cmd)?;
        for e in &events {
            *seq += 1;
            configs.apply(*seq, &Envelope::new("ingest", admin(), None, e.clone()));
        }
        Ok(events)
    }

    #[test]
    fn template_changes_reversion_every_agent_using_it_and_only_them() {
        let reg = registry();
        let mut c = Configs::default();
        let mut seq = 0;
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::SetTemplate {
                template: "web".into(),
                toml: "interval = 30\n[nginx]\nworkers = 4\n".into(),
                volatile: vec!["nginx.pid".into()],
            },
        )
        .unwrap();
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::Assign {
                agent: agent("web-1"),
                template: Some("web".into()),
                overrides: "[nginx]\nworkers = 8\n".into(),
                volatile: vec![],
            },
        )
        .unwrap();
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::SetDesired {
                agent: agent("web-2"),
                toml: "plain = true\n".into(),
            },
        )
        .unwrap();
        let d1 = c.agents[&agent("web-1")].desired.clone().unwrap();
        assert_eq!(d1.version, 1);
        assert_eq!(
            merge::parse("t", &d1.toml).unwrap()["nginx"]["workers"].as_integer(),
            Some(8)
        );
        let events = run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::SetTemplate {
                template: "web".into(),
                toml: "interval = 60\n[nginx]\nworkers = 4\n".into(),
                volatile: vec![],
            },
        )
        .unwrap();
        assert_eq!(events.len(), 2, "template + web-1 only: {events:?}");
        let d1 = c.agents[&agent("web-1")].desired.clone().unwrap();
        assert_eq!(d1.version, 2);
        let t = merge::parse("t", &d1.toml).unwrap();
        assert_eq!(t["interval"].as_integer(), Some(60));
        assert_eq!(t["nginx"]["workers"].as_integer(), Some(8));
        assert_eq!(
            c.agents[&agent("web-2")].desired.as_ref().unwrap().version,
            1
        );
        // The template cannot go while web-1 uses it.
        let e = run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::RemoveTemplate {
                template: "web".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, RejectKind::Conflict);
        assert!(e.message.contains("web-1"), "{}", e.message);
    }

    #[test]
    fn import_keeps_the_template_when_it_can_and_makes_desired_equal_live() {
        let reg = registry();
        let mut c = Configs::default();
        let mut seq = 0;
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::SetTemplate {
                template: "web".into(),
                toml: "a = 1\nb = 2\n".into(),
                volatile: vec![],
            },
        )
        .unwrap();
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::Assign {
                agent: agent("web-1"),
                template: Some("web".into()),
                overrides: String::new(),
                volatile: vec![],
            },
        )
        .unwrap();
        let live = |c: &mut Configs, seq: &mut u64, text: &str| {
            *seq += 1;
            c.apply(
                *seq,
                &Envelope::new(
                    "agent",
                    Actor::agent("web-1"),
                    None,
                    Event::Config(ConfigEvent::LiveReported {
                        agent: agent("web-1"),
                        version: Some(1),
                        hash: text_hash(text),
                        toml: text.into(),
                    }),
                ),
            );
        };
        live(&mut c, &mut seq, "b = 3\na = 1\nc = 4\n");
        assert_eq!(c.drift(&agent("web-1")).unwrap().differences.len(), 2);
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::Import {
                agent: agent("web-1"),
            },
        )
        .unwrap();
        let d = c.agents[&agent("web-1")].desired.clone().unwrap();
        assert_eq!(d.template.as_deref(), Some("web"));
        assert_eq!(
            merge::parse("o", d.overrides.as_deref().unwrap()).unwrap(),
            merge::parse("o", "b = 3\nc = 4\n").unwrap()
        );
        assert!(c.drift(&agent("web-1")).unwrap().differences.is_empty());
        // A live config lacking a template key detaches from the template.
        live(&mut c, &mut seq, "b = 3\n");
        run(
            &reg,
            &mut c,
            &mut seq,
            ConfigCommand::Import {
                agent: agent("web-1"),
            },
        )
        .unwrap();
        let d = c.agents[&agent("web-1")].desired.clone().unwrap();
        assert_eq!(d.template, None);
        assert_eq!(d.toml, "b = 3\n");
        assert_eq!(d.version, 3);
    }

    #[test]
    fn bad_commands_are_rejected_with_the_reason_and_change_nothing() {
        let reg = registry();
        let mut c = Configs::default();
        let mut seq = 0;
        let cases = [
            (
                ConfigCommand::SetDesired {
                    agent: agent("nobody"),
                    toml: "a = 1".into(),
                },
                RejectKind::NotFound,
                "never been issued",
            ),
            (
                ConfigCommand::SetDesired {
                    agent: agent("web-1"),
                    toml: "a = ".into(),
                },
                RejectKind::Invalid,
                "not valid TOML",
            ),
            (
                ConfigCommand::Assign {
                    agent: agent("web-1"),
                    template: Some("nope".into()),
                    overrides: String::new(),
                    volatile: vec![],
                },
                RejectKind::NotFound,
                "template 'nope'",
            ),
            (
                ConfigCommand::SetTemplate {
                    template: "Bad Name".into(),
                    toml: String::new(),
                    volatile: vec![],
                },
                RejectKind::Invalid,
                "template name",
            ),
            (
                ConfigCommand::Import {
                    agent: agent("web-1"),
                },
                RejectKind::NotFound,
                "live config",
            ),
            (
                ConfigCommand::Push {
                    agent: agent("web-1"),
                },
                RejectKind::NotFound,
                "not managed",
            ),
            (
                ConfigCommand::TriggerUpdate {
                    agent: agent("web-1"),
                    version: "1; rm -rf /".into(),
                },
                RejectKind::Invalid,
                "version",
            ),
            (
                ConfigCommand::SetPassphrase {
                    agent: agent("web-1"),
                    passphrase_hash: "plain".into(),
                },
                RejectKind::Invalid,
                "argon2id",
            ),
        ];
        for (cmd, kind, text) in cases {
            let e = run(&reg, &mut c, &mut seq, cmd.clone()).unwrap_err();
            assert_eq!(e.kind, kind, "{cmd:?}");
            assert!(e.message.contains(text), "{cmd:?}: {}", e.message);
        }
        assert_eq!(c, Configs::default());
        let viewer = Actor::user("v", UserRole::Viewer);
        let e = decide(
            &reg,
            &c,
            &viewer,
            &ConfigCommand::SetDesired {
                agent: agent("web-1"),
                toml: String::new(),
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, RejectKind::Forbidden);
    }
}
