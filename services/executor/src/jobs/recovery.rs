//! Crash recovery from the journal, and cancelling everything when the drain period ends.

use fleetbus_schemas::events::job::{JobEvent, JobOutcome};
use fleetbus_schemas::Event;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{duplicate_key, Engine, Live};
use crate::error::ExecError;
use crate::journal::{Entry, JobRecord, Unfinished};

/// Why an unfinished job is (or is not) run again.
fn restart_reason(started: bool, idempotent: bool) -> String {
    match (started, idempotent) {
        (false, _) => "the executor restarted before the job began; running it now".to_string(),
        (true, true) => {
            "the executor restarted while the job ran; it is idempotent, running it again"
                .to_string()
        }
        (true, false) => {
            "the executor restarted while the job ran; it is not idempotent, so it is not run again"
                .to_string()
        }
    }
}

impl Engine {
    /// Crash recovery: jobs the journal says never finished. Started ones are marked
    /// `restarted`, and re-run only when idempotent (else failed with that reason); jobs that never
    /// started simply run now.
    pub(crate) async fn recover(&self, unfinished: Vec<Unfinished>) -> Result<(), ExecError> {
        for u in unfinished {
            let r = u.record;
            let rerun = !u.started || r.idempotent;
            let reason = restart_reason(u.started, r.idempotent);
            warn!(job = %r.job, host = %r.host, rerun, "recovering unfinished job");
            self.inner
                .bus
                .event(
                    &r.actor,
                    Some(r.causation),
                    Event::Job(JobEvent::Restarted {
                        job: r.job,
                        rerun,
                        reason: reason.clone(),
                    }),
                )
                .await?;
            if rerun {
                self.requeue(r);
            } else {
                self.fail_unrecoverable(&r, reason).await?;
            }
        }
        self.pump();
        Ok(())
    }

    /// Puts a recovered job back at the end of the queue under its old id.
    fn requeue(&self, r: JobRecord) {
        let key = duplicate_key(&r.host, &r.request);
        let mut st = self.lock();
        st.queue.push_back(r.job);
        st.jobs.insert(
            r.job,
            Live {
                record: r,
                key,
                cancel: CancellationToken::new(),
                running: false,
            },
        );
    }

    /// A job that ran when the executor stopped and may not run twice: it failed.
    async fn fail_unrecoverable(&self, r: &JobRecord, reason: String) -> Result<(), ExecError> {
        self.inner.journal.write(Entry::Finished { job: r.job });
        self.inner
            .bus
            .event(
                &r.actor,
                Some(r.causation),
                Event::Job(JobEvent::Failed {
                    job: r.job,
                    outcome: JobOutcome {
                        exit_code: None,
                        duration_ms: 0,
                        run_type: r.run_type,
                        output_bytes: 0,
                        tail: String::new(),
                    },
                    failed_step: None,
                    reason,
                }),
            )
            .await?;
        Ok(())
    }

    /// Cancels every queued and running job (shutdown after the drain period).
    pub(crate) fn cancel_all(&self) {
        for l in self.lock().jobs.values() {
            l.cancel.cancel();
        }
    }
}
