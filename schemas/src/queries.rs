//! Read-model queries: core NATS request/reply on `fleet.q.<model>`, answered by ingest.
//!
//! A request is the MessagePack encoding of one of the request structs below; the reply is a
//! [`Reply`] wrapping the model's answer (the answer types live with the projections).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod config;

use crate::envelope::Envelope;
use crate::events::Severity;
use crate::ids::{EventId, HostId, ServiceName, UserName};

/// A query reply: the answer or a typed error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// The answer.
    Ok(T),
    /// Why there is none.
    Error(QueryError),
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct QueryError {
    /// The kind.
    pub kind: QueryErrorKind,
    /// What was wrong, for people.
    pub message: String,
}

/// Kinds of query failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryErrorKind {
    /// The request could not be decoded or has invalid fields.
    BadRequest,
    /// The thing asked for does not exist.
    NotFound,
    /// The log could not be read.
    Unavailable,
}

/// A point in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    /// After the entry with this log sequence was applied.
    Seq(u64),
    /// After every entry committed at or before this instant.
    Time(DateTime<Utc>),
}

/// Model names: the last token of `fleet.q.<model>`.
pub mod model {
    /// [`super::OverviewQuery`] → the fleet status.
    pub const OVERVIEW: &str = "overview";
    /// [`super::HostQuery`] → one host with its services and recent resources.
    pub const HOST: &str = "host";
    /// [`super::HistoryQuery`] → service/host state history, paged.
    pub const HISTORY: &str = "history";
    /// [`super::AlertsQuery`] → alerts.
    pub const ALERTS: &str = "alerts";
    /// [`super::EventsQuery`] → log entries, filtered and paged by sequence.
    pub const EVENTS: &str = "events";
    /// [`super::LogHeadQuery`] → the log's last sequence and hash.
    pub const LOG_HEAD: &str = "log_head";
    /// [`super::RegistryQuery`] → hosts and services as registered, with agents.
    pub const REGISTRY: &str = "registry";
    /// [`super::UsersQuery`] → users (no credential material).
    pub const USERS: &str = "users";
    /// [`super::UserCredentialQuery`] → one user's password hash (web and admin only).
    pub const USER_CREDENTIAL: &str = "user_credential";
    /// [`super::CommittedQuery`] → [`super::Committed`]: where an event is in the log, once it
    /// is there (read-your-writes after a command).
    pub const COMMITTED: &str = "committed";
    /// [`super::config::ConfigQuery`] → [`super::config::ConfigSummary`] or, for one agent,
    /// [`super::config::AgentConfigView`]: managed-config status and drift.
    pub const CONFIG: &str = "config";
}

/// The fleet overview, now or as of a point in history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OverviewQuery {
    /// Time travel: the overview as it was then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOf>,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostQuery {
    /// The host.
    pub host: HostId,
}

/// State history of hosts and services, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// Only this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// Only this service (with `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// Only entries with a log sequence below this (paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
    /// Page size (at most 1,000; default 100).
    #[serde(default)]
    pub limit: u32,
}

/// Alerts, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertsQuery {
    /// Include resolved alerts (history).
    #[serde(default)]
    pub include_resolved: bool,
    /// Page size (at most 1,000; default 100).
    #[serde(default)]
    pub limit: u32,
}

/// Log entries matching a filter, paged by log sequence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventsQuery {
    /// Only events about this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// Only events about this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// Only this domain (`agent`, `job`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Only this type (`reported`, `raised`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Only events at least this severe (events without a severity count as info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Only events at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Only entries with sequence > this, oldest first (forward paging / replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Only entries with sequence < this, newest first (backward paging). Ignored with `after_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
    /// Page size (at most 1,000; default 100).
    #[serde(default)]
    pub limit: u32,
}

/// The log's head.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogHeadQuery {}

/// The registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryQuery {}

/// Users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsersQuery {}

/// One user's credential, for login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserCredentialQuery {
    /// The user.
    pub user: UserName,
}

/// Is this event in the log? Answered with [`Committed`] as soon as it is committed, waiting up
/// to `wait_ms` (at most [`COMMITTED_WAIT_MAX_MS`]); `NotFound` if it is not there by then. Once
/// answered, every other query reflects the event: the projections fold an entry no later than
/// its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommittedQuery {
    /// The event (for a command: the event that named it as its cause).
    pub id: EventId,
    /// How long to wait for it, in milliseconds (0: answer at once).
    #[serde(default)]
    pub wait_ms: u32,
}

/// The longest a [`CommittedQuery`] waits.
pub const COMMITTED_WAIT_MAX_MS: u32 = 10_000;

/// Where a committed event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Committed {
    /// Its log sequence.
    pub seq: u64,
}

/// Clamps a requested page size: 0 means the default of 100, at most 1,000.
pub fn page_size(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// One log entry as the `events` query ([`EventsQuery`]) returns it.
#[derive(Debug, Clone, JsonSchema, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Log sequence.
    pub seq: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The entry's hash (hex). For `fleet.sec.…` entries the envelope below is redacted, so
    /// only `fleetctl log verify` on the file can check those.
    pub hash: String,
    /// The event (credential fields replaced by `"redacted"`).
    pub envelope: Envelope,
}

/// The log head, the answer to [`LogHeadQuery`].
#[derive(Debug, Clone, JsonSchema, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    /// Last sequence (0: empty log).
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
    /// When the last transaction committed.
    pub committed_at: Option<DateTime<Utc>>,
}
