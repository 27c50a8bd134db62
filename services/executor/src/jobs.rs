//! The job engine: job commands in, job events out. Authorization, validation against the
//! inventory and allowlists, duplicate rejection, FIFO queueing under global and per-host limits,
//! execution over the SSH pool with live output, cancel, and crash recovery from the journal.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use fleetbus_schemas::commands::JobCommand;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::job::{
    JobEvent, JobOutcome, JobRequest, OutputChunk, RunType, TaskSpec,
};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceSpec};
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::{Actor, CommandEnvelope, CommandId, Event, HostId, JobId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::bus::{Bus, SOURCE};
use crate::config::Limits;
use crate::error::{ExecError, Rejection};
use crate::inventory::Inventory;
use crate::journal::{Entry, JobRecord, Journal, Unfinished};
use crate::ssh::{End, ExecEvent, SshPool, Target};
use crate::verbs::VerbPlan;
use crate::{batch, resources, status, tasks, templates};

/// Bytes of output the finished event carries.
pub(crate) const TAIL_BYTES: usize = 32 * 1024;
/// The longest ad-hoc command line.
pub(crate) const MAX_ADHOC: usize = 64 * 1024;

/// What a request turns into on its host.
#[derive(Debug, Clone)]
struct Plan {
    line: String,
    after: After,
    /// Batch steps (for progress messages).
    steps: Vec<String>,
}

/// What to do with a successful run's output.
#[derive(Debug, Clone)]
enum After {
    Nothing,
    /// Parse the output as a status and publish it.
    Status(ServiceSpec),
    /// Run the status command and publish it (after start/stop/restart/reload).
    FollowStatus(ServiceSpec),
    /// Parse the output as resources and publish them.
    Resources,
}

struct Live {
    record: JobRecord,
    key: String,
    cancel: CancellationToken,
    running: bool,
}

#[derive(Default)]
struct State {
    inventory: Inventory,
    jobs: BTreeMap<JobId, Live>,
    queue: VecDeque<JobId>,
    running: usize,
    per_host: HashMap<HostId, usize>,
    unreachable: HashSet<HostId>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    pool: SshPool,
    bus: Bus,
    journal: Journal,
    limits: Limits,
    command_timeout: Duration,
    verbs: BTreeMap<String, TaskSpec>,
    tracker: TaskTracker,
    on_inventory_change: Box<dyn Fn(&Inventory) + Send + Sync>,
}

fn executor_actor() -> Actor {
    Actor::service(SOURCE)
}

/// The one authorization policy (`fleetbus_runtime::authz`), as a rejection.
fn authorize(actor: &Actor, command: &JobCommand) -> Result<(), Rejection> {
    fleetbus_runtime::authz::authorize(actor, &fleetbus_schemas::Command::Job(command.clone()))
        .map_err(|e| Rejection::Forbidden(e.0))
}

fn invalid(e: impl Into<ExecError>) -> Rejection {
    Rejection::Invalid(e.into().to_string())
}

fn run_type(r: &JobRequest) -> RunType {
    match r {
        JobRequest::Action { .. } => RunType::Action,
        JobRequest::Task { .. } => RunType::Task,
        JobRequest::Batch { .. } => RunType::Batch,
        JobRequest::Verb { .. } => RunType::Verb,
        JobRequest::Adhoc { .. } => RunType::Adhoc,
        JobRequest::Resources => RunType::Task,
    }
}

fn summary(host: &HostId, r: &JobRequest) -> String {
    match r {
        JobRequest::Action {
            service, action, ..
        } => {
            format!("{} {host}:{service}", action.as_str())
        }
        JobRequest::Task { task, .. } => format!("task {task} on {host}"),
        JobRequest::Batch { script } => format!(
            "batch ({} steps) on {host}",
            batch::steps(script).map(|s| s.len()).unwrap_or(0)
        ),
        JobRequest::Verb { verb, args } => format!("{verb} {args} on {host}"),
        JobRequest::Adhoc { command } => {
            let short: String = command.chars().take(60).collect();
            format!("ad-hoc on {host}: {short}")
        }
        JobRequest::Resources => format!("resources of {host}"),
    }
}

fn action_idempotent(a: ServiceAction) -> bool {
    !matches!(a, ServiceAction::Restart | ServiceAction::Reload)
}

/// What a job command resolves to.
enum Resolved {
    Jobs(Vec<(HostId, JobRequest)>),
    Cancel(JobId),
    SaveTask(TaskSpec),
    DeleteTask(fleetbus_schemas::TaskId),
}

impl Engine {
    /// A new engine. `on_inventory_change` persists the inventory cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pool: SshPool,
        bus: Bus,
        journal: Journal,
        limits: Limits,
        command_timeout: Duration,
        verbs: BTreeMap<String, TaskSpec>,
        inventory: Inventory,
        on_inventory_change: Box<dyn Fn(&Inventory) + Send + Sync>,
    ) -> Self {
        Engine {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    inventory,
                    ..State::default()
                }),
                pool,
                bus,
                journal,
                limits,
                command_timeout,
                verbs,
                tracker: TaskTracker::new(),
                on_inventory_change,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tracker of running job tasks (for draining on shutdown).
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Applies a registry/task event from the bus to the inventory (and the known-hosts store).
    pub(crate) async fn apply_event(&self, event: &Event) {
        if let Event::Host(h) = event {
            match h {
                HostEvent::KeyPinned {
                    host,
                    algorithm,
                    fingerprint,
                } => {
                    let pinned = crate::ssh::known_hosts::Pinned {
                        algorithm: algorithm.clone(),
                        fingerprint: fingerprint.clone(),
                    };
                    match self.inner.pool.known_hosts().pin(host, pinned) {
                        Ok(true) => {
                            info!(host = %host, fingerprint = %fingerprint, "host key pinned from the log");
                            self.inner.pool.evict(host).await;
                        }
                        Ok(false) => {}
                        Err(e) => warn!(host = %host, error = %e, "cannot store pinned host key"),
                    }
                }
                HostEvent::Updated(spec) => self.inner.pool.evict(&spec.host).await,
                HostEvent::Removed { host } => {
                    self.inner.pool.evict(host).await;
                    if let Err(e) = self.inner.pool.known_hosts().forget(host) {
                        warn!(host = %host, error = %e, "cannot forget host key");
                    }
                }
                _ => {}
            }
        }
        let changed = {
            let mut st = self.lock();
            let before = format!(
                "{:?}",
                (
                    &st.inventory.hosts,
                    &st.inventory.services,
                    &st.inventory.tasks
                )
            );
            st.inventory.apply(event);
            let after = format!(
                "{:?}",
                (
                    &st.inventory.hosts,
                    &st.inventory.services,
                    &st.inventory.tasks
                )
            );
            (before != after).then(|| st.inventory.clone())
        };
        if let Some(inv) = changed {
            (self.inner.on_inventory_change)(&inv);
        }
    }

    /// Handles one command message; every outcome is told by events. Returns an error only when
    /// the bus failed (the message should then be redelivered).
    pub(crate) async fn handle(&self, subject: &str, payload: &[u8]) -> Result<(), ExecError> {
        let env: CommandEnvelope = match fleetbus_schemas::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                #[derive(serde::Deserialize)]
                struct IdOnly {
                    id: CommandId,
                }
                let id = rmp_serde::from_slice::<IdOnly>(payload).ok().map(|i| i.id);
                let kind = match &e {
                    fleetbus_schemas::CodecError::TooLarge { .. } => {
                        fleetbus_schemas::events::system::RejectKind::TooLarge
                    }
                    _ => fleetbus_schemas::events::system::RejectKind::Malformed,
                };
                warn!(subject, error = %e, "malformed command rejected");
                return self
                    .reject_raw(
                        &executor_actor(),
                        id,
                        subject,
                        kind,
                        format!("not a valid job command: {e}"),
                    )
                    .await;
            }
        };
        let fleetbus_schemas::Command::Job(cmd) = &env.command else {
            return self
                .reject(
                    &env,
                    subject,
                    Rejection::Invalid(format!(
                        "the executor takes job commands only, not {}.{}",
                        env.command.area(),
                        env.command.verb()
                    )),
                )
                .await;
        };
        let resolved = {
            let st = self.lock();
            self.resolve(&st.inventory, &env.actor, cmd)
        };
        match resolved {
            Err(r) => self.reject(&env, subject, r).await,
            Ok(Resolved::Jobs(jobs)) => self.schedule(&env, subject, jobs).await,
            Ok(Resolved::Cancel(job)) => self.cancel(&env, subject, job).await,
            Ok(Resolved::SaveTask(spec)) => {
                let e = self
                    .inner
                    .bus
                    .event(
                        &env.actor,
                        Some(env.id),
                        Event::Job(JobEvent::TaskSaved(spec)),
                    )
                    .await?;
                self.apply_event(&e.event).await;
                Ok(())
            }
            Ok(Resolved::DeleteTask(task)) => {
                let e = self
                    .inner
                    .bus
                    .event(
                        &env.actor,
                        Some(env.id),
                        Event::Job(JobEvent::TaskDeleted { task }),
                    )
                    .await?;
                self.apply_event(&e.event).await;
                Ok(())
            }
        }
    }

    async fn reject(
        &self,
        env: &CommandEnvelope,
        subject: &str,
        r: Rejection,
    ) -> Result<(), ExecError> {
        info!(command = %env.id, actor = %env.actor.name, reason = %r, "command rejected");
        self.reject_raw(&env.actor, Some(env.id), subject, r.kind(), r.message())
            .await
    }

    async fn reject_raw(
        &self,
        actor: &Actor,
        id: Option<CommandId>,
        subject: &str,
        reason: fleetbus_schemas::events::system::RejectKind,
        message: String,
    ) -> Result<(), ExecError> {
        self.inner
            .bus
            .event(
                actor,
                id,
                Event::System(SystemEvent::CommandRejected {
                    component: SOURCE.into(),
                    command: id,
                    subject: subject.into(),
                    reason,
                    message,
                }),
            )
            .await
            .map(|_| ())
    }

    fn resolve(
        &self,
        inv: &Inventory,
        actor: &Actor,
        cmd: &JobCommand,
    ) -> Result<Resolved, Rejection> {
        let one = |host: &HostId, req: JobRequest| -> Result<Resolved, Rejection> {
            self.plan(inv, host, &req)?;
            Ok(Resolved::Jobs(vec![(host.clone(), req)]))
        };
        let many = |targets, req: JobRequest| -> Result<Resolved, Rejection> {
            let hosts = inv.select(targets)?;
            let mut out = Vec::new();
            for h in hosts {
                self.plan(inv, &h, &req)?;
                out.push((h, req.clone()));
            }
            Ok(Resolved::Jobs(out))
        };
        authorize(actor, cmd)?;
        match cmd {
            JobCommand::RunAction {
                host,
                service,
                action,
                lines,
            } => one(
                host,
                JobRequest::Action {
                    service: service.clone(),
                    action: *action,
                    lines: *lines,
                },
            ),
            JobCommand::RunTask {
                task,
                params,
                targets,
            } => many(
                targets,
                JobRequest::Task {
                    task: task.clone(),
                    params: params.clone(),
                },
            ),
            JobCommand::RunBatch { script, targets } => many(
                targets,
                JobRequest::Batch {
                    script: script.clone(),
                },
            ),
            JobCommand::RunVerb {
                verb,
                args,
                targets,
            } => many(
                targets,
                JobRequest::Verb {
                    verb: verb.clone(),
                    args: args.clone(),
                },
            ),
            JobCommand::RunAdhoc { host, command } => one(
                host,
                JobRequest::Adhoc {
                    command: command.clone(),
                },
            ),
            JobCommand::ReadResources { host } => one(host, JobRequest::Resources),
            JobCommand::Cancel { job } => Ok(Resolved::Cancel(*job)),
            JobCommand::SaveTask(spec) => {
                tasks::validate(spec).map_err(invalid)?;
                Ok(Resolved::SaveTask(spec.clone()))
            }
            JobCommand::DeleteTask { task } => {
                inv.task(task)?;
                Ok(Resolved::DeleteTask(task.clone()))
            }
        }
    }

    /// Validates a request on a host and builds its command line.
    fn plan(&self, inv: &Inventory, host: &HostId, req: &JobRequest) -> Result<Plan, Rejection> {
        let spec = inv.host(host)?;
        let plain = |line: String| Plan {
            line,
            after: After::Nothing,
            steps: Vec::new(),
        };
        match req {
            JobRequest::Action {
                service,
                action,
                lines,
            } => {
                let s = inv.service(host, service, *action)?;
                let cmd = templates::action_command(s, *action, *lines).map_err(invalid)?;
                let after = match action {
                    ServiceAction::Status => After::Status(s.clone()),
                    ServiceAction::Start
                    | ServiceAction::Stop
                    | ServiceAction::Restart
                    | ServiceAction::Reload => After::FollowStatus(s.clone()),
                    _ => After::Nothing,
                };
                Ok(Plan {
                    line: cmd.line,
                    after,
                    steps: Vec::new(),
                })
            }
            JobRequest::Task { task, params } => {
                let t = inv.task(task)?;
                Ok(plain(tasks::render(t, params).map_err(invalid)?.line))
            }
            JobRequest::Batch { script } => {
                if !spec.allow_adhoc {
                    return Err(Rejection::Forbidden(format!(
                        "host {host} does not allow ad-hoc commands or batch scripts"
                    )));
                }
                let steps = batch::steps(script).map_err(invalid)?;
                let line = batch::script(&steps).map_err(invalid)?;
                Ok(Plan {
                    line,
                    after: After::Nothing,
                    steps,
                })
            }
            JobRequest::Verb { verb, args } => {
                match crate::verbs::plan(verb, args, &self.inner.verbs)? {
                    VerbPlan::Action {
                        service,
                        action,
                        lines,
                    } => self.plan(
                        inv,
                        host,
                        &JobRequest::Action {
                            service,
                            action,
                            lines,
                        },
                    ),
                    VerbPlan::Resources => self.plan(inv, host, &JobRequest::Resources),
                    VerbPlan::Task { task, params } => {
                        self.plan(inv, host, &JobRequest::Task { task, params })
                    }
                    VerbPlan::Custom { spec, params } => {
                        Ok(plain(tasks::render(&spec, &params).map_err(invalid)?.line))
                    }
                }
            }
            JobRequest::Adhoc { command } => {
                if !spec.allow_adhoc {
                    return Err(Rejection::Forbidden(format!(
                        "host {host} does not allow ad-hoc commands"
                    )));
                }
                if command.trim().is_empty() || command.len() > MAX_ADHOC || command.contains('\0')
                {
                    return Err(Rejection::Invalid(format!(
                        "ad-hoc command must be non-empty, without NUL, at most {MAX_ADHOC} bytes"
                    )));
                }
                Ok(plain(command.clone()))
            }
            JobRequest::Resources => Ok(Plan {
                line: resources::COMMAND.to_string(),
                after: After::Resources,
                steps: Vec::new(),
            }),
        }
    }

    fn idempotent(&self, inv: &Inventory, req: &JobRequest) -> bool {
        match req {
            JobRequest::Action { action, .. } => action_idempotent(*action),
            JobRequest::Task { task, .. } => inv.tasks.get(task).is_some_and(|t| t.idempotent),
            JobRequest::Verb { verb, args } => {
                match crate::verbs::plan(verb, args, &self.inner.verbs) {
                    Ok(VerbPlan::Action { action, .. }) => action_idempotent(action),
                    Ok(VerbPlan::Resources) => true,
                    Ok(VerbPlan::Task { task, .. }) => {
                        inv.tasks.get(&task).is_some_and(|t| t.idempotent)
                    }
                    Ok(VerbPlan::Custom { spec, .. }) => spec.idempotent,
                    Err(_) => false,
                }
            }
            JobRequest::Batch { .. } | JobRequest::Adhoc { .. } => false,
            JobRequest::Resources => true,
        }
    }

    async fn schedule(
        &self,
        env: &CommandEnvelope,
        subject: &str,
        jobs: Vec<(HostId, JobRequest)>,
    ) -> Result<(), ExecError> {
        // Admit all or none: a duplicate on any target rejects the command.
        let admitted = {
            let mut st = self.lock();
            let keyed: Vec<(HostId, JobRequest, String)> = jobs
                .into_iter()
                .map(|(h, r)| {
                    let key = format!("{h}|{}", serde_json::to_string(&r).unwrap_or_default());
                    (h, r, key)
                })
                .collect();
            if let Some((job, live)) = keyed
                .iter()
                .find_map(|(_, _, k)| st.jobs.iter().find(|(_, l)| &l.key == k))
            {
                Err(Rejection::Duplicate {
                    job: *job,
                    message: format!(
                        "{} is already {} as job {job}",
                        live.record.summary,
                        if live.running { "running" } else { "queued" }
                    ),
                })
            } else {
                let mut out = Vec::new();
                for (host, request, key) in keyed {
                    let record = JobRecord {
                        job: JobId::new(),
                        causation: env.id,
                        actor: env.actor.clone(),
                        run_type: run_type(&request),
                        summary: summary(&host, &request),
                        idempotent: self.idempotent(&st.inventory, &request),
                        host,
                        request,
                    };
                    st.jobs.insert(
                        record.job,
                        Live {
                            record: record.clone(),
                            key,
                            cancel: CancellationToken::new(),
                            running: false,
                        },
                    );
                    st.queue.push_back(record.job);
                    out.push(record);
                }
                let positions = positions(&st, &self.inner.limits);
                Ok(out
                    .into_iter()
                    .map(|r| {
                        let p = positions.get(&r.job).copied().unwrap_or(0);
                        (r, p)
                    })
                    .collect::<Vec<_>>())
            }
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => return self.reject(env, subject, r).await,
        };
        for (record, position) in &admitted {
            self.publish_scheduled(record, *position).await?;
            self.inner.journal.write(Entry::Scheduled(record.clone()));
            info!(job = %record.job, host = %record.host, summary = %record.summary, position, "job scheduled");
        }
        self.pump();
        Ok(())
    }

    async fn publish_scheduled(&self, record: &JobRecord, position: u32) -> Result<(), ExecError> {
        self.inner
            .bus
            .event(
                &record.actor,
                Some(record.causation),
                Event::Job(JobEvent::Scheduled {
                    job: record.job,
                    host: record.host.clone(),
                    run_type: record.run_type,
                    summary: record.summary.clone(),
                    queue_position: position,
                    request: record.request.clone(),
                    idempotent: record.idempotent,
                }),
            )
            .await
            .map(|_| ())
    }

    async fn cancel(
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

    /// Starts queued jobs, oldest first, as far as the limits allow.
    fn pump(&self) {
        let mut start = Vec::new();
        {
            let mut st = self.lock();
            let limits = &self.inner.limits;
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
        }
        for job in start {
            let engine = self.clone();
            self.inner
                .tracker
                .spawn(async move { engine.run(job).await });
        }
    }

    async fn run(&self, job: JobId) {
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
        {
            let mut st = self.lock();
            st.jobs.remove(&job);
            st.running = st.running.saturating_sub(1);
            if let Some(n) = st.per_host.get_mut(&record.host) {
                *n = n.saturating_sub(1);
            }
        }
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
        let job = record.job;
        let planned = {
            let st = self.lock();
            self.target(&st.inventory, &record.host).and_then(|t| {
                self.plan(&st.inventory, &record.host, &record.request)
                    .map(|p| (t, p))
            })
        };
        let outcome = |exit_code, output_bytes, tail: String| JobOutcome {
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
            run_type: record.run_type,
            output_bytes,
            tail,
        };
        let (target, plan) = match planned {
            Ok(x) => x,
            Err(r) => {
                return self
                    .finish(
                        record,
                        JobEvent::Failed {
                            job,
                            outcome: outcome(None, 0, String::new()),
                            failed_step: None,
                            reason: format!("cannot run any more: {r}"),
                        },
                    )
                    .await
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
        let (bytes, tail, text) = forwarder.await.unwrap_or_default();
        let secs = self.inner.command_timeout.as_secs();
        let event = match result {
            Err(e) => {
                self.note_reachability(&record.host, Some(&e)).await;
                JobEvent::Failed {
                    job,
                    outcome: outcome(None, bytes, tail),
                    failed_step: None,
                    reason: e.to_string(),
                }
            }
            Ok(o) => {
                self.note_reachability(&record.host, None).await;
                match o.end {
                    End::Cancelled => JobEvent::Cancelled {
                        job,
                        outcome: outcome(o.exit_code, bytes, tail),
                    },
                    End::TimedOut => JobEvent::Failed {
                        job,
                        outcome: outcome(o.exit_code, bytes, tail),
                        failed_step: o.failed_step.map(|s| s.0),
                        reason: format!(
                            "timed out after {secs} s; the remote process group was {}",
                            if o.killed {
                                "killed"
                            } else {
                                "signalled but could not be confirmed gone"
                            }
                        ),
                    },
                    End::Exited if o.exit_code == Some(0) => {
                        self.after(record, &target, &plan.after, &text).await;
                        JobEvent::Succeeded {
                            job,
                            outcome: outcome(Some(0), bytes, tail),
                        }
                    }
                    End::Exited => {
                        let reason = match (o.failed_step, o.exit_code, &o.exit_signal) {
                            (Some((step, code)), _, _) => format!(
                                "step {step}/{} failed with exit code {code}: {}",
                                plan.steps.len(),
                                plan.steps
                                    .get(step as usize - 1)
                                    .map(String::as_str)
                                    .unwrap_or("?")
                            ),
                            (None, Some(code), _) => format!("exited with code {code}"),
                            (None, None, Some(sig)) => format!("killed by signal {sig}"),
                            (None, None, None) => "ended without an exit status".into(),
                        };
                        JobEvent::Failed {
                            job,
                            outcome: outcome(o.exit_code, bytes, tail),
                            failed_step: o.failed_step.map(|s| s.0),
                            reason,
                        }
                    }
                }
            }
        };
        self.finish(record, event).await
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

    async fn after(&self, record: &JobRecord, target: &Target, after: &After, text: &str) {
        let event = match after {
            After::Nothing => return,
            After::Status(spec) => Some(status_event(spec, text)),
            After::FollowStatus(spec) => {
                let Ok(cmd) = templates::action_command(spec, ServiceAction::Status, None) else {
                    return;
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
                        stream: fleetbus_schemas::events::job::OutputStream::Stdout,
                        data,
                    } = ev
                    {
                        out.push_str(&data);
                    }
                }
                r.ok().map(|_| status_event(spec, &out))
            }
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

    /// Crash recovery: jobs the journal says never finished. Started ones are marked
    /// `restarted`, and re-run only when idempotent (else failed with that reason); jobs that never
    /// started simply run now.
    pub(crate) async fn recover(&self, unfinished: Vec<Unfinished>) -> Result<(), ExecError> {
        for u in unfinished {
            let r = u.record;
            let rerun = !u.started || r.idempotent;
            let reason = match (u.started, r.idempotent) {
                (false, _) => "the executor restarted before the job began; running it now".to_string(),
                (true, true) => "the executor restarted while the job ran; it is idempotent, running it again".to_string(),
                (true, false) => "the executor restarted while the job ran; it is not idempotent, so it is not run again".to_string(),
            };
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
                let key = format!(
                    "{}|{}",
                    r.host,
                    serde_json::to_string(&r.request).unwrap_or_default()
                );
                let mut st = self.lock();
                st.queue.push_back(r.job);
                st.jobs.insert(
                    r.job,
                    Live {
                        record: r.clone(),
                        key,
                        cancel: CancellationToken::new(),
                        running: false,
                    },
                );
            } else {
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
            }
        }
        self.pump();
        Ok(())
    }

    /// Cancels every queued and running job (shutdown after the drain period).
    pub(crate) fn cancel_all(&self) {
        for l in self.lock().jobs.values() {
            l.cancel.cancel();
        }
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

/// Queue positions after admission: 0 for jobs that will start now, else 1-based place among
/// those that wait.
fn positions(st: &State, limits: &Limits) -> HashMap<JobId, u32> {
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
                if tail.len() > TAIL_BYTES {
                    let mut cut = tail.len() - TAIL_BYTES;
                    while !tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    tail.drain(..cut);
                }
                if stream == fleetbus_schemas::events::job::OutputStream::Stdout
                    && stdout.len() < 1 << 20
                {
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
