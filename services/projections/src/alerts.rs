//! Alerts: opened by error events and by things going down, resolved when they recover.
//!
//! Each condition has a key (`service:web-1:nginx`, `agent:web-1`, …). While an alert with that
//! key is open, the same condition does not open another. An alert's id is the id of the event
//! that opened it, so anyone folding the same log derives the same ids.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::AgentEventKind;
use fleetbus_schemas::events::check::CheckState;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::{AgentEvent, AlertEvent, CheckEvent, Event, Severity};
use fleetbus_schemas::{AlertId, Envelope, HostId, ServiceName};
use serde::{Deserialize, Serialize};

use crate::fleet::Liveness;
use crate::registry::Registry;
use crate::Change;

/// What kind of condition an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A service is failed or stopped while expected to run.
    ServiceDown,
    /// An agent went down.
    AgentDown,
    /// The executor cannot reach the host.
    HostUnreachable,
    /// The host presented an unexpected SSH host key.
    HostKeyMismatch,
    /// An agent raised an error or critical event.
    AgentEvent,
    /// A heartbeat check is down.
    CheckDown,
    /// Raised explicitly (e.g. a missed deadline).
    Raised,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Open, nobody acknowledged it.
    Open,
    /// Open, someone is on it.
    Acknowledged,
    /// Over.
    Resolved,
}

/// One alert incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Id of the event that opened it.
    pub id: AlertId,
    /// The condition's key.
    pub key: String,
    /// The kind of condition.
    pub kind: AlertKind,
    /// How bad (the worst seen while open).
    pub severity: Severity,
    /// The host, if any.
    pub host: Option<HostId>,
    /// The service, if any.
    pub service: Option<ServiceName>,
    /// What is wrong.
    pub message: String,
    /// Where it is in its life.
    pub state: AlertState,
    /// When it opened (event time).
    pub opened_at: DateTime<Utc>,
    /// Log sequence of the opening event.
    pub opened_seq: u64,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who resolved it (`None` = resolved by recovery).
    pub resolved_by: Option<String>,
    /// Last note from an operator.
    pub note: Option<String>,
    /// Log sequence of the last change.
    pub updated_seq: u64,
}

/// Resolved alerts kept in the projection; older ones stay in the log (and the events query).
pub const MAX_RESOLVED: usize = 1_000;

/// Every open alert and the most recently resolved ones, plus an index of the open ones by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    /// Alerts by id (ULIDs sort by opening time).
    pub alerts: BTreeMap<AlertId, Alert>,
    /// Open (or acknowledged) alerts by condition key.
    pub open_by_key: BTreeMap<String, AlertId>,
    /// Resolved alerts in the order they resolved, oldest first (at most [`MAX_RESOLVED`]).
    pub resolved_order: VecDeque<AlertId>,
}

struct Opening {
    key: String,
    kind: AlertKind,
    severity: Severity,
    host: Option<HostId>,
    service: Option<ServiceName>,
    message: String,
}

/// Agent notice kinds that clear the condition raised by another kind.
fn cleared_kind(kind: AgentEventKind) -> Option<AgentEventKind> {
    match kind {
        AgentEventKind::ServiceUp => Some(AgentEventKind::ServiceDown),
        AgentEventKind::BackupSucceeded => Some(AgentEventKind::BackupFailed),
        _ => None,
    }
}

fn notice_key(host: &HostId, kind: AgentEventKind, service: Option<&ServiceName>) -> String {
    match service {
        Some(service) => format!("event:{host}:{}:{service}", kind.as_str()),
        None => format!("event:{host}:{}", kind.as_str()),
    }
}

impl Alerts {
    /// Folds one event and the state changes the fleet fold derived from it.
    pub fn apply(&mut self, seq: u64, env: &Envelope, registry: &Registry, changes: &[Change]) {
        for change in changes {
            self.apply_change(seq, env, registry, change);
        }
        match &env.event {
            Event::Agent(AgentEvent::Raised(notice)) => {
                let service = notice.service.as_ref();
                if notice.severity >= Severity::Error {
                    self.open_alert(
                        seq,
                        env,
                        Opening {
                            key: notice_key(&notice.host, notice.kind, service),
                            kind: AlertKind::AgentEvent,
                            severity: notice.severity,
                            host: Some(notice.host.clone()),
                            service: notice.service.clone(),
                            message: notice.message.clone(),
                        },
                    );
                } else {
                    // A calm notice of the same kind, or of the kind that clears it, resolves.
                    self.resolve_key(seq, env, &notice_key(&notice.host, notice.kind, service));
                    if let Some(kind) = cleared_kind(notice.kind) {
                        self.resolve_key(seq, env, &notice_key(&notice.host, kind, service));
                    }
                }
            }
            Event::Host(HostEvent::KeyMismatch {
                host,
                expected,
                presented,
            }) => self.open_alert(
                seq,
                env,
                Opening {
                    key: format!("hostkey:{host}"),
                    kind: AlertKind::HostKeyMismatch,
                    severity: Severity::Critical,
                    host: Some(host.clone()),
                    service: None,
                    message: format!(
                        "host key changed: expected {expected}, presented {presented}; connection refused"
                    ),
                },
            ),
            Event::Host(HostEvent::KeyPinned { host, .. }) => {
                self.resolve_key(seq, env, &format!("hostkey:{host}"));
            }
            Event::Host(HostEvent::Removed { host }) => {
                let keys: Vec<String> = self
                    .open_by_key
                    .iter()
                    .filter(|(_, id)| {
                        self.alerts
                            .get(id)
                            .is_some_and(|a| a.host.as_ref() == Some(host))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.resolve_key(seq, env, &key);
                }
            }
            Event::Check(CheckEvent::StateChanged { check, to, .. }) => {
                let key = format!("check:{check}");
                match to {
                    CheckState::Down => self.open_alert(
                        seq,
                        env,
                        Opening {
                            key,
                            kind: AlertKind::CheckDown,
                            severity: Severity::Error,
                            host: None,
                            service: None,
                            message: format!("check {check} is down"),
                        },
                    ),
                    CheckState::Up | CheckState::Paused | CheckState::New => {
                        self.resolve_key(seq, env, &key)
                    }
                    CheckState::Late => {}
                }
            }
            Event::Alert(event) => self.apply_alert_event(seq, env, event),
            _ => {}
        }
    }

    fn apply_change(&mut self, seq: u64, env: &Envelope, registry: &Registry, change: &Change) {
        match change {
            Change::Service {
                key, to, detail, ..
            } => {
                let alert_key = format!("service:{key}");
                let expected = registry
                    .services
                    .get(key)
                    .is_none_or(|spec| spec.expected_running);
                if to.is_down() && expected {
                    let why = detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    self.open_alert(
                        seq,
                        env,
                        Opening {
                            key: alert_key,
                            kind: AlertKind::ServiceDown,
                            severity: Severity::Error,
                            host: Some(key.host.clone()),
                            service: Some(key.service.clone()),
                            message: format!("{key} is {}{why}", to.as_str()),
                        },
                    );
                } else if *to == fleetbus_schemas::events::agent::ServiceState::Running {
                    self.resolve_key(seq, env, &alert_key);
                }
            }
            Change::Liveness {
                host, agent, to, ..
            } => {
                let key = format!("agent:{agent}");
                match to {
                    Liveness::Down => self.open_alert(
                        seq,
                        env,
                        Opening {
                            key,
                            kind: AlertKind::AgentDown,
                            severity: Severity::Critical,
                            host: Some(host.clone()),
                            service: None,
                            message: format!("agent {agent} on {host} stopped reporting"),
                        },
                    ),
                    Liveness::Live => self.resolve_key(seq, env, &key),
                    Liveness::Stale => {}
                }
            }
            Change::Reachability {
                host,
                reachable,
                reason,
            } => {
                let key = format!("host:{host}");
                if *reachable {
                    self.resolve_key(seq, env, &key);
                } else {
                    self.open_alert(
                        seq,
                        env,
                        Opening {
                            key,
                            kind: AlertKind::HostUnreachable,
                            severity: Severity::Error,
                            host: Some(host.clone()),
                            service: None,
                            message: format!(
                                "{host} is unreachable: {}",
                                reason.as_deref().unwrap_or("unknown reason")
                            ),
                        },
                    );
                }
            }
        }
    }

    fn apply_alert_event(&mut self, seq: u64, env: &Envelope, event: &AlertEvent) {
        match event {
            AlertEvent::Raised {
                key,
                severity,
                host,
                service,
                message,
            } => self.open_alert(
                seq,
                env,
                Opening {
                    key: format!("raised:{key}"),
                    kind: AlertKind::Raised,
                    severity: *severity,
                    host: host.clone(),
                    service: service.clone(),
                    message: message.clone(),
                },
            ),
            AlertEvent::Cleared { key } => self.resolve_key(seq, env, &format!("raised:{key}")),
            AlertEvent::Acknowledged { alert, note } => {
                if let Some(a) = self.alerts.get_mut(alert) {
                    if a.state == AlertState::Open {
                        a.state = AlertState::Acknowledged;
                        a.acknowledged_by = Some(env.actor.name.clone());
                        a.acknowledged_at = Some(env.time);
                        a.note = Some(note.clone())
                            .filter(|n| !n.is_empty())
                            .or(a.note.take());
                        a.updated_seq = seq;
                    }
                }
            }
            AlertEvent::Resolved { alert, note } => {
                if let Some(a) = self.alerts.get_mut(alert) {
                    if a.state != AlertState::Resolved {
                        a.state = AlertState::Resolved;
                        a.resolved_at = Some(env.time);
                        a.resolved_by = Some(env.actor.name.clone());
                        a.note = Some(note.clone())
                            .filter(|n| !n.is_empty())
                            .or(a.note.take());
                        a.updated_seq = seq;
                        self.open_by_key.remove(&a.key);
                        self.retire(*alert);
                    }
                }
            }
        }
    }

    fn open_alert(&mut self, seq: u64, env: &Envelope, opening: Opening) {
        if let Some(id) = self.open_by_key.get(&opening.key) {
            if let Some(alert) = self.alerts.get_mut(id) {
                if opening.severity > alert.severity {
                    alert.severity = opening.severity;
                    alert.message = opening.message;
                    alert.updated_seq = seq;
                }
            }
            return;
        }
        let id = AlertId(env.id.0);
        self.open_by_key.insert(opening.key.clone(), id);
        self.alerts.insert(
            id,
            Alert {
                id,
                key: opening.key,
                kind: opening.kind,
                severity: opening.severity,
                host: opening.host,
                service: opening.service,
                message: opening.message,
                state: AlertState::Open,
                opened_at: env.time,
                opened_seq: seq,
                acknowledged_by: None,
                acknowledged_at: None,
                resolved_at: None,
                resolved_by: None,
                note: None,
                updated_seq: seq,
            },
        );
    }

    fn resolve_key(&mut self, seq: u64, env: &Envelope, key: &str) {
        if let Some(id) = self.open_by_key.remove(key) {
            if let Some(alert) = self.alerts.get_mut(&id) {
                alert.state = AlertState::Resolved;
                alert.resolved_at = Some(env.time);
                alert.updated_seq = seq;
                self.retire(id);
            }
        }
    }

    /// Records a resolution and forgets the oldest resolved alerts beyond [`MAX_RESOLVED`], so
    /// memory follows what is open, not how long the log is.
    fn retire(&mut self, id: AlertId) {
        self.resolved_order.push_back(id);
        while self.resolved_order.len() > MAX_RESOLVED {
            if let Some(old) = self.resolved_order.pop_front() {
                self.alerts.remove(&old);
            }
        }
    }

    /// Open and acknowledged alerts, newest first.
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .values()
            .rev()
            .filter(|a| a.state != AlertState::Resolved)
    }

    /// Number of open (or acknowledged) alerts about a host.
    pub fn open_count(&self, host: &HostId) -> usize {
        self.open_by_key
            .values()
            .filter_map(|id| self.alerts.get(id))
            .filter(|a| a.host.as_ref() == Some(host))
            .count()
    }
}
