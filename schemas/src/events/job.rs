//! Jobs run by the executor. Owned by the executor. Entity token: the job id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_ulid, DomainEvent};
use crate::ids::{HostId, JobId};

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
}

impl JobEvent {
    /// The job the event is about.
    pub fn job(&self) -> JobId {
        match self {
            Self::Scheduled { job, .. }
            | Self::Started { job, .. }
            | Self::Progress { job, .. }
            | Self::OutputSize { job, .. }
            | Self::Succeeded { job, .. }
            | Self::Failed { job, .. }
            | Self::Cancelled { job, .. }
            | Self::Restarted { job, .. } => *job,
        }
    }
}

impl DomainEvent for JobEvent {
    fn entity(&self) -> String {
        self.job().to_string()
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
        ]
    }
}
