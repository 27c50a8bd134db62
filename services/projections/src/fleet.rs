//! Fleet status: every host and service with its current state.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::{Resources, ServiceState};
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::service::ServiceEvent;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{AgentId, Envelope, HostId, ServiceKey, ServiceName};
use serde::{Deserialize, Serialize};

use crate::registry::Registry;
use crate::Change;

/// How many resource samples a host keeps for sparklines.
pub const RECENT_SAMPLES: usize = 60;

/// Whether an agent is being heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Reporting.
    Live,
    /// Silent for the stale threshold.
    Stale,
    /// Silent for the down threshold.
    Down,
}

/// A host's overall state on the overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostState {
    /// Everything is fine.
    Ok,
    /// Something needs a look: a service is not running, or the agent is stale.
    Warn,
    /// The agent is down or the host unreachable.
    Down,
    /// Disabled by an operator.
    Disabled,
    /// Registered but never heard from.
    Pending,
    /// Its agent is blocked.
    Blocked,
}

impl HostState {
    /// The name shown on the overview.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Down => "DOWN",
            Self::Disabled => "DISABLED",
            Self::Pending => "PENDING",
            Self::Blocked => "BLOCKED",
        }
    }
}

/// One service as the overview shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub name: ServiceName,
    /// The reduced state (gives the dot colour).
    pub state: ServiceState,
    /// The manager's sub-state, when read over SSH.
    pub sub_state: Option<String>,
    /// The manager's words, when reported by an agent.
    pub detail: Option<String>,
    /// Main pid, when known.
    pub main_pid: Option<u32>,
    /// When the service entered its current state (event time of the change).
    pub since: Option<DateTime<Utc>>,
    /// When it was last observed.
    pub observed_at: Option<DateTime<Utc>>,
    /// Whether the service is registered (else it is only reported by an agent).
    pub registered: bool,
}

impl ServiceView {
    fn unknown(name: ServiceName, registered: bool) -> Self {
        Self {
            name,
            state: ServiceState::Unknown,
            sub_state: None,
            detail: None,
            main_pid: None,
            since: None,
            observed_at: None,
            registered,
        }
    }
}

/// A resource reading reduced to percentages, for sparklines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// When.
    pub time: DateTime<Utc>,
    /// CPU busy %.
    pub cpu_pct: f32,
    /// Memory used %.
    pub mem_pct: f32,
    /// Root disk used %.
    pub disk_pct: f32,
    /// 1-minute load.
    pub load1: f32,
}

fn pct(used: u64, total: u64) -> f32 {
    if total == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / total as f64) as f32
    }
}

impl From<(&Resources, DateTime<Utc>)> for ResourceSample {
    fn from((r, time): (&Resources, DateTime<Utc>)) -> Self {
        Self {
            time,
            cpu_pct: r.cpu_pct,
            mem_pct: pct(r.mem_used_kb, r.mem_total_kb),
            disk_pct: pct(r.disk_used_kb, r.disk_total_kb),
            load1: r.load1,
        }
    }
}

/// One host as the overview shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Its id.
    pub host: HostId,
    /// Registered in the registry (else only known from an agent's reports).
    pub registered: bool,
    /// Disabled by an operator.
    pub disabled: bool,
    /// Tags, from the registry.
    pub tags: Vec<String>,
    /// Roles, from the registry.
    pub roles: Vec<String>,
    /// Its agent, if it has one.
    pub agent: Option<AgentId>,
    /// The agent's version, from its last report.
    pub agent_version: Option<String>,
    /// Its agent is blocked.
    pub blocked: bool,
    /// Agent liveness (`None` without an agent that reported).
    pub liveness: Option<Liveness>,
    /// SSH reachability as the executor last saw it (`None` = not tried).
    pub reachable: Option<bool>,
    /// Why it is unreachable.
    pub unreachable_reason: Option<String>,
    /// Last time anything was heard from or about it.
    pub last_seen: Option<DateTime<Utc>>,
    /// Last resource reading.
    pub resources: Option<Resources>,
    /// Recent readings, oldest first (at most [`RECENT_SAMPLES`]).
    pub recent: VecDeque<ResourceSample>,
    /// Services, by name.
    pub services: BTreeMap<ServiceName, ServiceView>,
    /// Managed config version the agent last reported.
    pub config_version: Option<u64>,
    /// Hash of the agent's live config, last reported.
    pub config_hash: Option<String>,
}

impl HostStatus {
    fn new(host: HostId) -> Self {
        Self {
            host,
            registered: false,
            disabled: false,
            tags: vec![],
            roles: vec![],
            agent: None,
            agent_version: None,
            blocked: false,
            liveness: None,
            reachable: None,
            unreachable_reason: None,
            last_seen: None,
            resources: None,
            recent: VecDeque::new(),
            services: BTreeMap::new(),
            config_version: None,
            config_hash: None,
        }
    }

    /// The host's overall state.
    pub fn state(&self) -> HostState {
        if self.disabled {
            HostState::Disabled
        } else if self.blocked {
            HostState::Blocked
        } else if self.liveness == Some(Liveness::Down) || self.reachable == Some(false) {
            HostState::Down
        } else if self.last_seen.is_none() {
            HostState::Pending
        } else if self.liveness == Some(Liveness::Stale)
            || self
                .services
                .values()
                .any(|s| s.observed_at.is_some() && s.state != ServiceState::Running)
        {
            HostState::Warn
        } else {
            HostState::Ok
        }
    }

    fn push_sample(&mut self, resources: &Resources, time: DateTime<Utc>) {
        self.resources = Some(resources.clone());
        self.recent.push_back((resources, time).into());
        while self.recent.len() > RECENT_SAMPLES {
            self.recent.pop_front();
        }
    }

    fn seen(&mut self, time: DateTime<Utc>) {
        if self.last_seen.is_none_or(|t| t < time) {
            self.last_seen = Some(time);
        }
    }
}

/// Every host and its services.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Hosts by id.
    pub hosts: BTreeMap<HostId, HostStatus>,
}

impl FleetStatus {
    /// Folds one event; returns the state changes it caused.
    pub fn apply(&mut self, _seq: u64, env: &Envelope, registry: &Registry) -> Vec<Change> {
        let mut changes = vec![];
        match &env.event {
            Event::Host(event) => self.apply_host(event, env.time, &mut changes),
            Event::Service(event) => self.apply_service(event, env.time, &mut changes),
            Event::Agent(event) => self.apply_agent(event, env.time, registry, &mut changes),
            _ => {}
        }
        changes
    }

    fn host_mut(&mut self, host: &HostId) -> &mut HostStatus {
        self.hosts
            .entry(host.clone())
            .or_insert_with(|| HostStatus::new(host.clone()))
    }

    fn apply_host(&mut self, event: &HostEvent, time: DateTime<Utc>, changes: &mut Vec<Change>) {
        match event {
            HostEvent::Registered(spec) | HostEvent::Updated(spec) => {
                let host = self.host_mut(&spec.host);
                host.registered = true;
                host.disabled = spec.disabled;
                host.tags = spec.tags.clone();
                host.roles = spec.roles.clone();
            }
            HostEvent::Removed { host } => {
                self.hosts.remove(host);
            }
            HostEvent::Unreachable { host, reason } => {
                let status = self.host_mut(host);
                if status.reachable != Some(false) {
                    changes.push(Change::Reachability {
                        host: host.clone(),
                        reachable: false,
                        reason: Some(reason.clone()),
                    });
                }
                status.reachable = Some(false);
                status.unreachable_reason = Some(reason.clone());
            }
            HostEvent::Reachable { host } => {
                let status = self.host_mut(host);
                if status.reachable == Some(false) {
                    changes.push(Change::Reachability {
                        host: host.clone(),
                        reachable: true,
                        reason: None,
                    });
                }
                status.reachable = Some(true);
                status.unreachable_reason = None;
                status.seen(time);
            }
            HostEvent::ResourcesObserved { host, resources } => {
                let status = self.host_mut(host);
                status.push_sample(resources, time);
                status.seen(time);
            }
            HostEvent::KeyPinned { .. } | HostEvent::KeyMismatch { .. } => {}
        }
    }

    fn apply_service(
        &mut self,
        event: &ServiceEvent,
        time: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) {
        match event {
            ServiceEvent::Registered(spec) | ServiceEvent::Updated(spec) => {
                let host = self.host_mut(&spec.host);
                host.services
                    .entry(spec.name.clone())
                    .or_insert_with(|| ServiceView::unknown(spec.name.clone(), true))
                    .registered = true;
            }
            ServiceEvent::Removed { host, name } => {
                if let Some(status) = self.hosts.get_mut(host) {
                    status.services.remove(name);
                }
            }
            ServiceEvent::StatusObserved { host, name, status } => {
                let host_status = self.host_mut(host);
                host_status.seen(time);
                let view = host_status
                    .services
                    .entry(name.clone())
                    .or_insert_with(|| ServiceView::unknown(name.clone(), false));
                observe(
                    view,
                    ServiceKey::new(host.clone(), name.clone()),
                    status.state,
                    None,
                    time,
                    changes,
                );
                view.sub_state = Some(status.sub_state.clone());
                view.main_pid = status.main_pid;
                if status.since.is_some() {
                    view.since = status.since;
                }
            }
        }
    }

    fn apply_agent(
        &mut self,
        event: &AgentEvent,
        time: DateTime<Utc>,
        registry: &Registry,
        changes: &mut Vec<Change>,
    ) {
        let host_of = |agent: &AgentId| registry.agents.get(agent).map(|a| a.host.clone());
        match event {
            AgentEvent::Reported(report) => {
                let status = self.host_mut(&report.host);
                status.agent = Some(report.agent.clone());
                status.agent_version = Some(report.agent_version.clone());
                status.seen(time);
                status.push_sample(&report.resources, time);
                status.config_version = report.config_version;
                status.config_hash = report.config_hash.clone();
                set_liveness(status, &report.agent, Liveness::Live, changes);
                for obs in &report.services {
                    let view = status
                        .services
                        .entry(obs.name.clone())
                        .or_insert_with(|| ServiceView::unknown(obs.name.clone(), false));
                    observe(
                        view,
                        ServiceKey::new(report.host.clone(), obs.name.clone()),
                        obs.state,
                        obs.detail.clone(),
                        time,
                        changes,
                    );
                    view.detail = obs.detail.clone();
                }
            }
            AgentEvent::Raised(notice) => {
                let status = self.host_mut(&notice.host);
                status.agent = Some(notice.agent.clone());
                status.seen(time);
            }
            AgentEvent::KeyIssued { agent, host, .. } => {
                self.host_mut(host).agent = Some(agent.clone());
            }
            AgentEvent::Blocked { agent, .. } | AgentEvent::Unblocked { agent } => {
                if let Some(host) = host_of(agent) {
                    self.host_mut(&host).blocked = matches!(event, AgentEvent::Blocked { .. });
                }
            }
            AgentEvent::WentStale { agent, .. }
            | AgentEvent::WentDown { agent, .. }
            | AgentEvent::Recovered { agent } => {
                let to = match event {
                    AgentEvent::WentStale { .. } => Liveness::Stale,
                    AgentEvent::WentDown { .. } => Liveness::Down,
                    _ => Liveness::Live,
                };
                let host = host_of(agent).or_else(|| {
                    self.hosts
                        .values()
                        .find(|h| h.agent.as_ref() == Some(agent))
                        .map(|h| h.host.clone())
                });
                if let Some(host) = host {
                    set_liveness(self.host_mut(&host), agent, to, changes);
                }
            }
            AgentEvent::KeyRevoked { .. } => {}
        }
    }

    /// Hosts with a given tag, role or state (all when `None`).
    pub fn filter<'a>(
        &'a self,
        tag: Option<&'a str>,
        role: Option<&'a str>,
        state: Option<HostState>,
    ) -> impl Iterator<Item = &'a HostStatus> {
        self.hosts.values().filter(move |h| {
            tag.is_none_or(|t| h.tags.iter().any(|x| x == t))
                && role.is_none_or(|r| h.roles.iter().any(|x| x == r))
                && state.is_none_or(|s| h.state() == s)
        })
    }
}

fn observe(
    view: &mut ServiceView,
    key: ServiceKey,
    state: ServiceState,
    detail: Option<String>,
    time: DateTime<Utc>,
    changes: &mut Vec<Change>,
) {
    let previous = view.observed_at.map(|_| view.state);
    if previous != Some(state) {
        changes.push(Change::Service {
            key,
            from: previous,
            to: state,
            detail,
        });
        view.since = Some(time);
    }
    view.state = state;
    view.observed_at = Some(time);
}

fn set_liveness(status: &mut HostStatus, agent: &AgentId, to: Liveness, changes: &mut Vec<Change>) {
    let from = status.liveness.unwrap_or(Liveness::Live);
    if from != to {
        changes.push(Change::Liveness {
            host: status.host.clone(),
            agent: agent.clone(),
            from,
            to,
        });
    }
    status.liveness = Some(to);
}
