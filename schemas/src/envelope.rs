//! The event envelope: what every fact on the bus and in the log is wrapped in.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::ids::{CommandId, EventId};

/// The current schema version. Bump it (and add `fixtures/v<N>/`) when an encoding changes.
pub const SCHEMA_VERSION: u16 = 1;

/// What kind of principal acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person, through the dashboard or fleetctl.
    User,
    /// An agent on a host, through ingest's HTTP API.
    Agent,
    /// A fleetbus service acting on its own (scheduler firing, executor observing).
    Service,
}

/// A dashboard role. Ordered: `Viewer < Operator < Admin`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// May read everything that is not credential material.
    Viewer,
    /// May run service actions and tasks, cancel jobs, acknowledge alerts.
    Operator,
    /// May also run ad-hoc commands and manage users, keys, hosts and schedules.
    Admin,
}

/// Who did it. Every command and every event names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// The kind of principal.
    pub kind: ActorKind,
    /// Its name: a user name, an agent id or a service name.
    pub name: String,
    /// For users: the role they acted with (checked by the service that executes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<UserRole>,
}

impl Actor {
    /// A fleetbus service acting on its own.
    pub fn service(name: &str) -> Self {
        Self {
            kind: ActorKind::Service,
            name: name.to_owned(),
            role: None,
        }
    }
    /// An agent.
    pub fn agent(name: &str) -> Self {
        Self {
            kind: ActorKind::Agent,
            name: name.to_owned(),
            role: None,
        }
    }
    /// A person with a role.
    pub fn user(name: &str, role: UserRole) -> Self {
        Self {
            kind: ActorKind::User,
            name: name.to_owned(),
            role: Some(role),
        }
    }
}

/// One fact, as published on `fleet.evt.…` / `fleet.sec.…` and stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Unique, sortable id; also the JetStream `Nats-Msg-Id` and the log's dedup key.
    pub id: EventId,
    /// When the fact happened, as told by its source.
    #[serde(deserialize_with = "crate::time::deserialize_utc")]
    pub time: DateTime<Utc>,
    /// The fleetbus component that published it (`ingest`, `executor`, `agent`, …).
    pub source: String,
    /// Who caused it.
    pub actor: Actor,
    /// The command that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation: Option<CommandId>,
    /// The schema version the payload was written with.
    pub schema: u16,
    /// The fact itself.
    pub event: Event,
}

impl Envelope {
    /// Wraps an event with a fresh id, the current time and the current schema version.
    pub fn new(source: &str, actor: Actor, causation: Option<CommandId>, event: Event) -> Self {
        Self {
            id: EventId::new(),
            time: Utc::now(),
            source: source.to_owned(),
            actor,
            causation,
            schema: SCHEMA_VERSION,
            event,
        }
    }

    /// The subject this envelope is published on.
    pub fn subject(&self) -> String {
        crate::subjects::event(&self.event)
    }
}
