//! Running one job: `job.started`, the remote exec over the SSH pool (shared for status reads),
//! live output with sequence numbers, the outcome event, reachability of the host, and the
//! observations a successful run yields (service status, resources).

use std::time::{Duration, Instant};

use chrono::Utc;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::job::{JobEvent, JobOutcome, OutputChunk, OutputStream};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceSpec};
use fleetbus_schemas::{Event, HostId, JobId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{executor_actor, After, Engine, Plan, TAIL_BYTES};
use crate::bus::Bus;
use crate::error::{ExecError, Rejection};
use crate::inventory::Inventory;
use crate::journal::{Entry, JobRecord};
use crate::ssh::{End, ExecEvent, ExecOutcome, Target};
use crate::{resources, status, templates};

impl Engine {
    pub(super) async fn run(&self, job: JobId) {
        let Some((record, cancel)) = self
            .lock()
            .jobs
            .get(&job)
            .map(|l| (l.record.clone(), l.cancel.clone()))
        else {
            return;
        };
        let started = Instant::now();
        let result = async {
            self.inner
                .bus
                .event(
                    &record.actor,
                    Some(record.causation),
                    Event::Job(JobEvent::Started {
                        job,
                        host: record.host.clone(),
                    }),
                )
                .await?;
            self.inner.journal.write(Entry::Started { job });
            info!(job = %job, host = %record.host, "job started");
            self.execute(&record, &cancel, started).await
        }
        .await;
        if let Err(e) = result {
            warn!(job = %job, error = %e, "job events could not be published");
        }
        self.inner.journal.write(Entry::Finished { job });
        self.release(&record);
        self.pump();
    }

    fn target(&self, inv: &Inventory, host: &HostId) -> Result<Target, Rejection> {
        let h = inv.host(host)?;
        Ok(Target {
            host: host.clone(),
            address: h.address.clone(),
            port: h.port,
            user: h.user.clone(),
            policy: h.host_key_policy,
        })
    }

    async fn execute(
        &self,
        record: &JobRecord,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<(), ExecError> {
        let planned = {
            let st = self.lock();
            self.target(&st.inventory, &record.host).and_then(|t| {
                self.plan(&st.inventory, &record.host, &record.request)
                    .map(|p| (t, p))
            })
        };
        let (target, plan) = match planned {
            Ok(x) => x,
            Err(r) => {
                let event = JobEvent::Failed {
                    job: record.job,
                    outcome: outcome(record, started, None, 0, String::new()),
                    failed_step: None,
                    reason: format!("cannot run any more: {r}"),
                };
                return self.finish(record, event).await;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward_output(
            self.inner.bus.clone(),
            record.clone(),
            plan.steps.clone(),
            rx,
        ));
        // A status read has no side effects: it may share one remote exec with other status
        // reads on the same host (see `ssh::coalesce`). Everything else runs alone.
        let timeout = Some(self.inner.command_timeout);
        let result = if matches!(plan.after, After::Status(_)) {
            self.inner
                .pool
                .exec_shared(&target, &plan.line, timeout, cancel, &tx)
                .await
        } else {
            self.inner
                .pool
                .exec(&target, &plan.line, timeout, cancel, &tx)
                .await
        };
        drop(tx);
        let output = forwarder.await.unwrap_or_default();
        let event = self
            .outcome_event(record, started, &target, &plan, result, output)
            .await;
        self.finish(record, event).await
    }

    /// The event that ends a run, from the exec result and the forwarded output
    /// `(bytes, tail, stdout)`; a successful run first publishes what it observed.
    async fn outcome_event(
        &self,
        record: &JobRecord,
        started: Instant,
        target: &Target,
        plan: &Plan,
        result: Result<ExecOutcome, ExecError>,
        (bytes, tail, text): (u64, String, String),
    ) -> JobEvent {
        let job = record.job;
        let o = match result {
            Err(e) => {
                self.note_reachability(&record.host, Some(&e)).await;
                return JobEvent::Failed {
                    job,
                    outcome: outcome(record, started, None, bytes, tail),
                    failed_step: None,
                    reason: e.to_string(),
                };
            }
            Ok(o) => o,
        };
        self.note_reachability(&record.host, None).await;
        let outcome = outcome(record, started, o.exit_code, bytes, tail);
        match o.end {
            End::Cancelled => JobEvent::Cancelled { job, outcome },
            End::TimedOut => JobEvent::Failed {
                job,
                outcome,
                failed_step: o.failed_step.map(|s| s.0),
                reason: format!(
                    "timed out after {} s; the remote process group was {}",
                    self.inner.command_timeout.as_secs(),
                    if o.killed {
                        "killed"
                    } else {
                        "signalled but could not be confirmed gone"
                    }
                ),
            },
            End::Exited if o.exit_code == Some(0) => {
                self.after(record, target, &plan.after, &text).await;
                JobEvent::Succeeded { job, outcome }
            }
            End::Exited => JobEvent::Failed {
                job,
                outcome,
                failed_step: o.failed_step.map(|s| s.0),
                reason: exit_reason(&o, &plan.steps),
            },
        }
    }

    async fn finish(&self, record: &JobRecord, event: JobEvent) -> Result<(), ExecError> {
        let kind = match &event {
            JobEvent::Succeeded { .. } => "succeeded",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Cancelled { .. } => "cancelled",
            _ => "ended",
        };
        if let JobEvent::Failed { reason, .. } = &event {
            info!(job = %record.job, host = %record.host, reason = %reason, "job failed");
        } else {
            info!(job = %record.job, host = %record.host, kind, "job finished");
        }
        self.inner
            .bus
            .event(&record.actor, Some(record.causation), Event::Job(event))
            .await
            .map(|_| ())
    }

    async fn note_reachability(&self, host: &HostId, err: Option<&ExecError>) {
        let unreachable = matches!(
            err,
            Some(
                ExecError::Connect { .. }
                    | ExecError::Timeout { .. }
                    | ExecError::Auth { .. }
                    | ExecError::HostKeyMismatch { .. }
                    | ExecError::HostKeyUnknown { .. }
                    | ExecError::NoCommonAlgorithm { .. }
            )
        );
        let change = {
            let mut st = self.lock();
            if unreachable {
                st.unreachable.insert(host.clone())
            } else if err.is_none() {
                st.unreachable.remove(host)
            } else {
                false
            }
        };
        if !change {
            return;
        }
        let event = match err {
            Some(e) => HostEvent::Unreachable {
                host: host.clone(),
                reason: e.to_string(),
            },
            None => HostEvent::Reachable { host: host.clone() },
        };
        if let Err(e) = self
            .inner
            .bus
            .event(&executor_actor(), None, Event::Host(event))
            .await
        {
            warn!(host = %host, error = %e, "cannot publish reachability");
        }
    }

    /// Publishes what a successful run observed (service status, resources).
    async fn after(&self, record: &JobRecord, target: &Target, after: &After, text: &str) {
        let event = match after {
            After::Nothing => return,
            After::Status(spec) => Some(status_event(spec, text)),
            After::FollowStatus(spec) => self.follow_status(target, spec).await,
            After::Resources => match resources::parse(text) {
                Ok(r) => Some(Event::Host(HostEvent::ResourcesObserved {
                    host: record.host.clone(),
                    resources: r,
                })),
                Err(e) => {
                    warn!(host = %record.host, error = %e, "resources output not understood");
                    None
                }
            },
        };
        if let Some(e) = event {
            if let Err(err) = self
                .inner
                .bus
                .event(&record.actor, Some(record.causation), e)
                .await
            {
                warn!(job = %record.job, error = %err, "cannot publish observation");
            }
        }
    }

    /// Reads a service's status after an action changed it (a shared, side-effect-free exec).
    async fn follow_status(&self, target: &Target, spec: &ServiceSpec) -> Option<Event> {
        let Ok(cmd) = templates::action_command(spec, ServiceAction::Status, None) else {
            return None;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let r = self
            .inner
            .pool
            .exec_shared(
                target,
                &cmd.line,
                Some(Duration::from_secs(30)),
                &CancellationToken::new(),
                &tx,
            )
            .await;
        drop(tx);
        let mut out = String::new();
        while let Some(ev) = rx.recv().await {
            if let ExecEvent::Output {
                stream: OutputStream::Stdout,
                data,
            } = ev
            {
                out.push_str(&data);
            }
        }
        r.ok().map(|_| status_event(spec, &out))
    }
}

fn outcome(
    record: &JobRecord,
    started: Instant,
    exit_code: Option<i32>,
    output_bytes: u64,
    tail: String,
) -> JobOutcome {
    JobOutcome {
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        run_type: record.run_type,
        output_bytes,
        tail,
    }
}

/// Why a run that exited (not cancelled, not timed out) failed.
fn exit_reason(o: &ExecOutcome, steps: &[String]) -> String {
    match (o.failed_step, o.exit_code, &o.exit_signal) {
        (Some((step, code)), _, _) => format!(
            "step {step}/{} failed with exit code {code}: {}",
            steps.len(),
            steps
                .get(step as usize - 1)
                .map(String::as_str)
                .unwrap_or("?")
        ),
        (None, Some(code), _) => format!("exited with code {code}"),
        (None, None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None, None) => "ended without an exit status".into(),
    }
}

fn status_event(spec: &ServiceSpec, text: &str) -> Event {
    let st = status::parse(spec.manager, text, Utc::now());
    Event::Service(ServiceEvent::StatusObserved {
        host: spec.host.clone(),
        name: spec.name.clone(),
        status: st,
    })
}

/// Keeps the last `TAIL_BYTES` of `tail`, cut at a character boundary.
fn trim_tail(tail: &mut String) {
    if tail.len() > TAIL_BYTES {
        let mut cut = tail.len() - TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

/// Publishes output chunks in order with sequence numbers, `progress` for batch steps, and
/// `output_size` at most every second; returns (bytes, last 32 KiB, full stdout for parsing).
async fn forward_output(
    bus: Bus,
    record: JobRecord,
    steps: Vec<String>,
    mut rx: mpsc::UnboundedReceiver<ExecEvent>,
) -> (u64, String, String) {
    let job = record.job;
    let mut seq = 0u64;
    let mut bytes = 0u64;
    let mut tail = String::new();
    let mut stdout = String::new();
    let mut last_size = Instant::now();
    let mut sent_bytes = 0u64;
    while let Some(ev) = rx.recv().await {
        match ev {
            ExecEvent::Output { stream, data } => {
                seq += 1;
                bytes += data.len() as u64;
                tail.push_str(&data);
                trim_tail(&mut tail);
                if stream == OutputStream::Stdout && stdout.len() < 1 << 20 {
                    stdout.push_str(&data);
                }
                let chunk = OutputChunk {
                    job,
                    seq,
                    stream,
                    data,
                };
                if let Err(e) = bus.output(&chunk).await {
                    warn!(job = %job, seq, error = %e, "cannot publish output chunk");
                }
                if last_size.elapsed() >= Duration::from_secs(1) && bytes != sent_bytes {
                    last_size = Instant::now();
                    sent_bytes = bytes;
                    let _ = bus
                        .event(
                            &record.actor,
                            Some(record.causation),
                            Event::Job(JobEvent::OutputSize { job, bytes }),
                        )
                        .await;
                }
            }
            ExecEvent::Step { step, total } => {
                let message = steps.get(step as usize - 1).cloned().unwrap_or_default();
                let _ = bus
                    .event(
                        &record.actor,
                        Some(record.causation),
                        Event::Job(JobEvent::Progress {
                            job,
                            step,
                            total,
                            message,
                        }),
                    )
                    .await;
            }
        }
    }
    (bytes, tail, stdout)
}
