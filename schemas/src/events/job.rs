//! Jobs run by the executor. Owned by the executor. Entity token: the job id.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::ServiceAction;
use super::{id, sample_ulid, DomainEvent};
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
    /// Command template; `{name}` placeholders are replaced by shell-quoted values
    /// (`{{` and `}}` are literal braces). With `sudo`, one simple command (no `;|&<>$` etc.).
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

/// What one job runs on its host: a job command resolved to a single target. Carried by
/// [`JobEvent::Scheduled`] so a job can be re-run from the log alone after an executor crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    /// A service action.
    Action {
        /// The service.
        service: ServiceName,
        /// The action.
        action: ServiceAction,
        /// For logs: lines (capped at 500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
    /// A saved task with its parameter values.
    Task {
        /// The task.
        task: TaskId,
        /// Parameter values.
        #[serde(default)]
        params: BTreeMap<String, serde_json::Value>,
    },
    /// A batch script.
    Batch {
        /// The script text.
        script: String,
    },
    /// A privileged verb.
    Verb {
        /// The verb.
        verb: String,
        /// Its JSON arguments.
        args: serde_json::Value,
    },
    /// An ad-hoc command line.
    Adhoc {
        /// The command line.
        command: String,
    },
    /// Read cpu, memory, disk, load and uptime from `/proc`.
    Resources,
}

/// Which remote stream an output chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One piece of live job output, published on `fleet.out.job.<job>` (stream `OUTPUT`) as it
/// arrives, with `Nats-Msg-Id` `<job>.<seq>`. Not an event: the finished event carries the tail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputChunk {
    /// The job.
    pub job: JobId,
    /// 1-based, gap-free sequence number over both streams.
    pub seq: u64,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// The text, ANSI escapes preserved; never splits a UTF-8 character (invalid bytes become
    /// U+FFFD).
    pub data: String,
}

/// What kind of work a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    /// A service action (dashboard button).
    Action,
    /// A saved task.
    Task,
    /// A batch script.
    Batch,
    /// A privileged verb (`VERB-NOUN {json}`).
    Verb,
    /// An ad-hoc command.
    Adhoc,
}

/// How a job ended, carried by its final event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobOutcome {
    /// Remote exit code, if the command finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The kind of work.
    pub run_type: RunType,
    /// Total bytes of stdout + stderr.
    pub output_bytes: u64,
    /// The last 32 KiB of output (lossy UTF-8).
    pub tail: String,
}

/// Job facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was accepted and queued.
    Scheduled {
        /// The job.
        job: JobId,
        /// The target host.
        host: HostId,
        /// The kind of work.
        run_type: RunType,
        /// A one-line human description (`restart web-1:nginx`).
        summary: String,
        /// Position in the queue (0 = runs now).
        queue_position: u32,
        /// What it runs, so it can be re-run from the log.
        request: JobRequest,
        /// Whether it is safe to run again after an executor crash.
        #[serde(default)]
        idempotent: bool,
    },
    /// The job began on its host.
    Started {
        /// The job.
        job: JobId,
        /// The host.
        host: HostId,
    },
    /// A batch step began (`STEP step/total`).
    Progress {
        /// The job.
        job: JobId,
        /// 1-based step.
        step: u32,
        /// Number of steps.
        total: u32,
        /// The step's command line.
        message: String,
    },
    /// The job's output grew (sent at most every second).
    OutputSize {
        /// The job.
        job: JobId,
        /// Bytes so far.
        bytes: u64,
    },
    /// The job exited 0.
    Succeeded {
        /// The job.
        job: JobId,
        /// How it ended.
        outcome: JobOutcome,
    },
    /// The job failed.
    Failed {
        /// The job.
        job: JobId,
        /// How it ended.
        outcome: JobOutcome,
        /// The batch step that failed (1-based), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_step: Option<u32>,
        /// Why, for people.
        reason: String,
    },
    /// The job was cancelled.
    Cancelled {
        /// The job.
        job: JobId,
        /// How it ended.
        outcome: JobOutcome,
    },
    /// The executor died while the job ran.
    Restarted {
        /// The job.
        job: JobId,
        /// True when it is run again (idempotent task); false when marked failed.
        rerun: bool,
        /// Why.
        reason: String,
    },
    /// A saved task was created or replaced (entity token: the task id).
    TaskSaved(TaskSpec),
    /// A saved task was deleted (entity token: the task id).
    TaskDeleted {
        /// The task.
        task: TaskId,
    },
}

impl JobEvent {
    /// The job the event is about (`None` for task definitions).
    pub fn job(&self) -> Option<JobId> {
        Some(match self {
            Self::Scheduled { job, .. }
            | Self::Started { job, .. }
            | Self::Progress { job, .. }
            | Self::OutputSize { job, .. }
            | Self::Succeeded { job, .. }
            | Self::Failed { job, .. }
            | Self::Cancelled { job, .. }
            | Self::Restarted { job, .. } => *job,
            Self::TaskSaved(_) | Self::TaskDeleted { .. } => return None,
        })
    }
}

impl DomainEvent for JobEvent {
    fn entity(&self) -> String {
        match self {
            Self::TaskSaved(spec) => spec.task.to_string(),
            Self::TaskDeleted { task } => task.to_string(),
            other => other.job().map(|j| j.to_string()).unwrap_or_default(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Scheduled { .. } => "scheduled",
            Self::Started { .. } => "started",
            Self::Progress { .. } => "progress",
            Self::OutputSize { .. } => "output_size",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
            Self::Restarted { .. } => "restarted",
            Self::TaskSaved(_) => "task_saved",
            Self::TaskDeleted { .. } => "task_deleted",
        }
    }
    fn samples() -> Vec<Self> {
        let job = JobId(sample_ulid(11));
        let outcome = JobOutcome {
            exit_code: Some(0),
            duration_ms: 1200,
            run_type: RunType::Action,
            output_bytes: 42,
            tail: "ok\n".into(),
        };
        vec![
            Self::Scheduled {
                job,
                host: id("web-1"),
                run_type: RunType::Action,
                summary: "restart web-1:nginx".into(),
                queue_position: 0,
                request: JobRequest::Action {
                    service: id("nginx"),
                    action: ServiceAction::Restart,
                    lines: None,
                },
                idempotent: false,
            },
            Self::Scheduled {
                job,
                host: id("web-1"),
                run_type: RunType::Task,
                summary: "task rotate-logs on web-1".into(),
                queue_position: 2,
                request: JobRequest::Task {
                    task: id("rotate-logs"),
                    params: BTreeMap::from([("keep".into(), serde_json::json!(7))]),
                },
                idempotent: true,
            },
            Self::Started {
                job,
                host: id("web-1"),
            },
            Self::Progress {
                job,
                step: 1,
                total: 3,
                message: "cd /srv".into(),
            },
            Self::OutputSize { job, bytes: 42 },
            Self::Succeeded {
                job,
                outcome: outcome.clone(),
            },
            Self::Failed {
                job,
                outcome: JobOutcome {
                    exit_code: Some(2),
                    run_type: RunType::Batch,
                    ..outcome.clone()
                },
                failed_step: Some(2),
                reason: "step 2 exited 2".into(),
            },
            Self::Cancelled {
                job,
                outcome: JobOutcome {
                    exit_code: None,
                    ..outcome
                },
            },
            Self::Restarted {
                job,
                rerun: false,
                reason: "executor restarted; task is not idempotent".into(),
            },
            Self::TaskSaved(sample_task()),
            Self::TaskDeleted {
                task: id("rotate-logs"),
            },
        ]
    }
}

/// The sample task used by the golden fixtures of events and commands.
pub(crate) fn sample_task() -> TaskSpec {
    TaskSpec {
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
    }
}
