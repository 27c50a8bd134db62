//! Jobs: what the executor was asked to do and how it went.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetbus_schemas::commands::job::TaskSpec;
use fleetbus_schemas::events::job::{JobEvent, JobOutcome, JobRequest, RunType};
use fleetbus_schemas::events::Event;
use fleetbus_schemas::{Actor, CommandId, Envelope, HostId, JobId, TaskId};
use serde::{Deserialize, Serialize};

/// Jobs kept in the projection; older ones stay in the log.
pub const MAX_JOBS: usize = 10_000;
/// Jobs whose output tail is kept; older ones keep only their numbers.
pub const JOBS_WITH_TAIL: usize = 500;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Running on its host.
    Running,
    /// Exited 0.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Interrupted by an executor restart and run again.
    Restarted,
}

impl JobState {
    /// Lowercase name (as on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Restarted => "restarted",
        }
    }

    /// True once the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id.
    pub job: JobId,
    /// Target host.
    pub host: HostId,
    /// Kind of work.
    pub run_type: RunType,
    /// One-line description.
    pub summary: String,
    /// What it runs (absent in views folded before it was kept).
    #[serde(default)]
    pub request: Option<JobRequest>,
    /// State.
    pub state: JobState,
    /// Who asked.
    pub actor: Actor,
    /// The command that created it.
    pub command: Option<CommandId>,
    /// When it was queued.
    pub scheduled_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last progress: (step, total, message).
    pub progress: Option<(u32, u32, String)>,
    /// Output bytes so far.
    pub output_bytes: u64,
    /// How it ended.
    pub outcome: Option<JobOutcome>,
    /// Failed step, if a batch failed.
    pub failed_step: Option<u32>,
    /// Why it failed or restarted.
    pub reason: Option<String>,
}

/// Jobs by id (ULIDs sort by creation), and the saved tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// Jobs by id.
    pub jobs: BTreeMap<JobId, JobView>,
    /// Saved tasks by id.
    pub tasks: BTreeMap<TaskId, TaskSpec>,
}

impl Jobs {
    /// Folds one event.
    pub fn apply(&mut self, _seq: u64, env: &Envelope) {
        let Event::Job(event) = &env.event else {
            return;
        };
        if let JobEvent::Scheduled {
            job,
            host,
            run_type,
            summary,
            request,
            ..
        } = event
        {
            self.jobs.entry(*job).or_insert_with(|| JobView {
                job: *job,
                host: host.clone(),
                run_type: *run_type,
                summary: summary.clone(),
                request: Some(request.clone()),
                state: JobState::Queued,
                actor: env.actor.clone(),
                command: env.causation,
                scheduled_at: env.time,
                started_at: None,
                finished_at: None,
                progress: None,
                output_bytes: 0,
                outcome: None,
                failed_step: None,
                reason: None,
            });
            self.bound();
            return;
        }
        match event {
            JobEvent::TaskSaved(spec) => {
                self.tasks.insert(spec.task.clone(), spec.clone());
                return;
            }
            JobEvent::TaskDeleted { task } => {
                self.tasks.remove(task);
                return;
            }
            _ => {}
        }
        let Some(view) = event.job().and_then(|job| self.jobs.get_mut(&job)) else {
            return;
        };
        match event {
            JobEvent::Scheduled { .. } | JobEvent::TaskSaved(_) | JobEvent::TaskDeleted { .. } => {}
            JobEvent::Started { .. } => {
                view.state = JobState::Running;
                view.started_at = Some(env.time);
            }
            JobEvent::Progress {
                step,
                total,
                message,
                ..
            } => view.progress = Some((*step, *total, message.clone())),
            JobEvent::OutputSize { bytes, .. } => view.output_bytes = *bytes,
            JobEvent::Succeeded { outcome, .. } => finish(view, JobState::Succeeded, outcome, env),
            JobEvent::Failed {
                outcome,
                failed_step,
                reason,
                ..
            } => {
                finish(view, JobState::Failed, outcome, env);
                view.failed_step = *failed_step;
                view.reason = Some(reason.clone());
            }
            JobEvent::Cancelled { outcome, .. } => finish(view, JobState::Cancelled, outcome, env),
            JobEvent::Restarted { rerun, reason, .. } => {
                view.state = if *rerun {
                    JobState::Restarted
                } else {
                    JobState::Failed
                };
                view.reason = Some(reason.clone());
                if !*rerun {
                    view.finished_at = Some(env.time);
                }
            }
        }
    }

    fn bound(&mut self) {
        while self.jobs.len() > MAX_JOBS {
            self.jobs.pop_first();
        }
        if self.jobs.len() > JOBS_WITH_TAIL {
            let keep_from = self.jobs.len() - JOBS_WITH_TAIL;
            if let Some(view) = self.jobs.values_mut().nth(keep_from - 1) {
                if let Some(outcome) = view.outcome.as_mut() {
                    outcome.tail.clear();
                }
            }
        }
    }

    /// Jobs newest first, optionally only for one host or in one state.
    pub fn list<'a>(
        &'a self,
        host: Option<&'a HostId>,
        state: Option<JobState>,
    ) -> impl Iterator<Item = &'a JobView> {
        self.jobs.values().rev().filter(move |j| {
            host.is_none_or(|h| &j.host == h) && state.is_none_or(|s| j.state == s)
        })
    }
}

fn finish(view: &mut JobView, state: JobState, outcome: &JobOutcome, env: &Envelope) {
    view.state = state;
    view.finished_at = Some(env.time);
    view.output_bytes = outcome.output_bytes;
    view.outcome = Some(outcome.clone());
}
