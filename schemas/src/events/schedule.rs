//! Schedules and their firings. Owned by the scheduler. Entity token: the schedule id (or
//! `retention` for [`ScheduleEvent::RetentionApplied`]).
//!
//! Ids of firing facts are derived deterministically from (schedule id, slot instant), so that
//! several schedulers firing the same slot publish the same ids and JetStream's duplicate window
//! and the log's dedup keep exactly one.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_time, sample_ulid, DomainEvent};
use crate::commands::Targets;
use crate::ids::{CommandId, ScheduleId, TaskId};

/// What to do with slots missed while the scheduler was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Forget them.
    Skip,
    /// Fire once for all of them.
    #[default]
    CatchUpOnce,
}

/// What a schedule does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleAction {
    /// Poll the status of the services on the selected hosts.
    PollStatus {
        /// Which hosts.
        targets: Targets,
    },
    /// Run a saved task.
    RunTask {
        /// The task.
        task: TaskId,
        /// Its parameters.
        #[serde(default)]
        params: std::collections::BTreeMap<String, serde_json::Value>,
        /// Which hosts.
        targets: Targets,
    },
    /// Publish any command.
    Publish {
        /// The command to publish (a fresh id is derived per slot).
        command: Box<crate::commands::Command>,
    },
}

/// A schedule as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleSpec {
    /// Its id.
    pub schedule: ScheduleId,
    /// Cron expression with seconds (`0 */5 * * * *`).
    pub cron: String,
    /// IANA time zone (`Europe/Helsinki`).
    pub time_zone: String,
    /// What it does.
    pub action: ScheduleAction,
    /// Missed-slot policy.
    #[serde(default)]
    pub missed: MissedPolicy,
}

/// Schedule facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ScheduleEvent {
    /// A schedule was created.
    Created(ScheduleSpec),
    /// A schedule was changed.
    Updated(ScheduleSpec),
    /// A schedule was paused.
    Paused {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// A schedule was resumed.
    Resumed {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// A schedule was deleted.
    Deleted {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// A slot fired; the command ids are derived from (schedule, slot[, host:service]).
    Fired {
        /// The schedule.
        schedule: ScheduleId,
        /// The slot's instant.
        slot: DateTime<Utc>,
        /// The commands it published, in publish order (one per polled service for
        /// `poll_status`; none when the targets matched nothing).
        commands: Vec<CommandId>,
    },
    /// Slots were missed while the scheduler was down.
    SlotsMissed {
        /// The schedule.
        schedule: ScheduleId,
        /// First missed slot.
        first: DateTime<Utc>,
        /// Last missed slot; the schedule continues after it.
        last: DateTime<Utc>,
        /// How many (saturates at `u32::MAX`).
        count: u32,
        /// What was done about them: `catch_up_once` fires the last one (a `fired` event
        /// follows), `skip` fires none.
        policy: MissedPolicy,
    },
    /// The daily retention pass ran. Live job output of jobs that ended before
    /// `output_cutoff` was purged from the `OUTPUT` stream; history projections may drop
    /// entries older than `history_cutoff` (the log itself is never rewritten).
    RetentionApplied {
        /// Output of jobs that ended before this instant is gone.
        output_cutoff: DateTime<Utc>,
        /// History projections keep entries at or after this instant.
        history_cutoff: DateTime<Utc>,
        /// How many jobs' output subjects were purged.
        jobs_purged: u32,
    },
}

/// The entity token of [`ScheduleEvent::RetentionApplied`].
pub const RETENTION_ENTITY: &str = "retention";

impl DomainEvent for ScheduleEvent {
    fn entity(&self) -> String {
        match self {
            Self::Created(spec) | Self::Updated(spec) => spec.schedule.to_string(),
            Self::Paused { schedule }
            | Self::Resumed { schedule }
            | Self::Deleted { schedule }
            | Self::Fired { schedule, .. }
            | Self::SlotsMissed { schedule, .. } => schedule.to_string(),
            Self::RetentionApplied { .. } => RETENTION_ENTITY.to_owned(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::Updated(_) => "updated",
            Self::Paused { .. } => "paused",
            Self::Resumed { .. } => "resumed",
            Self::Deleted { .. } => "deleted",
            Self::Fired { .. } => "fired",
            Self::SlotsMissed { .. } => "slots_missed",
            Self::RetentionApplied { .. } => "retention_applied",
        }
    }
    fn samples() -> Vec<Self> {
        let spec = ScheduleSpec {
            schedule: id("poll-web"),
            cron: "0 */5 * * * *".into(),
            time_zone: "Europe/Helsinki".into(),
            action: ScheduleAction::PollStatus {
                targets: Targets {
                    tags: vec!["web".into()],
                    ..Targets::default()
                },
            },
            missed: MissedPolicy::CatchUpOnce,
        };
        vec![
            Self::Created(spec.clone()),
            Self::Updated(ScheduleSpec {
                missed: MissedPolicy::Skip,
                ..spec
            }),
            Self::Paused {
                schedule: id("poll-web"),
            },
            Self::Resumed {
                schedule: id("poll-web"),
            },
            Self::Deleted {
                schedule: id("poll-web"),
            },
            Self::Fired {
                schedule: id("poll-web"),
                slot: sample_time(),
                commands: vec![CommandId(sample_ulid(21)), CommandId(sample_ulid(22))],
            },
            Self::SlotsMissed {
                schedule: id("poll-web"),
                first: sample_time(),
                last: sample_time() + chrono::Duration::minutes(55),
                count: 12,
                policy: MissedPolicy::CatchUpOnce,
            },
            Self::RetentionApplied {
                output_cutoff: sample_time(),
                history_cutoff: sample_time(),
                jobs_purged: 3,
            },
        ]
    }
}
