//! Work for the executor (`fleet.cmd.job.<verb>`). Owned by the executor.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AreaCommand, Targets};
use crate::events::job::sample_task;
pub use crate::events::job::{ParamSpec, ParamType, TaskSpec};
use crate::events::service::ServiceAction;
use crate::events::{id, sample_ulid};
use crate::ids::{HostId, JobId, ServiceName, TaskId};

/// Executor commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum JobCommand {
    /// Run a service action (a dashboard button).
    RunAction {
        /// The host.
        host: HostId,
        /// The service.
        service: ServiceName,
        /// The action.
        action: ServiceAction,
        /// For `logs`: how many lines (capped at 500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
    /// Run a saved task.
    RunTask {
        /// The task.
        task: TaskId,
        /// Parameter values.
        #[serde(default)]
        params: BTreeMap<String, serde_json::Value>,
        /// Where.
        targets: Targets,
    },
    /// Run a batch script (one command per line).
    RunBatch {
        /// The script text.
        script: String,
        /// Where.
        targets: Targets,
    },
    /// Run a privileged verb, `VERB-NOUN {json}`.
    RunVerb {
        /// The verb, e.g. `RESTART-SERVICE`.
        verb: String,
        /// JSON-typed arguments.
        args: serde_json::Value,
        /// Where.
        targets: Targets,
    },
    /// Run an ad-hoc command (admin only, on hosts that allow it).
    RunAdhoc {
        /// The host.
        host: HostId,
        /// The command line.
        command: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Create or replace a saved task.
    SaveTask(TaskSpec),
    /// Delete a saved task.
    DeleteTask {
        /// The task.
        task: TaskId,
    },
    /// Read a host's resources (cpu, memory, disk, load, uptime) over SSH, for hosts without an
    /// agent; told as a `host.resources_observed` event.
    ReadResources {
        /// The host.
        host: HostId,
    },
}

impl AreaCommand for JobCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::RunAction { .. } => "run_action",
            Self::RunTask { .. } => "run_task",
            Self::RunBatch { .. } => "run_batch",
            Self::RunVerb { .. } => "run_verb",
            Self::RunAdhoc { .. } => "run_adhoc",
            Self::Cancel { .. } => "cancel",
            Self::SaveTask(_) => "save_task",
            Self::DeleteTask { .. } => "delete_task",
            Self::ReadResources { .. } => "read_resources",
        }
    }
    fn samples() -> Vec<Self> {
        let targets = Targets {
            hosts: vec![id("web-1")],
            ..Targets::default()
        };
        vec![
            Self::RunAction {
                host: id("web-1"),
                service: id("nginx"),
                action: ServiceAction::Restart,
                lines: None,
            },
            Self::RunTask {
                task: id("rotate-logs"),
                params: BTreeMap::from([("keep".into(), serde_json::json!(7))]),
                targets: targets.clone(),
            },
            Self::RunBatch {
                script: "cd /srv\nls -l\n".into(),
                targets: targets.clone(),
            },
            Self::RunVerb {
                verb: "RESTART-SERVICE".into(),
                args: serde_json::json!({"service": "nginx"}),
                targets,
            },
            Self::RunAdhoc {
                host: id("web-1"),
                command: "uptime".into(),
            },
            Self::Cancel {
                job: JobId(sample_ulid(11)),
            },
            Self::SaveTask(sample_task()),
            Self::DeleteTask {
                task: id("rotate-logs"),
            },
            Self::ReadResources { host: id("web-1") },
        ]
    }
}
