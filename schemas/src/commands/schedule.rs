//! Schedule and check commands (`fleet.cmd.schedule.<verb>`, `fleet.cmd.check.<verb>`).
//! Owned by the scheduler.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AreaCommand;
use crate::events::check::{CheckEvent, CheckSpec};
use crate::events::id;
use crate::events::schedule::{ScheduleEvent, ScheduleSpec};
use crate::events::DomainEvent;
use crate::ids::{CheckId, ScheduleId};

/// Schedule commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ScheduleCommand {
    /// Create a schedule.
    Create(ScheduleSpec),
    /// Replace a schedule's definition.
    Update(ScheduleSpec),
    /// Pause a schedule.
    Pause {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// Resume a schedule.
    Resume {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// Delete a schedule.
    Delete {
        /// The schedule.
        schedule: ScheduleId,
    },
}

impl AreaCommand for ScheduleCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Update(_) => "update",
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
            Self::Delete { .. } => "delete",
        }
    }
    fn samples() -> Vec<Self> {
        let spec = match ScheduleEvent::samples().remove(0) {
            ScheduleEvent::Created(spec) => spec,
            _ => unreachable!("first schedule sample is Created"),
        };
        vec![
            Self::Create(spec.clone()),
            Self::Update(spec),
            Self::Pause {
                schedule: id("poll-web"),
            },
            Self::Resume {
                schedule: id("poll-web"),
            },
            Self::Delete {
                schedule: id("poll-web"),
            },
        ]
    }
}

/// Check commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum CheckCommand {
    /// Create or change a check.
    Define(CheckSpec),
    /// Delete a check.
    Delete {
        /// The check.
        check: CheckId,
    },
    /// Pause a check (it raises nothing while paused).
    Pause {
        /// The check.
        check: CheckId,
    },
    /// Resume a paused check.
    Resume {
        /// The check.
        check: CheckId,
    },
}

impl AreaCommand for CheckCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::Define(_) => "define",
            Self::Delete { .. } => "delete",
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
        }
    }
    fn samples() -> Vec<Self> {
        let spec = match CheckEvent::samples().remove(0) {
            CheckEvent::Defined(spec) => spec,
            _ => unreachable!("first check sample is Defined"),
        };
        vec![
            Self::Define(spec),
            Self::Delete {
                check: id("cron-ping"),
            },
            Self::Pause {
                check: id("cron-ping"),
            },
            Self::Resume {
                check: id("cron-ping"),
            },
        ]
    }
}
