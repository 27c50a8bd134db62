//! What the executor knows about the fleet: hosts, their services and allowlists, saved tasks —
//! a fold of `host.*`, `service.*` and `job.task_*` events (replayed on start, then followed).

use std::collections::{BTreeMap, BTreeSet};

use fleetbus_schemas::commands::Targets;
use fleetbus_schemas::events::host::{HostEvent, HostSpec};
use fleetbus_schemas::events::job::{JobEvent, TaskSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceSpec};
use fleetbus_schemas::{Event, HostId, ServiceName, TaskId};

use crate::error::Rejection;
use crate::ssh::known_hosts::Pinned;

/// The fold.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Inventory {
    /// Registered hosts.
    pub hosts: BTreeMap<HostId, HostSpec>,
    /// Services per host.
    pub services: BTreeMap<HostId, BTreeMap<ServiceName, ServiceSpec>>,
    /// Saved tasks.
    pub tasks: BTreeMap<TaskId, TaskSpec>,
    /// Host keys pinned by events (first contact or trusted by a person).
    pub pins: BTreeMap<HostId, Pinned>,
}

impl Inventory {
    /// Applies one event; events of other kinds are ignored.
    pub(crate) fn apply(&mut self, event: &Event) {
        match event {
            Event::Host(h) => match h {
                HostEvent::Registered(spec) | HostEvent::Updated(spec) => {
                    self.hosts.insert(spec.host.clone(), spec.clone());
                }
                HostEvent::Removed { host } => {
                    self.hosts.remove(host);
                    self.services.remove(host);
                    self.pins.remove(host);
                }
                HostEvent::KeyPinned {
                    host,
                    algorithm,
                    fingerprint,
                } => {
                    self.pins.insert(
                        host.clone(),
                        Pinned {
                            algorithm: algorithm.clone(),
                            fingerprint: fingerprint.clone(),
                        },
                    );
                }
                _ => {}
            },
            Event::Service(s) => match s {
                ServiceEvent::Registered(spec) | ServiceEvent::Updated(spec) => {
                    self.services
                        .entry(spec.host.clone())
                        .or_default()
                        .insert(spec.name.clone(), spec.clone());
                }
                ServiceEvent::Removed { host, name } => {
                    if let Some(m) = self.services.get_mut(host) {
                        m.remove(name);
                    }
                }
                _ => {}
            },
            Event::Job(JobEvent::TaskSaved(spec)) => {
                self.tasks.insert(spec.task.clone(), spec.clone());
            }
            Event::Job(JobEvent::TaskDeleted { task }) => {
                self.tasks.remove(task);
            }
            _ => {}
        }
    }

    /// A registered, enabled host.
    pub(crate) fn host(&self, host: &HostId) -> Result<&HostSpec, Rejection> {
        let spec = self
            .hosts
            .get(host)
            .ok_or_else(|| Rejection::NotFound(format!("no host {host}")))?;
        if spec.disabled {
            return Err(Rejection::Forbidden(format!("host {host} is disabled")));
        }
        Ok(spec)
    }

    /// A service whose allowlist has `action`.
    pub(crate) fn service(
        &self,
        host: &HostId,
        name: &ServiceName,
        action: ServiceAction,
    ) -> Result<&ServiceSpec, Rejection> {
        self.host(host)?;
        let spec = self
            .services
            .get(host)
            .and_then(|m| m.get(name))
            .ok_or_else(|| Rejection::NotFound(format!("no service {name} on host {host}")))?;
        if !spec.actions.contains(&action) {
            return Err(Rejection::Forbidden(format!(
                "action {} is not allowed on {host}:{name} (allowed: {})",
                action.as_str(),
                spec.actions
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(spec)
    }

    /// A saved task.
    pub(crate) fn task(&self, task: &TaskId) -> Result<&TaskSpec, Rejection> {
        self.tasks
            .get(task)
            .ok_or_else(|| Rejection::NotFound(format!("no task {task}")))
    }

    /// The hosts a selection names: named hosts (each must exist) plus hosts with any of the
    /// tags or roles. Disabled hosts are skipped unless named.
    pub(crate) fn select(&self, targets: &Targets) -> Result<Vec<HostId>, Rejection> {
        if targets.is_empty() {
            return Err(Rejection::Invalid(
                "no target hosts given (hosts, tags or roles)".into(),
            ));
        }
        let mut out = BTreeSet::new();
        for h in &targets.hosts {
            self.host(h)?;
            out.insert(h.clone());
        }
        for (id, spec) in &self.hosts {
            if spec.disabled {
                continue;
            }
            let tagged = spec.tags.iter().any(|t| targets.tags.contains(t));
            let roled = spec.roles.iter().any(|r| targets.roles.contains(r));
            if tagged || roled {
                out.insert(id.clone());
            }
        }
        if out.is_empty() {
            return Err(Rejection::NotFound(format!(
                "no host has any of the tags [{}] or roles [{}]",
                targets.tags.join(", "),
                targets.roles.join(", ")
            )));
        }
        Ok(out.into_iter().collect())
    }
}
