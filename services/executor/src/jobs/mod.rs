//! The job engine: job commands in, job events out. Authorization, validation against the
//! inventory and allowlists, duplicate rejection, FIFO queueing under global and per-host limits,
//! execution over the SSH pool with live output, cancel, and crash recovery from the journal.
//!
//! [`Engine`] is one type; its methods live beside the concern they serve:
//! - [`admission`]: authorization, resolving a command to per-host requests, planning the remote
//!   command line, and admitting jobs (duplicates rejected, all or none).
//! - [`queue`]: queue positions, starting jobs under the global and per-host limits, cancel.
//! - [`runner`]: running one job over the SSH pool, live output, outcome events, observations.
//! - [`recovery`]: jobs the journal says never finished, and cancelling everything on shutdown.

mod admission;
mod queue;
mod recovery;
mod runner;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::job::{JobEvent, TaskSpec};
use fleetbus_schemas::events::service::ServiceSpec;
use fleetbus_schemas::events::system::{RejectKind, SystemEvent};
use fleetbus_schemas::{Actor, CommandEnvelope, CommandId, Event, HostId, JobId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::bus::{Bus, SOURCE};
use crate::config::Limits;
use crate::error::{ExecError, Rejection};
use crate::inventory::Inventory;
use crate::journal::{JobRecord, Journal};
use crate::ssh::SshPool;

use self::admission::Resolved;

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

/// The key under which a job counts as a duplicate: same host, same request.
fn duplicate_key(host: &HostId, request: &fleetbus_schemas::events::job::JobRequest) -> String {
    format!(
        "{host}|{}",
        serde_json::to_string(request).unwrap_or_default()
    )
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
            self.apply_host_keys(h).await;
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

    /// The SSH side of a host event: pinned keys are stored, changed or removed hosts lose their
    /// pooled connections (and, when removed, their known key).
    async fn apply_host_keys(&self, h: &HostEvent) {
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

    /// Handles one command message; every outcome is told by events. Returns an error only when
    /// the bus failed (the message should then be redelivered).
    pub(crate) async fn handle(&self, subject: &str, payload: &[u8]) -> Result<(), ExecError> {
        let env: CommandEnvelope = match fleetbus_schemas::decode(payload) {
            Ok(e) => e,
            Err(e) => return self.reject_malformed(subject, payload, e).await,
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
                self.publish_task_event(&env, JobEvent::TaskSaved(spec))
                    .await
            }
            Ok(Resolved::DeleteTask(task)) => {
                self.publish_task_event(&env, JobEvent::TaskDeleted { task })
                    .await
            }
        }
    }

    /// Publishes a task definition change and folds it into the inventory at once.
    async fn publish_task_event(
        &self,
        env: &CommandEnvelope,
        event: JobEvent,
    ) -> Result<(), ExecError> {
        let e = self
            .inner
            .bus
            .event(&env.actor, Some(env.id), Event::Job(event))
            .await?;
        self.apply_event(&e.event).await;
        Ok(())
    }

    /// A payload that is not a command envelope: rejected under its id if one can be read.
    async fn reject_malformed(
        &self,
        subject: &str,
        payload: &[u8],
        e: fleetbus_schemas::CodecError,
    ) -> Result<(), ExecError> {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: CommandId,
        }
        let id = rmp_serde::from_slice::<IdOnly>(payload).ok().map(|i| i.id);
        let kind = match &e {
            fleetbus_schemas::CodecError::TooLarge { .. } => RejectKind::TooLarge,
            _ => RejectKind::Malformed,
        };
        warn!(subject, error = %e, "malformed command rejected");
        self.reject_raw(
            &executor_actor(),
            id,
            subject,
            kind,
            format!("not a valid job command: {e}"),
        )
        .await
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
        reason: RejectKind,
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
}
