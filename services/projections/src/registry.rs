//! The registry: hosts, services, agents, users and pinned host keys, as commands made them.

use std::collections::BTreeMap;

use fleetbus_schemas::events::host::{HostEvent, HostSpec};
use fleetbus_schemas::events::service::{ServiceEvent, ServiceSpec};
use fleetbus_schemas::events::{AgentEvent, Event, UserEvent};
use fleetbus_schemas::{AgentId, Envelope, HostId, ServiceKey, UserName, UserRole};
use serde::{Deserialize, Serialize};

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The host it belongs to.
    pub host: HostId,
    /// Public id of its current key.
    pub key_id: Option<String>,
    /// SHA-256 (hex) of its current key; `None` once revoked. Credential material.
    pub key_hash: Option<String>,
    /// Blocked agents' reports are stored but raise no notifications.
    pub blocked: bool,
    /// Why it was blocked.
    pub block_reason: Option<String>,
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Role.
    pub role: UserRole,
    /// argon2id PHC string. Credential material.
    pub password_hash: Option<String>,
}

/// A pinned SSH host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedKey {
    /// Algorithm.
    pub algorithm: String,
    /// `SHA256:…` fingerprint.
    pub fingerprint: String,
}

/// Hosts, services, agents, users and host keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Registered hosts.
    pub hosts: BTreeMap<HostId, HostSpec>,
    /// Registered services.
    pub services: BTreeMap<ServiceKey, ServiceSpec>,
    /// Agents that were issued a key.
    pub agents: BTreeMap<AgentId, AgentRecord>,
    /// Dashboard users.
    pub users: BTreeMap<UserName, UserRecord>,
    /// Pinned host keys.
    pub host_keys: BTreeMap<HostId, PinnedKey>,
}

impl Registry {
    /// Folds one event.
    pub fn apply(&mut self, env: &Envelope) {
        match &env.event {
            Event::Host(e) => self.apply_host(e),
            Event::Service(e) => self.apply_service(e),
            Event::Agent(e) => self.apply_agent(e),
            Event::User(e) => self.apply_user(e),
            _ => {}
        }
    }

    fn apply_host(&mut self, event: &HostEvent) {
        match event {
            HostEvent::Registered(spec) | HostEvent::Updated(spec) => {
                self.hosts.insert(spec.host.clone(), spec.clone());
            }
            HostEvent::Removed { host } => {
                self.hosts.remove(host);
                self.services.retain(|key, _| &key.host != host);
                self.host_keys.remove(host);
            }
            HostEvent::KeyPinned {
                host,
                algorithm,
                fingerprint,
            } => {
                self.host_keys.insert(
                    host.clone(),
                    PinnedKey {
                        algorithm: algorithm.clone(),
                        fingerprint: fingerprint.clone(),
                    },
                );
            }
            _ => {}
        }
    }

    fn apply_service(&mut self, event: &ServiceEvent) {
        match event {
            ServiceEvent::Registered(spec) | ServiceEvent::Updated(spec) => {
                self.services.insert(spec.key(), spec.clone());
            }
            ServiceEvent::Removed { .. } => {
                self.services.remove(&event.key());
            }
            ServiceEvent::StatusObserved { .. } => {}
        }
    }

    fn apply_agent(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::KeyIssued {
                agent,
                host,
                key_id,
                key_hash,
            } => {
                let record = self
                    .agents
                    .entry(agent.clone())
                    .or_insert_with(|| AgentRecord {
                        host: host.clone(),
                        key_id: None,
                        key_hash: None,
                        blocked: false,
                        block_reason: None,
                    });
                record.host = host.clone();
                record.key_id = Some(key_id.clone());
                record.key_hash = Some(key_hash.clone());
            }
            AgentEvent::KeyRevoked { agent } => {
                if let Some(record) = self.agents.get_mut(agent) {
                    record.key_hash = None;
                }
            }
            AgentEvent::Blocked { agent, reason } => {
                if let Some(record) = self.agents.get_mut(agent) {
                    record.blocked = true;
                    record.block_reason = Some(reason.clone());
                }
            }
            AgentEvent::Unblocked { agent } => {
                if let Some(record) = self.agents.get_mut(agent) {
                    record.blocked = false;
                    record.block_reason = None;
                }
            }
            _ => {}
        }
    }

    fn apply_user(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Added {
                user,
                role,
                password_hash,
            } => {
                self.users.insert(
                    user.clone(),
                    UserRecord {
                        role: *role,
                        password_hash: Some(password_hash.clone()),
                    },
                );
            }
            UserEvent::PasswordChanged {
                user,
                password_hash,
            } => {
                if let Some(record) = self.users.get_mut(user) {
                    record.password_hash = Some(password_hash.clone());
                }
            }
            UserEvent::RoleChanged { user, role } => {
                if let Some(record) = self.users.get_mut(user) {
                    record.role = *role;
                }
            }
            UserEvent::Removed { user } => {
                self.users.remove(user);
            }
        }
    }

    /// True when the agent exists and is blocked.
    pub fn is_blocked(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|a| a.blocked)
    }

    /// The agent registered for a host, if any.
    pub fn agent_of(&self, host: &HostId) -> Option<&AgentId> {
        self.agents
            .iter()
            .find(|(_, record)| &record.host == host)
            .map(|(id, _)| id)
    }

    /// The services registered on a host.
    pub fn services_of<'a>(&'a self, host: &'a HostId) -> impl Iterator<Item = &'a ServiceSpec> {
        self.services
            .iter()
            .filter(move |(key, _)| &key.host == host)
            .map(|(_, spec)| spec)
    }

    /// A copy without credential material (key and password hashes), for any reader.
    pub fn redacted(&self) -> Registry {
        let mut copy = self.clone();
        for agent in copy.agents.values_mut() {
            agent.key_hash = agent.key_hash.as_ref().map(|_| "redacted".to_owned());
        }
        for user in copy.users.values_mut() {
            user.password_hash = None;
        }
        copy
    }
}
