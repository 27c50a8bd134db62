//! `decide` for the areas ingest owns: a command, validated against the current projections,
//! becomes the events it causes or a [`Rejection`]. One function per command family; the config
//! family lives in [`crate::fleet::decide`].

use fleetbus_projections::{Registry, State};
use fleetbus_schemas::commands::{AgentCommand, AlertCommand, HostCommand, UserCommand};
use fleetbus_schemas::events::host::HostSpec;
use fleetbus_schemas::events::service::{ServiceEvent, ServiceManager, ServiceSpec};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{AgentEvent, AlertEvent, Event, HostEvent, UserEvent};
use fleetbus_schemas::{AgentId, Command, CommandEnvelope, HostId, UserName};

use super::{authorize, reject, Rejection};

fn not_found(m: String) -> Rejection {
    reject(RejectKind::NotFound, m)
}

fn conflict(m: String) -> Rejection {
    reject(RejectKind::Conflict, m)
}

fn invalid(m: String) -> Rejection {
    reject(RejectKind::Invalid, m)
}

/// Validates a command against the current state and returns the events it causes.
pub(crate) fn decide(state: &State, cmd: &CommandEnvelope) -> Result<Vec<Event>, Rejection> {
    let reg = &state.projections.registry;
    authorize(&cmd.actor, &cmd.command)?;
    match &cmd.command {
        Command::Host(c) => decide_host(reg, c),
        Command::Agent(c) => decide_agent(reg, c),
        Command::User(c) => decide_user(reg, c),
        Command::Alert(c) => decide_alert(state, c),
        Command::Config(c) => crate::fleet::decide(reg, &state.configs, &cmd.actor, c),
        other => Err(reject(
            RejectKind::Malformed,
            format!(
                "commands of area '{}' are not handled by ingest",
                other.area()
            ),
        )),
    }
}

fn registered(reg: &Registry, host: &HostId) -> Result<(), Rejection> {
    if reg.hosts.contains_key(host) {
        Ok(())
    } else {
        Err(not_found(format!("host '{host}' is not registered")))
    }
}

/// Hosts, their services and their pinned keys.
fn decide_host(reg: &Registry, c: &HostCommand) -> Result<Vec<Event>, Rejection> {
    match c {
        HostCommand::Add(spec) => {
            check_host_spec(spec)?;
            if reg.hosts.contains_key(&spec.host) {
                return Err(conflict(format!("host '{}' already exists", spec.host)));
            }
            Ok(vec![Event::Host(HostEvent::Registered(spec.clone()))])
        }
        HostCommand::Update(spec) => {
            check_host_spec(spec)?;
            registered(reg, &spec.host)?;
            Ok(vec![Event::Host(HostEvent::Updated(spec.clone()))])
        }
        HostCommand::Remove { host } => {
            registered(reg, host)?;
            Ok(vec![Event::Host(HostEvent::Removed { host: host.clone() })])
        }
        HostCommand::AddService(spec) => {
            check_service_spec(spec)?;
            registered(reg, &spec.host)?;
            let event = if reg.services.contains_key(&spec.key()) {
                ServiceEvent::Updated(spec.clone())
            } else {
                ServiceEvent::Registered(spec.clone())
            };
            Ok(vec![Event::Service(event)])
        }
        HostCommand::RemoveService { host, name } => {
            let key = fleetbus_schemas::ServiceKey::new(host.clone(), name.clone());
            if !reg.services.contains_key(&key) {
                return Err(not_found(format!("service '{key}' is not registered")));
            }
            Ok(vec![Event::Service(ServiceEvent::Removed {
                host: host.clone(),
                name: name.clone(),
            })])
        }
        HostCommand::TrustKey {
            host,
            algorithm,
            fingerprint,
        } => trust_key(reg, host, algorithm, fingerprint).map(|e| vec![e]),
    }
}

/// `trust_key`: pin a host key an operator checked.
fn trust_key(
    reg: &Registry,
    host: &HostId,
    algorithm: &str,
    fingerprint: &str,
) -> Result<Event, Rejection> {
    registered(reg, host)?;
    if !fingerprint.starts_with("SHA256:")
        || fingerprint.len() > 100
        || fingerprint
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(format!(
            "fingerprint {fingerprint:?} is not SHA256:<base64>"
        )));
    }
    if algorithm.is_empty()
        || algorithm.len() > 64
        || !algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'@'))
    {
        return Err(invalid(format!(
            "algorithm {algorithm:?} is not an SSH key type"
        )));
    }
    Ok(Event::Host(HostEvent::KeyPinned {
        host: host.clone(),
        algorithm: algorithm.to_string(),
        fingerprint: fingerprint.to_string(),
    }))
}

fn known_agent(reg: &Registry, agent: &AgentId) -> Result<(), Rejection> {
    if reg.agents.contains_key(agent) {
        Ok(())
    } else {
        Err(not_found(format!(
            "agent '{agent}' has never been issued a key"
        )))
    }
}

/// Agent keys and blocking.
fn decide_agent(reg: &Registry, c: &AgentCommand) -> Result<Vec<Event>, Rejection> {
    match c {
        AgentCommand::IssueKey {
            agent,
            host,
            key_id,
            key_hash,
        } => issue_key(reg, agent, host, key_id, key_hash).map(|e| vec![e]),
        AgentCommand::RevokeKey { agent } => {
            known_agent(reg, agent)?;
            Ok(vec![Event::Agent(AgentEvent::KeyRevoked {
                agent: agent.clone(),
            })])
        }
        AgentCommand::Block { agent, reason } => {
            known_agent(reg, agent)?;
            if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
                return Err(invalid(
                    "reason must be at most 500 characters without control characters".into(),
                ));
            }
            Ok(vec![Event::Agent(AgentEvent::Blocked {
                agent: agent.clone(),
                reason: reason.clone(),
            })])
        }
        AgentCommand::Unblock { agent } => {
            known_agent(reg, agent)?;
            Ok(vec![Event::Agent(AgentEvent::Unblocked {
                agent: agent.clone(),
            })])
        }
    }
}

/// `issue_key`: a key (by its hash) for an agent on a registered host; one key, one agent.
fn issue_key(
    reg: &Registry,
    agent: &AgentId,
    host: &HostId,
    key_id: &str,
    key_hash: &str,
) -> Result<Event, Rejection> {
    if !reg.hosts.contains_key(host) {
        return Err(not_found(format!(
            "host '{host}' is not registered; add it first"
        )));
    }
    if !is_sha256_hex(key_hash) {
        return Err(invalid(
            "key_hash must be 64 lowercase hex characters (SHA-256 of the key)".into(),
        ));
    }
    if key_id.is_empty()
        || key_id.len() > 64
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(invalid(format!(
            "key_id {key_id:?} must be 1–64 of a-z, A-Z, 0-9, '-', '_'"
        )));
    }
    if let Some((other, _)) = reg
        .agents
        .iter()
        .find(|(id, a)| *id != agent && a.key_hash.as_deref() == Some(key_hash))
    {
        return Err(conflict(format!(
            "this key is already issued to agent '{other}'"
        )));
    }
    Ok(Event::Agent(AgentEvent::KeyIssued {
        agent: agent.clone(),
        host: host.clone(),
        key_id: key_id.to_string(),
        key_hash: key_hash.to_string(),
    }))
}

fn user_exists(reg: &Registry, user: &UserName) -> Result<(), Rejection> {
    if reg.users.contains_key(user) {
        Ok(())
    } else {
        Err(not_found(format!("user '{user}' does not exist")))
    }
}

/// Users, their roles and passwords.
fn decide_user(reg: &Registry, c: &UserCommand) -> Result<Vec<Event>, Rejection> {
    match c {
        UserCommand::Add {
            user,
            role,
            password_hash,
        } => {
            if reg.users.contains_key(user) {
                return Err(conflict(format!("user '{user}' already exists")));
            }
            check_password_hash(password_hash)?;
            Ok(vec![Event::User(UserEvent::Added {
                user: user.clone(),
                role: *role,
                password_hash: password_hash.clone(),
            })])
        }
        UserCommand::SetPassword {
            user,
            password_hash,
        } => {
            user_exists(reg, user)?;
            check_password_hash(password_hash)?;
            Ok(vec![Event::User(UserEvent::PasswordChanged {
                user: user.clone(),
                password_hash: password_hash.clone(),
            })])
        }
        UserCommand::SetRole { user, role } => {
            user_exists(reg, user)?;
            Ok(vec![Event::User(UserEvent::RoleChanged {
                user: user.clone(),
                role: *role,
            })])
        }
        UserCommand::Remove { user } => {
            user_exists(reg, user)?;
            Ok(vec![Event::User(UserEvent::Removed { user: user.clone() })])
        }
    }
}

/// Acknowledging and resolving open alerts.
fn decide_alert(state: &State, c: &AlertCommand) -> Result<Vec<Event>, Rejection> {
    let (alert, note) = match c {
        AlertCommand::Ack { alert, note } | AlertCommand::Resolve { alert, note } => (alert, note),
    };
    if note.chars().count() > 1000 || note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(
            "note must be at most 1,000 characters without control characters".into(),
        ));
    }
    let Some(current) = state.projections.alerts.alerts.get(alert) else {
        return Err(not_found(format!("alert {alert} does not exist")));
    };
    if current.resolved_at.is_some() {
        return Err(conflict(format!("alert {alert} is already resolved")));
    }
    let event = match c {
        AlertCommand::Ack { .. } => AlertEvent::Acknowledged {
            alert: *alert,
            note: note.clone(),
        },
        AlertCommand::Resolve { .. } => AlertEvent::Resolved {
            alert: *alert,
            note: note.clone(),
        },
    };
    Ok(vec![Event::Alert(event)])
}

fn is_name(v: &str) -> bool {
    fleetbus_schemas::validate_name("name", v).is_ok()
}

fn check_host_spec(spec: &HostSpec) -> Result<(), Rejection> {
    let bad = |m: String| Err(reject(RejectKind::Invalid, m));
    if spec.address.is_empty()
        || spec.address.len() > 253
        || !spec
            .address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return bad(format!(
            "address {:?} is not an IP address or DNS name",
            spec.address
        ));
    }
    if spec.port == 0 {
        return bad("port must be 1–65535".into());
    }
    if spec.user.is_empty()
        || spec.user.len() > 32
        || !spec
            .user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad(format!("user {:?} is not a valid login name", spec.user));
    }
    for t in spec.tags.iter().chain(&spec.roles) {
        if !is_name(t) {
            return bad(format!(
                "tag or role {t:?} is not a valid name (a-z, 0-9, '-', '_')"
            ));
        }
    }
    Ok(())
}

fn check_service_spec(spec: &ServiceSpec) -> Result<(), Rejection> {
    let bad = |m: String| Err(reject(RejectKind::Invalid, m));
    let unit_ok = match spec.manager {
        ServiceManager::Systemd => {
            !spec.unit.is_empty()
                && spec.unit.len() <= 256
                && spec.unit.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':')
                })
                && !spec.unit.starts_with('-')
        }
        _ => {
            spec.unit.starts_with('/')
                && spec.unit.len() <= 256
                && !spec.unit.split('/').any(|c| c == "..")
                && spec
                    .unit
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        }
    };
    if !unit_ok {
        return bad(format!(
            "unit {:?} is not a systemd unit name or an absolute service directory",
            spec.unit
        ));
    }
    if let Some(p) = &spec.log_path {
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p.chars().any(char::is_control)
        {
            return bad(format!(
                "log_path {p:?} must be an absolute path without '..'"
            ));
        }
    }
    Ok(())
}

fn is_sha256_hex(v: &str) -> bool {
    v.len() == 64
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn check_password_hash(v: &str) -> Result<(), Rejection> {
    match argon2::PasswordHash::new(v) {
        Ok(h) if h.algorithm.as_str() == "argon2id" && h.hash.is_some() => Ok(()),
        Ok(h) => Err(reject(
            RejectKind::Invalid,
            format!(
                "password_hash uses {}, expected an argon2id PHC string",
                h.algorithm
            ),
        )),
        Err(e) => Err(reject(
            RejectKind::Invalid,
            format!("password_hash is not a PHC string ({e}); expected $argon2id$v=19$…"),
        )),
    }
}
