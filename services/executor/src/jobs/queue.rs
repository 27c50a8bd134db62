//! The queue and its limits: FIFO order, at most `max_concurrent` running jobs and at most
//! `max_per_host` on one host; positions as told in `job.scheduled`; cancel of queued and running
//! jobs.

use std::collections::HashMap;

use fleetbus_schemas::events::job::{JobEvent, JobOutcome};
use fleetbus_schemas::{CommandEnvelope, Event, JobId};
use tracing::info;

use super::{Engine, State};
use crate::config::Limits;
use crate::error::{ExecError, Rejection};
use crate::journal::{Entry, JobRecord};

/// Queue positions after admission: 0 for jobs that will start now, else 1-based place among
/// those that wait.
pub(super) fn positions(st: &State, limits: &Limits) -> HashMap<JobId, u32> {
    let mut running = st.running;
    let mut per_host = st.per_host.clone();
    let mut out = HashMap::new();
    let mut waiting = 0u32;
    for job in &st.queue {
        let Some(l) = st.jobs.get(job) else { continue };
        let n = per_host.entry(l.record.host.clone()).or_default();
        if running < limits.max_concurrent && *n < limits.max_per_host {
            running += 1;
            *n += 1;
            out.insert(*job, 0);
        } else {
            waiting += 1;
            out.insert(*job, waiting);
        }
    }
    out
}

/// Takes the queued jobs that may start now off the queue, oldest first, and counts them as
/// running.
fn take_startable(st: &mut State, limits: &Limits) -> Vec<JobId> {
    let mut start = Vec::new();
    let mut i = 0;
    while i < st.queue.len() && st.running < limits.max_concurrent {
        let job = st.queue[i];
        let Some(host) = st.jobs.get(&job).map(|l| l.record.host.clone()) else {
            st.queue.remove(i);
            continue;
        };
        if st.per_host.get(&host).copied().unwrap_or(0) >= limits.max_per_host {
            i += 1;
            continue;
        }
        st.queue.remove(i);
        st.running += 1;
        *st.per_host.entry(host).or_default() += 1;
        if let Some(l) = st.jobs.get_mut(&job) {
            l.running = true;
        }
        start.push(job);
    }
    start
}

impl Engine {
    /// Starts queued jobs, oldest first, as far as the limits allow.
    pub(super) fn pump(&self) {
        let start = take_startable(&mut self.lock(), &self.inner.limits);
        for job in start {
            let engine = self.clone();
            self.inner
                .tracker
                .spawn(async move { engine.run(job).await });
        }
    }

    /// A finished job leaves the engine and frees its slots.
    pub(super) fn release(&self, record: &JobRecord) {
        let mut st = self.lock();
        st.jobs.remove(&record.job);
        st.running = st.running.saturating_sub(1);
        if let Some(n) = st.per_host.get_mut(&record.host) {
            *n = n.saturating_sub(1);
        }
    }

    /// Cancels a queued job at once (`job.cancelled`), or signals a running one (its runner
    /// tells the outcome).
    pub(super) async fn cancel(
        &self,
        env: &CommandEnvelope,
        subject: &str,
        job: JobId,
    ) -> Result<(), ExecError> {
        let queued = {
            let mut st = self.lock();
            match st.jobs.get(&job) {
                None => None,
                Some(l) if l.running => {
                    l.cancel.cancel();
                    Some(None)
                }
                Some(_) => {
                    st.queue.retain(|j| *j != job);
                    st.jobs.remove(&job).map(|l| Some(l.record))
                }
            }
        };
        match queued {
            None => {
                self.reject(
                    env,
                    subject,
                    Rejection::NotFound(format!("no queued or running job {job}")),
                )
                .await
            }
            Some(None) => {
                info!(job = %job, actor = %env.actor.name, "cancelling running job");
                Ok(())
            }
            Some(Some(record)) => {
                info!(job = %job, actor = %env.actor.name, "cancelled queued job");
                self.inner.journal.write(Entry::Finished { job });
                self.inner
                    .bus
                    .event(
                        &env.actor,
                        Some(env.id),
                        Event::Job(JobEvent::Cancelled {
                            job,
                            outcome: JobOutcome {
                                exit_code: None,
                                duration_ms: 0,
                                run_type: record.run_type,
                                output_bytes: 0,
                                tail: String::new(),
                            },
                        }),
                    )
                    .await
                    .map(|_| ())
            }
        }
    }
}
