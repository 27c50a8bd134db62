//! Alerts and the fleet facts the notifier needs, folded from the event log.
//!
//! The alerts themselves come from the shared pure folds in `fleetbus-projections` (registry,
//! fleet status, alerts), so the notifier derives exactly the alert ids ingest and the web UI
//! show (an alert's id is the id of the event that opened it) and an acknowledgement from the UI
//! stops escalation here. This module turns the fold's state into transitions (opened,
//! acknowledged, resolved) and keeps it small: resolved alerts are pruned from the private copy.
//! It is a rebuildable cache, replayed from `EVENTS` at every start. An alert's `key` names the
//! condition (`service:web-1:nginx`), which stays the same when a flapping service opens a new
//! alert each time (cooldowns are per rule and key).
//!
//! Blocked agents are tracked here from `agent.blocked` / `agent.unblocked` events: the
//! registry fold only knows agents whose keys it saw, and key events live on the `SECRETS`
//! stream, which the notifier has no business reading.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use fleetbus_projections::{AlertKind, AlertState, Alerts, FleetStatus, Registry};
use fleetbus_schemas::events::AgentEvent;
use fleetbus_schemas::{AgentId, AlertId, Envelope, Event, HostId, ServiceName, Severity};

/// One alert as the notifier knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInfo {
    /// Id of the opening event.
    pub id: AlertId,
    /// The condition (`<kind>:<subject>`).
    pub key: String,
    /// `service_down`, `agent_down`, `host_unreachable`, `host_key_mismatch`, `agent_event`,
    /// `check_down`, `raised`.
    pub kind: String,
    /// For `agent_event`: the agent's event kind (`disk_full`, `oom_kill`, …).
    pub subkind: Option<String>,
    /// How bad.
    pub severity: Severity,
    /// The host it is about.
    pub host: Option<HostId>,
    /// The service it is about.
    pub service: Option<ServiceName>,
    /// What is wrong.
    pub message: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// Whether someone acknowledged it.
    pub acknowledged: bool,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// It opened.
    Opened,
    /// Someone acknowledged it (stops escalation).
    Acknowledged,
    /// It resolved (by itself or by hand).
    Resolved,
}

/// An alert transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The alert, after the transition.
    pub alert: AlertInfo,
    /// When (the time of the event that caused it).
    pub at: DateTime<Utc>,
}

/// A host's labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    /// Tags (host groups).
    pub tags: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
}

/// The name of an alert kind, as rules spell it.
pub(crate) fn kind_name(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::ServiceDown => "service_down",
        AlertKind::AgentDown => "agent_down",
        AlertKind::HostUnreachable => "host_unreachable",
        AlertKind::HostKeyMismatch => "host_key_mismatch",
        AlertKind::AgentEvent => "agent_event",
        AlertKind::CheckDown => "check_down",
        AlertKind::Raised => "raised",
    }
}

/// Alert kinds that mean the whole host is down (they suppress its services' alerts).
pub(crate) const HOST_DOWN_KINDS: [&str; 2] = ["agent_down", "host_unreachable"];

/// Open alerts plus the fleet facts rules and suppression look at.
#[derive(Debug, Default)]
pub struct AlertBook {
    seq: u64,
    registry: Registry,
    fleet: FleetStatus,
    alerts: Alerts,
    open: HashMap<AlertId, AlertInfo>,
    host_down: HashMap<HostId, AlertId>,
    agent_host: HashMap<AgentId, HostId>,
    blocked: BTreeSet<AgentId>,
}

impl AlertBook {
    /// Folds one event; returns the alert transitions it causes.
    pub fn apply(&mut self, env: &Envelope) -> Vec<Transition> {
        let mut out = Vec::new();
        self.seq += 1;
        let seq = self.seq;
        match &env.event {
            Event::Agent(AgentEvent::Reported(r)) => {
                self.agent_host.insert(r.agent.clone(), r.host.clone());
            }
            Event::Agent(AgentEvent::Raised(n)) => {
                self.agent_host.insert(n.agent.clone(), n.host.clone());
            }
            Event::Agent(AgentEvent::Blocked { agent, .. }) => {
                self.blocked.insert(agent.clone());
            }
            Event::Agent(AgentEvent::Unblocked { agent }) => {
                self.blocked.remove(agent);
            }
            _ => {}
        }
        self.registry.apply(env);
        let changes = self.fleet.apply(seq, env, &self.registry);
        self.alerts.apply(seq, env, &self.registry, &changes);

        let new_id = AlertId(env.id.0);
        if let Some(a) = self
            .alerts
            .alerts
            .get(&new_id)
            .filter(|a| a.opened_seq == seq)
        {
            let kind = kind_name(a.kind);
            let subkind = (a.kind == AlertKind::AgentEvent)
                .then(|| a.key.split(':').nth(2).map(str::to_owned))
                .flatten();
            let info = AlertInfo {
                id: a.id,
                key: a.key.clone(),
                kind: kind.to_owned(),
                subkind,
                severity: a.severity,
                host: a.host.clone(),
                service: a.service.clone(),
                message: a.message.clone(),
                opened_at: a.opened_at,
                acknowledged: false,
            };
            if HOST_DOWN_KINDS.contains(&kind) {
                if let Some(h) = &info.host {
                    self.host_down.entry(h.clone()).or_insert(info.id);
                }
            }
            if a.state != AlertState::Resolved {
                self.open.insert(info.id, info.clone());
                out.push(Transition {
                    kind: TransitionKind::Opened,
                    alert: info,
                    at: env.time,
                });
            }
        }
        if let Event::Alert(fleetbus_schemas::events::AlertEvent::Acknowledged { alert, .. }) =
            &env.event
        {
            let acked = self
                .alerts
                .alerts
                .get(alert)
                .is_some_and(|a| a.state == AlertState::Acknowledged);
            if let Some(info) = self
                .open
                .get_mut(alert)
                .filter(|i| acked && !i.acknowledged)
            {
                info.acknowledged = true;
                out.push(Transition {
                    kind: TransitionKind::Acknowledged,
                    alert: info.clone(),
                    at: env.time,
                });
            }
        }
        // Something resolved when the fold holds fewer open alerts than we do.
        if self.alerts.open_by_key.len() != self.open.len() {
            let mut resolved: Vec<AlertId> = self
                .open
                .keys()
                .filter(|id| {
                    self.alerts
                        .alerts
                        .get(id)
                        .is_none_or(|a| a.state == AlertState::Resolved)
                })
                .copied()
                .collect();
            resolved.sort();
            for id in resolved {
                if let Some(info) = self.open.remove(&id) {
                    if let Some(h) = &info.host {
                        if self.host_down.get(h) == Some(&id) {
                            self.host_down.remove(h);
                        }
                    }
                    out.push(Transition {
                        kind: TransitionKind::Resolved,
                        alert: info,
                        at: env.time,
                    });
                }
                self.alerts.alerts.remove(&id);
            }
        }
        out
    }

    /// An open alert.
    pub fn get(&self, id: &AlertId) -> Option<&AlertInfo> {
        self.open.get(id)
    }

    /// Open alerts.
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertInfo> {
        self.open.values()
    }

    /// The open alert saying `host` is down, if any.
    pub fn host_down_alert(&self, host: &HostId) -> Option<&AlertInfo> {
        self.host_down.get(host).and_then(|id| self.open.get(id))
    }

    /// A host's labels (tags and roles from the registry).
    pub fn host(&self, host: &HostId) -> Option<HostInfo> {
        self.registry.hosts.get(host).map(|spec| HostInfo {
            tags: spec.tags.clone(),
            roles: spec.roles.clone(),
        })
    }

    /// True when the agent on `host` (or an agent named like it) is blocked.
    pub fn host_blocked(&self, host: &HostId) -> bool {
        !self.blocked.is_empty()
            && self.blocked.iter().any(|a| {
                a.as_str() == host.as_str() || self.agent_host.get(a).is_some_and(|h| h == host)
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleetbus_schemas::events::agent::{
        AgentEventKind, AgentNotice, AgentReport, Resources, ServiceState,
    };
    use fleetbus_schemas::events::service::ServiceStatus;
    use fleetbus_schemas::events::{AlertEvent, ServiceEvent};
    use fleetbus_schemas::Actor;

    pub(crate) fn report(host: &str) -> Event {
        Event::Agent(AgentEvent::Reported(AgentReport {
            agent: host.parse().unwrap(),
            host: host.parse().unwrap(),
            agent_version: "test".into(),
            resources: Resources::default(),
            services: vec![],
            config_version: None,
            config_hash: None,
        }))
    }

    fn env(event: Event) -> Envelope {
        Envelope::new("test", Actor::service("test"), None, event)
    }

    fn down(host: &str, svc: &str, state: ServiceState) -> Envelope {
        env(Event::Service(ServiceEvent::StatusObserved {
            host: host.parse().unwrap(),
            name: svc.parse().unwrap(),
            status: ServiceStatus {
                state,
                sub_state: state.as_str().into(),
                main_pid: None,
                since: None,
            },
        }))
    }

    #[test]
    fn given_service_down_then_up_when_folded_then_one_alert_opens_and_resolves() {
        let mut book = AlertBook::default();
        let e1 = down("web-1", "nginx", ServiceState::Failed);
        let t = book.apply(&e1);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TransitionKind::Opened);
        assert_eq!(
            t[0].alert.id,
            AlertId(e1.id.0),
            "alert id is the opening event id"
        );
        assert!(book
            .apply(&down("web-1", "nginx", ServiceState::Failed))
            .is_empty());
        let t = book.apply(&down("web-1", "nginx", ServiceState::Running));
        assert_eq!(t[0].kind, TransitionKind::Resolved);
        assert!(book.open_alerts().next().is_none());
    }

    #[test]
    fn acknowledge_and_host_down_and_blocked_are_tracked() {
        let mut book = AlertBook::default();
        book.apply(&env(report("web-1")));
        let e = env(Event::Agent(AgentEvent::WentDown {
            agent: "web-1".parse().unwrap(),
            last_seen: Utc::now(),
        }));
        let t = book.apply(&e);
        let id = t[0].alert.id;
        assert!(book.host_down_alert(&"web-1".parse().unwrap()).is_some());
        let t = book.apply(&env(Event::Alert(AlertEvent::Acknowledged {
            alert: id,
            note: String::new(),
        })));
        assert_eq!(t[0].kind, TransitionKind::Acknowledged);
        book.apply(&env(Event::Agent(AgentEvent::Blocked {
            agent: "web-1".parse().unwrap(),
            reason: "x".into(),
        })));
        assert!(book.host_blocked(&"web-1".parse().unwrap()));
        let notice = env(Event::Agent(AgentEvent::Raised(AgentNotice {
            agent: "web-1".parse().unwrap(),
            host: "web-1".parse().unwrap(),
            kind: AgentEventKind::Login,
            severity: Severity::Info,
            message: "login".into(),
            service: None,
            fields: Default::default(),
        })));
        assert!(book.apply(&notice).is_empty(), "info notices open no alert");
    }
}
