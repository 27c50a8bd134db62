//! The web service's private cache of what no query model answers: the shared projections
//! (jobs and saved tasks among them: `fleetbus_projections::Jobs`, the fold ingest keeps too),
//! schedules and the notification log. A pure fold of the EVENTS stream, rebuilt on start.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use fleetbus_projections::JobView;
use fleetbus_schemas::commands::job::TaskSpec;
use fleetbus_schemas::events::schedule::ScheduleSpec;
use fleetbus_schemas::events::{AgentEvent, ScheduleEvent};
use fleetbus_schemas::{AgentId, Envelope, Event, HostId, JobId, ScheduleId, TaskId};

/// Notification log entries kept in memory.
pub(crate) const MAX_NOTIFICATIONS: usize = 1_000;

/// A schedule and whether it is paused.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    /// Its definition.
    pub spec: ScheduleSpec,
    /// Paused?
    pub paused: bool,
    /// The last slot fired.
    pub last_fired: Option<DateTime<Utc>>,
}

/// One line of the notification log.
#[derive(Debug, Clone)]
pub struct NotificationLine {
    /// Log sequence.
    pub seq: u64,
    /// When.
    pub time: DateTime<Utc>,
    /// `sent`, `failed`, `suppressed`, …
    pub kind: String,
    /// The event body as JSON (no credential material: notification events are public).
    pub detail: serde_json::Value,
}

/// The fold.
#[derive(Debug, Default)]
pub struct WebFold {
    /// Schedules.
    pub schedules: BTreeMap<ScheduleId, ScheduleRecord>,
    /// Notification decisions, newest last.
    pub notifications: VecDeque<NotificationLine>,
    /// The shared projections (fleet status, alerts, counts, jobs and saved tasks, registry
    /// without credentials), folded from the same events ingest folds, so they give the same
    /// answers and alert ids.
    pub proj: fleetbus_projections::Projections,
    /// Agents blocked now. Which host an agent is on is told by its key event, a secret event
    /// the `web` user cannot read, so the shared fold never marks their hosts blocked here;
    /// the host is learnt from the agent's reports and notices instead.
    pub blocked_agents: BTreeSet<AgentId>,
}

impl WebFold {
    /// Jobs by id (ULIDs sort by creation time): the shared job fold.
    pub fn jobs(&self) -> &BTreeMap<JobId, JobView> {
        &self.proj.jobs.jobs
    }

    /// Saved tasks: the shared job fold.
    pub fn tasks(&self) -> &BTreeMap<TaskId, TaskSpec> {
        &self.proj.jobs.tasks
    }

    /// Applies one event.
    pub fn apply(&mut self, seq: u64, env: &Envelope) {
        self.proj.apply(seq, env);
        match &env.event {
            Event::Agent(e) => self.apply_blocked(e),
            Event::Schedule(e) => self.apply_schedule(e),
            Event::Notification(e) => {
                if self.notifications.len() >= MAX_NOTIFICATIONS {
                    self.notifications.pop_front();
                }
                let body = serde_json::to_value(e).unwrap_or_default();
                self.notifications.push_back(NotificationLine {
                    seq,
                    time: env.time,
                    kind: body["type"].as_str().unwrap_or("").to_owned(),
                    detail: body["data"].clone(),
                });
            }
            _ => {}
        }
    }

    fn apply_blocked(&mut self, event: &AgentEvent) {
        let mark = |hosts: &mut BTreeMap<HostId, fleetbus_projections::HostStatus>,
                    agent: &AgentId,
                    blocked: bool| {
            for h in hosts.values_mut() {
                if h.agent.as_ref() == Some(agent) {
                    h.blocked = blocked;
                }
            }
        };
        match event {
            AgentEvent::Blocked { agent, .. } => {
                self.blocked_agents.insert(agent.clone());
                mark(&mut self.proj.fleet.hosts, agent, true);
            }
            AgentEvent::Unblocked { agent } => {
                self.blocked_agents.remove(agent);
                mark(&mut self.proj.fleet.hosts, agent, false);
            }
            AgentEvent::Reported(r) if self.blocked_agents.contains(&r.agent) => {
                if let Some(h) = self.proj.fleet.hosts.get_mut(&r.host) {
                    h.blocked = true;
                }
            }
            AgentEvent::Raised(n) if self.blocked_agents.contains(&n.agent) => {
                if let Some(h) = self.proj.fleet.hosts.get_mut(&n.host) {
                    h.blocked = true;
                }
            }
            _ => {}
        }
    }

    fn apply_schedule(&mut self, event: &ScheduleEvent) {
        match event {
            ScheduleEvent::Created(spec) | ScheduleEvent::Updated(spec) => {
                let paused = self.schedules.get(&spec.schedule).is_some_and(|s| s.paused);
                let last_fired = self
                    .schedules
                    .get(&spec.schedule)
                    .and_then(|s| s.last_fired);
                self.schedules.insert(
                    spec.schedule.clone(),
                    ScheduleRecord {
                        spec: spec.clone(),
                        paused,
                        last_fired,
                    },
                );
            }
            ScheduleEvent::Paused { schedule } => {
                if let Some(s) = self.schedules.get_mut(schedule) {
                    s.paused = true;
                }
            }
            ScheduleEvent::Resumed { schedule } => {
                if let Some(s) = self.schedules.get_mut(schedule) {
                    s.paused = false;
                }
            }
            ScheduleEvent::Deleted { schedule } => {
                self.schedules.remove(schedule);
            }
            ScheduleEvent::Fired { schedule, slot, .. } => {
                if let Some(s) = self.schedules.get_mut(schedule) {
                    s.last_fired = Some(*slot);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_projections::JobState;
    use fleetbus_schemas::events::job::{JobOutcome, JobRequest, RunType};
    use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction};
    use fleetbus_schemas::events::JobEvent;
    use fleetbus_schemas::Actor;

    fn env(event: Event) -> Envelope {
        Envelope::new("test", Actor::service("executor"), None, event)
    }

    #[test]
    fn given_a_job_lifecycle_when_folded_then_the_record_follows_it() {
        let mut fold = WebFold::default();
        let job = JobId::new();
        let host: HostId = "web-1".parse().expect("id");
        let outcome = JobOutcome {
            exit_code: Some(3),
            duration_ms: 1500,
            run_type: RunType::Batch,
            output_bytes: 10,
            tail: "boom\n".into(),
        };
        let events = [
            JobEvent::Scheduled {
                job,
                host: host.clone(),
                run_type: RunType::Batch,
                summary: "batch".into(),
                queue_position: 0,
                request: JobRequest::Batch {
                    script: "false".into(),
                },
                idempotent: false,
            },
            JobEvent::Started { job, host },
            JobEvent::Progress {
                job,
                step: 2,
                total: 3,
                message: "false".into(),
            },
            JobEvent::Failed {
                job,
                outcome,
                failed_step: Some(2),
                reason: "step 2 exited 3".into(),
            },
        ];
        for (i, e) in events.into_iter().enumerate() {
            fold.apply(i as u64 + 1, &env(Event::Job(e)));
            if i == 1 {
                assert_eq!(fold.jobs()[&job].state, JobState::Running);
            }
        }
        let r = &fold.jobs()[&job];
        assert_eq!(r.state, JobState::Failed);
        assert_eq!(r.progress, Some((2, 3, "false".into())));
        assert_eq!(r.outcome.as_ref().and_then(|o| o.exit_code), Some(3));
        assert_eq!(r.reason.as_deref(), Some("step 2 exited 3"));
        assert!(r.finished_at.is_some());
        // Events for unknown jobs change nothing.
        fold.apply(
            9,
            &env(Event::Job(JobEvent::Started {
                job: JobId::new(),
                host: "x".parse().expect("id"),
            })),
        );
        assert_eq!(fold.jobs().len(), 1);
    }

    #[test]
    fn given_schedule_and_task_events_when_folded_then_state_tracks_them() {
        let mut fold = WebFold::default();
        let spec = ScheduleSpec {
            schedule: "poll".parse().expect("id"),
            cron: "0 * * * * *".into(),
            time_zone: "UTC".into(),
            action: ScheduleAction::PollStatus {
                targets: Default::default(),
            },
            missed: MissedPolicy::Skip,
        };
        let id = spec.schedule.clone();
        fold.apply(
            1,
            &env(Event::Schedule(ScheduleEvent::Created(spec.clone()))),
        );
        fold.apply(
            2,
            &env(Event::Schedule(ScheduleEvent::Paused {
                schedule: id.clone(),
            })),
        );
        fold.apply(3, &env(Event::Schedule(ScheduleEvent::Updated(spec))));
        assert!(fold.schedules[&id].paused, "an update keeps the pause");
        fold.apply(
            4,
            &env(Event::Schedule(ScheduleEvent::Resumed {
                schedule: id.clone(),
            })),
        );
        assert!(!fold.schedules[&id].paused);
        fold.apply(
            5,
            &env(Event::Schedule(ScheduleEvent::Deleted {
                schedule: id.clone(),
            })),
        );
        assert!(fold.schedules.is_empty());

        let task = TaskSpec {
            task: "t".parse().expect("id"),
            description: String::new(),
            template: "uptime".into(),
            params: vec![],
            sudo: false,
            idempotent: true,
            nice: None,
            ionice_class: None,
        };
        fold.apply(6, &env(Event::Job(JobEvent::TaskSaved(task.clone()))));
        assert_eq!(fold.tasks().len(), 1);
        fold.apply(
            7,
            &env(Event::Job(JobEvent::TaskDeleted { task: task.task })),
        );
        assert!(fold.tasks().is_empty());
    }
}
