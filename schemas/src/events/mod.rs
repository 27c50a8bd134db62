//! Events: facts, named in the past tense, grouped by domain.
//!
//! Each domain module owns one enum. The subject of an event is
//! `fleet.evt.<domain>.<entity>.<type>` — or `fleet.sec.…` for the few events that carry
//! credential material (hashes), which the read-only `tap` user cannot read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod agent;
pub mod alert;
pub mod check;
pub mod config;
pub mod host;
pub mod job;
pub mod notification;
pub mod schedule;
pub mod service;
pub mod system;
pub mod user;

pub use agent::AgentEvent;
pub use alert::AlertEvent;
pub use check::CheckEvent;
pub use config::ConfigEvent;
pub use host::HostEvent;
pub use job::JobEvent;
pub use notification::NotificationEvent;
pub use schedule::ScheduleEvent;
pub use service::ServiceEvent;
pub use system::SystemEvent;
pub use user::UserEvent;

/// How bad something is. Ordered: `Info < Warn < Error < Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth recording.
    Info,
    /// Worth a look.
    Warn,
    /// Something failed; opens an alert.
    Error,
    /// Something failed badly; opens an alert.
    Critical,
}

impl Severity {
    /// The lowercase name used on the wire and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown severity {other:?}, expected info, warn, error or critical"
            )),
        }
    }
}

/// What every domain's event enum tells about each of its events.
pub trait DomainEvent {
    /// The subject token naming the entity the event is about (a validated id: no dots).
    fn entity(&self) -> String;
    /// The event type's name, equal to its serde tag (`reported`, `key_issued`, …).
    fn type_name(&self) -> &'static str;
    /// True when the event carries credential material and goes on `fleet.sec.…`.
    fn is_secret(&self) -> bool {
        false
    }
    /// One example of every variant, for golden fixtures and schema tests.
    fn samples() -> Vec<Self>
    where
        Self: Sized;
}

/// Any fact, tagged by domain: `{"domain": "agent", "body": {"type": …, "data": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "domain", content = "body", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// Agents: reports, events they raise, keys, blocking, liveness.
    Agent(AgentEvent),
    /// The host registry and host keys.
    Host(HostEvent),
    /// The service registry and observed service status.
    Service(ServiceEvent),
    /// Jobs run by the executor.
    Job(JobEvent),
    /// Schedules and their firings.
    Schedule(ScheduleEvent),
    /// Heartbeat and deadline checks.
    Check(CheckEvent),
    /// Operator actions on alerts and explicitly raised alerts.
    Alert(AlertEvent),
    /// The notification log.
    Notification(NotificationEvent),
    /// Managed agent configuration, snapshots and assets.
    Config(ConfigEvent),
    /// Dashboard users.
    User(UserEvent),
    /// Rejections and component lifecycle.
    System(SystemEvent),
}

impl Event {
    /// The domain token of the subject.
    pub fn domain(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Host(_) => "host",
            Self::Service(_) => "service",
            Self::Job(_) => "job",
            Self::Schedule(_) => "schedule",
            Self::Check(_) => "check",
            Self::Alert(_) => "alert",
            Self::Notification(_) => "notification",
            Self::Config(_) => "config",
            Self::User(_) => "user",
            Self::System(_) => "system",
        }
    }

    fn inner(&self) -> &dyn DomainEventDyn {
        match self {
            Self::Agent(e) => e,
            Self::Host(e) => e,
            Self::Service(e) => e,
            Self::Job(e) => e,
            Self::Schedule(e) => e,
            Self::Check(e) => e,
            Self::Alert(e) => e,
            Self::Notification(e) => e,
            Self::Config(e) => e,
            Self::User(e) => e,
            Self::System(e) => e,
        }
    }

    /// The entity token of the subject.
    pub fn entity(&self) -> String {
        self.inner().entity_dyn()
    }

    /// The type token of the subject.
    pub fn type_name(&self) -> &'static str {
        self.inner().type_name_dyn()
    }

    /// True when this event carries credential material (published on `fleet.sec.…`).
    pub fn is_secret(&self) -> bool {
        self.inner().is_secret_dyn()
    }

    /// One sample of every event of every domain.
    pub fn samples() -> Vec<Event> {
        let mut all = Vec::new();
        all.extend(AgentEvent::samples().into_iter().map(Event::Agent));
        all.extend(HostEvent::samples().into_iter().map(Event::Host));
        all.extend(ServiceEvent::samples().into_iter().map(Event::Service));
        all.extend(JobEvent::samples().into_iter().map(Event::Job));
        all.extend(ScheduleEvent::samples().into_iter().map(Event::Schedule));
        all.extend(CheckEvent::samples().into_iter().map(Event::Check));
        all.extend(AlertEvent::samples().into_iter().map(Event::Alert));
        all.extend(
            NotificationEvent::samples()
                .into_iter()
                .map(Event::Notification),
        );
        all.extend(ConfigEvent::samples().into_iter().map(Event::Config));
        all.extend(UserEvent::samples().into_iter().map(Event::User));
        all.extend(SystemEvent::samples().into_iter().map(Event::System));
        all
    }
}

// Object-safe mirror of `DomainEvent` (which has a `Sized` constructor).
trait DomainEventDyn {
    fn entity_dyn(&self) -> String;
    fn type_name_dyn(&self) -> &'static str;
    fn is_secret_dyn(&self) -> bool;
}

impl<T: DomainEvent> DomainEventDyn for T {
    fn entity_dyn(&self) -> String {
        self.entity()
    }
    fn type_name_dyn(&self) -> &'static str {
        self.type_name()
    }
    fn is_secret_dyn(&self) -> bool {
        self.is_secret()
    }
}

/// A fixed instant for samples, so golden fixtures are byte-stable.
pub(crate) fn sample_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

/// A fixed ULID for samples.
pub(crate) fn sample_ulid(n: u128) -> ulid::Ulid {
    ulid::Ulid::from_parts(1_767_225_600_000, n)
}

/// Parses a literal id in samples (the literals are valid; tests cover every sample).
pub(crate) fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse()
        .unwrap_or_else(|e| panic!("sample id {s:?}: {e:?}"))
}
