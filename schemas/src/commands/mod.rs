//! Commands: requests, named imperatively, grouped by area. A command may be rejected; what
//! happened is told only by events, whose `causation` is the command's id.
//!
//! The subject of a command is `fleet.cmd.<area>.<verb>`; each area is consumed by one service
//! (host, agent, user, alert, config → ingest; job → executor; schedule, check → scheduler;
//! notify → notifier).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Actor, SCHEMA_VERSION};
use crate::ids::{CommandId, HostId};

pub mod job;
pub mod notify;
pub mod registry;
pub mod schedule;

pub use job::JobCommand;
pub use notify::NotifyCommand;
pub use registry::{AgentCommand, AlertCommand, ConfigCommand, HostCommand, UserCommand};
pub use schedule::{CheckCommand, ScheduleCommand};

/// Which hosts a command is for: the union of named hosts and hosts with any of the tags or roles.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Targets {
    /// Hosts by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostId>,
    /// Hosts carrying any of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Hosts having any of these roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Targets {
    /// True when nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.roles.is_empty()
    }
}

/// What every area's command enum tells about each of its commands.
pub trait AreaCommand {
    /// The verb token of the subject, equal to its serde tag.
    fn verb(&self) -> &'static str;
    /// One example of every variant, for golden fixtures and schema tests.
    fn samples() -> Vec<Self>
    where
        Self: Sized;
}

/// Any command, tagged by area: `{"area": "host", "body": {"type": "add", "data": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "area", content = "body", rename_all = "snake_case")]
pub enum Command {
    /// The host and service registry.
    Host(HostCommand),
    /// Agent keys and blocking.
    Agent(AgentCommand),
    /// Dashboard users.
    User(UserCommand),
    /// Alert acknowledgement and resolution.
    Alert(AlertCommand),
    /// Managed agent configuration.
    Config(ConfigCommand),
    /// Work for the executor.
    Job(JobCommand),
    /// Schedules.
    Schedule(ScheduleCommand),
    /// Heartbeat and deadline checks.
    Check(CheckCommand),
    /// Notification rules, recipients, channels and mutes.
    Notify(NotifyCommand),
}

impl Command {
    /// The area token of the subject.
    pub fn area(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::Agent(_) => "agent",
            Self::User(_) => "user",
            Self::Alert(_) => "alert",
            Self::Config(_) => "config",
            Self::Job(_) => "job",
            Self::Schedule(_) => "schedule",
            Self::Check(_) => "check",
            Self::Notify(_) => "notify",
        }
    }

    /// The verb token of the subject.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Host(c) => c.verb(),
            Self::Agent(c) => c.verb(),
            Self::User(c) => c.verb(),
            Self::Alert(c) => c.verb(),
            Self::Config(c) => c.verb(),
            Self::Job(c) => c.verb(),
            Self::Schedule(c) => c.verb(),
            Self::Check(c) => c.verb(),
            Self::Notify(c) => c.verb(),
        }
    }

    /// Every command area's name.
    pub const AREAS: [&'static str; 9] = [
        "host", "agent", "user", "alert", "config", "job", "schedule", "check", "notify",
    ];

    /// One sample of every command of every area.
    pub fn samples() -> Vec<Command> {
        let mut all = Vec::new();
        all.extend(HostCommand::samples().into_iter().map(Command::Host));
        all.extend(AgentCommand::samples().into_iter().map(Command::Agent));
        all.extend(UserCommand::samples().into_iter().map(Command::User));
        all.extend(AlertCommand::samples().into_iter().map(Command::Alert));
        all.extend(ConfigCommand::samples().into_iter().map(Command::Config));
        all.extend(JobCommand::samples().into_iter().map(Command::Job));
        all.extend(
            ScheduleCommand::samples()
                .into_iter()
                .map(Command::Schedule),
        );
        all.extend(CheckCommand::samples().into_iter().map(Command::Check));
        all.extend(NotifyCommand::samples().into_iter().map(Command::Notify));
        all
    }
}

/// One request, as published on `fleet.cmd.<area>.<verb>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandEnvelope {
    /// Unique id; the `Nats-Msg-Id` of its publish and the causation id of its events.
    pub id: CommandId,
    /// When it was issued.
    pub time: DateTime<Utc>,
    /// Who issued it.
    pub actor: Actor,
    /// Schema version it was written with.
    pub schema: u16,
    /// The request.
    pub command: Command,
}

impl CommandEnvelope {
    /// Wraps a command with a fresh id and the current time.
    pub fn new(actor: Actor, command: Command) -> Self {
        Self {
            id: CommandId::new(),
            time: Utc::now(),
            actor,
            schema: SCHEMA_VERSION,
            command,
        }
    }

    /// The subject this command is published on.
    pub fn subject(&self) -> String {
        crate::subjects::command(&self.command)
    }
}
