//! Work for the executor (`fleet.cmd.job.<verb>`). Owned by the executor.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AreaCommand, Targets};
use crate::events::service::ServiceAction;
use crate::events::{id, sample_ulid};
use crate::ids::{HostId, JobId, ServiceName, TaskId};

/// The type of a task parameter, with its validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParamType {
    /// A string that must match a regular expression (anchored).
    String {
        /// The pattern.
        pattern: String,
    },
    /// An integer within a range.
    Integer {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// One of a fixed set of strings.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// true or false.
    Boolean,
}

/// One typed task parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParamSpec {
    /// Its name, used as `{name}` in the template.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Default value, if optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// A saved task: a command template with typed parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskSpec {
    /// Its id.
    pub task: TaskId,
    /// What it does, for people.
    pub description: String,
    /// Command template; `{name}` placeholders are replaced by shell-quoted values.
    pub template: String,
    /// The parameters.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// Run under `sudo -n`.
    #[serde(default)]
    pub sudo: bool,
    /// Safe to run again after an executor crash.
    #[serde(default)]
    pub idempotent: bool,
    /// `nice` level (−20..19) for heavy jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i8>,
    /// `ionice` class (1 realtime, 2 best-effort, 3 idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionice_class: Option<u8>,
}

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
            Self::SaveTask(TaskSpec {
                task: id("rotate-logs"),
                description: "rotate logs, keep N".into(),
                template: "logrotate --keep {keep}".into(),
                params: vec![ParamSpec {
                    name: "keep".into(),
                    ty: ParamType::Integer { min: 1, max: 30 },
                    default: Some(serde_json::json!(7)),
                }],
                sudo: true,
                idempotent: true,
                nice: Some(10),
                ionice_class: Some(3),
            }),
            Self::DeleteTask {
                task: id("rotate-logs"),
            },
        ]
    }
}
