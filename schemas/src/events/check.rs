//! Heartbeat and deadline checks. Owned by the scheduler. Entity token: the check id.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_time, DomainEvent};
use crate::ids::{CheckId, HostId};

/// The state of a heartbeat check (Healthchecks style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Never pinged.
    New,
    /// Pinged within its period.
    Up,
    /// Past its period, within grace.
    Late,
    /// Past period and grace.
    Down,
    /// Paused: raises nothing.
    Paused,
}

/// What a check watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckKind {
    /// Expects a ping every `period_s` seconds, with `grace_s` of slack.
    Heartbeat {
        /// Expected interval.
        period_s: u64,
        /// Slack after the interval before it is down.
        grace_s: u64,
    },
    /// Expects an event of a type from a host by a local time every day.
    Deadline {
        /// The agent event kind expected (e.g. `backup_succeeded`).
        event_kind: String,
        /// The host it must come from.
        host: HostId,
        /// Local time of day `HH:MM`.
        by: String,
        /// IANA time zone of `by`.
        time_zone: String,
    },
}

/// A check as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckSpec {
    /// Its id.
    pub check: CheckId,
    /// What it watches.
    pub kind: CheckKind,
    /// Hosts whose agents may ping the check over HTTP (besides a deadline check's own host).
    /// Empty: a heartbeat check cannot be pinged until hosts are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ping_hosts: Vec<HostId>,
}

impl CheckSpec {
    /// Whether an agent of `host` may ping this check: the host is listed in `ping_hosts`, or
    /// it is the host of a deadline check. Ingest enforces it (403 otherwise).
    pub fn may_be_pinged_from(&self, host: &HostId) -> bool {
        self.ping_hosts.contains(host)
            || matches!(&self.kind, CheckKind::Deadline { host: own, .. } if own == host)
    }
}

/// Check facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum CheckEvent {
    /// A check was created or changed.
    Defined(CheckSpec),
    /// A check was deleted.
    Deleted {
        /// The check.
        check: CheckId,
    },
    /// A ping arrived over HTTP.
    Pinged {
        /// The check.
        check: CheckId,
    },
    /// A check changed state (only transitions are events).
    StateChanged {
        /// The check.
        check: CheckId,
        /// Previous state.
        from: CheckState,
        /// New state.
        to: CheckState,
    },
    /// A deadline passed without its event.
    DeadlineMissed {
        /// The check.
        check: CheckId,
        /// The deadline instant.
        deadline: DateTime<Utc>,
    },
}

impl DomainEvent for CheckEvent {
    fn entity(&self) -> String {
        match self {
            Self::Defined(spec) => spec.check.to_string(),
            Self::Deleted { check }
            | Self::Pinged { check }
            | Self::StateChanged { check, .. }
            | Self::DeadlineMissed { check, .. } => check.to_string(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Defined(_) => "defined",
            Self::Deleted { .. } => "deleted",
            Self::Pinged { .. } => "pinged",
            Self::StateChanged { .. } => "state_changed",
            Self::DeadlineMissed { .. } => "deadline_missed",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::Defined(CheckSpec {
                check: id("nightly-backup"),
                kind: CheckKind::Deadline {
                    event_kind: "backup_succeeded".into(),
                    host: id("db-1"),
                    by: "05:00".into(),
                    time_zone: "Europe/Helsinki".into(),
                },
                ping_hosts: vec![],
            }),
            Self::Defined(CheckSpec {
                check: id("cron-ping"),
                kind: CheckKind::Heartbeat {
                    period_s: 300,
                    grace_s: 60,
                },
                ping_hosts: vec![],
            }),
            Self::Deleted {
                check: id("cron-ping"),
            },
            Self::Pinged {
                check: id("cron-ping"),
            },
            Self::StateChanged {
                check: id("cron-ping"),
                from: CheckState::Up,
                to: CheckState::Late,
            },
            Self::DeadlineMissed {
                check: id("nightly-backup"),
                deadline: sample_time(),
            },
        ]
    }
}
