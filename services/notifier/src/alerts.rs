//! Alerts and the fleet facts the notifier needs, folded from the event log.
//!
//! This is a private, rebuildable cache (replayed from `EVENTS` at every start). An alert's id is
//! the id of the event that opened it, so every service folding the same log derives the same
//! ids; an alert's `key` names the condition (`service_down:web-1:nginx`), which stays the same
//! when a flapping service opens a new alert each time (cooldowns are per rule and key).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::AgentEventKind;
use fleetbus_schemas::events::check::CheckState;
use fleetbus_schemas::events::{AgentEvent, AlertEvent, CheckEvent, HostEvent, ServiceEvent};
use fleetbus_schemas::{AgentId, AlertId, Envelope, Event, HostId, ServiceName, Severity};

/// One alert as the notifier knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInfo {
    /// Id of the opening event.
    pub id: AlertId,
    /// The condition (`<kind>:<subject>`).
    pub key: String,
    /// `service_down`, `agent_down`, `host_unreachable`, `disk_full`, `check_down`, …
    pub kind: String,
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

/// Open alerts plus the fleet facts rules and suppression look at.
#[derive(Debug, Default)]
pub struct AlertBook {
    open: HashMap<AlertId, AlertInfo>,
    by_key: HashMap<String, AlertId>,
    hosts: HashMap<HostId, HostInfo>,
    agent_host: HashMap<AgentId, HostId>,
    blocked: BTreeSet<AgentId>,
}

/// Alert kinds that mean the whole host is down (they suppress its services' alerts).
pub const HOST_DOWN_KINDS: [&str; 2] = ["agent_down", "host_unreachable"];

impl AlertBook {
    /// Folds one event; returns the alert transitions it causes.
    pub fn apply(&mut self, env: &Envelope) -> Vec<Transition> {
        let mut out = Vec::new();
        let t = env.time;
        match &env.event {
            Event::Host(HostEvent::Registered(spec) | HostEvent::Updated(spec)) => {
                self.hosts.insert(
                    spec.host.clone(),
                    HostInfo {
                        tags: spec.tags.clone(),
                        roles: spec.roles.clone(),
                    },
                );
            }
            Event::Host(HostEvent::Removed { host }) => {
                self.hosts.remove(host);
            }
            Event::Host(HostEvent::Unreachable { host, reason }) => {
                let key = format!("host_unreachable:{host}");
                self.open_alert(
                    env,
                    &key,
                    "host_unreachable",
                    Severity::Critical,
                    Some(host.clone()),
                    None,
                    format!("host {host} is unreachable: {reason}"),
                    &mut out,
                );
            }
            Event::Host(HostEvent::Reachable { host }) => {
                self.resolve_key(&format!("host_unreachable:{host}"), t, &mut out);
            }
            Event::Host(HostEvent::KeyMismatch {
                host, presented, ..
            }) => {
                let key = format!("host_key_mismatch:{host}");
                self.open_alert(
                    env,
                    &key,
                    "host_key_mismatch",
                    Severity::Critical,
                    Some(host.clone()),
                    None,
                    format!("host {host} presented an unexpected host key {presented}"),
                    &mut out,
                );
            }
            Event::Host(HostEvent::KeyPinned { host, .. }) => {
                self.resolve_key(&format!("host_key_mismatch:{host}"), t, &mut out);
            }
            Event::Agent(AgentEvent::Reported(report)) => {
                self.agent_host
                    .insert(report.agent.clone(), report.host.clone());
                for s in &report.services {
                    self.service_state(
                        env,
                        &report.host,
                        &s.name,
                        s.state.is_down(),
                        s.detail.as_deref().unwrap_or(s.state.as_str()),
                        &mut out,
                    );
                }
            }
            Event::Agent(AgentEvent::Raised(notice)) => {
                self.agent_host
                    .insert(notice.agent.clone(), notice.host.clone());
                let subject = match &notice.service {
                    Some(s) => format!("{}:{s}", notice.host),
                    None => notice.host.to_string(),
                };
                match notice.kind {
                    AgentEventKind::ServiceUp => {
                        self.resolve_key(&format!("service_down:{subject}"), t, &mut out);
                    }
                    AgentEventKind::BackupSucceeded => {
                        self.resolve_key(&format!("backup_failed:{subject}"), t, &mut out);
                    }
                    kind if notice.severity >= Severity::Error => {
                        let key = format!("{}:{subject}", kind.as_str());
                        self.open_alert(
                            env,
                            &key,
                            kind.as_str(),
                            notice.severity,
                            Some(notice.host.clone()),
                            notice.service.clone(),
                            notice.message.clone(),
                            &mut out,
                        );
                    }
                    _ => {}
                }
            }
            Event::Agent(AgentEvent::WentDown { agent, .. }) => {
                let host = self.host_of(agent);
                let key = format!("agent_down:{agent}");
                self.open_alert(
                    env,
                    &key,
                    "agent_down",
                    Severity::Critical,
                    host,
                    None,
                    format!("agent {agent} stopped reporting"),
                    &mut out,
                );
            }
            Event::Agent(AgentEvent::Recovered { agent }) => {
                self.resolve_key(&format!("agent_down:{agent}"), t, &mut out);
            }
            Event::Agent(AgentEvent::Blocked { agent, .. }) => {
                self.blocked.insert(agent.clone());
            }
            Event::Agent(AgentEvent::Unblocked { agent }) => {
                self.blocked.remove(agent);
            }
            Event::Service(ServiceEvent::StatusObserved { host, name, status }) => {
                self.service_state(
                    env,
                    host,
                    name,
                    status.state.is_down(),
                    &status.sub_state,
                    &mut out,
                );
            }
            Event::Check(CheckEvent::StateChanged { check, to, .. }) => {
                let key = format!("check_down:{check}");
                match to {
                    CheckState::Down => self.open_alert(
                        env,
                        &key,
                        "check_down",
                        Severity::Error,
                        None,
                        None,
                        format!("check {check} is down"),
                        &mut out,
                    ),
                    CheckState::Up | CheckState::Paused | CheckState::New => {
                        self.resolve_key(&key, t, &mut out)
                    }
                    CheckState::Late => {}
                }
            }
            Event::Check(CheckEvent::DeadlineMissed { check, deadline }) => {
                let key = format!("deadline_missed:{check}");
                self.open_alert(
                    env,
                    &key,
                    "deadline_missed",
                    Severity::Error,
                    None,
                    None,
                    format!("check {check} missed its deadline {deadline}"),
                    &mut out,
                );
            }
            Event::Alert(AlertEvent::Raised {
                key,
                severity,
                host,
                service,
                message,
            }) => {
                let k = format!("raised:{key}");
                self.open_alert(
                    env,
                    &k,
                    "raised",
                    *severity,
                    host.clone(),
                    service.clone(),
                    message.clone(),
                    &mut out,
                );
            }
            Event::Alert(AlertEvent::Cleared { key }) => {
                self.resolve_key(&format!("raised:{key}"), t, &mut out);
            }
            Event::Alert(AlertEvent::Acknowledged { alert, .. }) => {
                if let Some(a) = self.open.get_mut(alert) {
                    if !a.acknowledged {
                        a.acknowledged = true;
                        out.push(Transition {
                            kind: TransitionKind::Acknowledged,
                            alert: a.clone(),
                            at: t,
                        });
                    }
                }
            }
            Event::Alert(AlertEvent::Resolved { alert, .. }) => {
                if let Some(key) = self.open.get(alert).map(|a| a.key.clone()) {
                    self.resolve_key(&key, t, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    fn host_of(&self, agent: &AgentId) -> Option<HostId> {
        self.agent_host
            .get(agent)
            .cloned()
            .or_else(|| HostId::new(agent.as_str()).ok())
    }

    fn service_state(
        &mut self,
        env: &Envelope,
        host: &HostId,
        name: &ServiceName,
        down: bool,
        detail: &str,
        out: &mut Vec<Transition>,
    ) {
        let key = format!("service_down:{host}:{name}");
        if down {
            self.open_alert(
                env,
                &key,
                "service_down",
                Severity::Error,
                Some(host.clone()),
                Some(name.clone()),
                format!("{name} on {host} is down ({detail})"),
                out,
            );
        } else {
            self.resolve_key(&key, env.time, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_alert(
        &mut self,
        env: &Envelope,
        key: &str,
        kind: &str,
        severity: Severity,
        host: Option<HostId>,
        service: Option<ServiceName>,
        message: String,
        out: &mut Vec<Transition>,
    ) {
        if self.by_key.contains_key(key) {
            return;
        }
        let id = AlertId(env.id.0);
        let alert = AlertInfo {
            id,
            key: key.to_owned(),
            kind: kind.to_owned(),
            severity,
            host,
            service,
            message,
            opened_at: env.time,
            acknowledged: false,
        };
        self.by_key.insert(key.to_owned(), id);
        self.open.insert(id, alert.clone());
        out.push(Transition {
            kind: TransitionKind::Opened,
            alert,
            at: env.time,
        });
    }

    fn resolve_key(&mut self, key: &str, at: DateTime<Utc>, out: &mut Vec<Transition>) {
        if let Some(id) = self.by_key.remove(key) {
            if let Some(alert) = self.open.remove(&id) {
                out.push(Transition {
                    kind: TransitionKind::Resolved,
                    alert,
                    at,
                });
            }
        }
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
        HOST_DOWN_KINDS.iter().find_map(|kind| {
            let key = if *kind == "agent_down" {
                // agents are keyed by agent id; find any agent on this host
                let agent = self
                    .agent_host
                    .iter()
                    .find(|(_, h)| *h == host)
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_else(|| host.to_string());
                format!("agent_down:{agent}")
            } else {
                format!("{kind}:{host}")
            };
            self.by_key.get(&key).and_then(|id| self.open.get(id))
        })
    }

    /// A host's labels (empty for unknown hosts).
    pub fn host(&self, host: &HostId) -> Option<&HostInfo> {
        self.hosts.get(host)
    }

    /// True when the agent on `host` (or an agent named like it) is blocked.
    pub fn host_blocked(&self, host: &HostId) -> bool {
        self.blocked.iter().any(|a| {
            a.as_str() == host.as_str() || self.agent_host.get(a).is_some_and(|h| h == host)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::events::agent::{AgentNotice, ServiceState};
    use fleetbus_schemas::events::service::ServiceStatus;
    use fleetbus_schemas::Actor;

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
