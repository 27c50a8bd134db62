//! State-change history of hosts and services, newest last, bounded per subject.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::Event;
use fleetbus_schemas::{Envelope, HostId, ServiceKey, ServiceName};
use serde::{Deserialize, Serialize};

use crate::fleet::Liveness;
use crate::Change;

/// How many entries are kept per host or service; older history stays in the log.
pub const ENTRIES_PER_SUBJECT: usize = 500;

/// What changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryChange {
    /// A service changed state.
    Service {
        /// Previous state.
        from: Option<ServiceState>,
        /// New state.
        to: ServiceState,
        /// The manager's words.
        detail: Option<String>,
    },
    /// An agent's liveness changed.
    Agent {
        /// Previous.
        from: Liveness,
        /// New.
        to: Liveness,
    },
    /// SSH reachability changed.
    Reachability {
        /// Now reachable?
        reachable: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// The host was registered or its registration changed.
    Registered,
    /// The host was removed.
    Removed,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Log sequence of the event.
    pub seq: u64,
    /// Event time.
    pub time: DateTime<Utc>,
    /// The host.
    pub host: HostId,
    /// The service, for service changes.
    pub service: Option<ServiceName>,
    /// What changed.
    pub change: HistoryChange,
}

/// History by host (host-level changes) and by service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Host-level entries.
    pub hosts: BTreeMap<HostId, VecDeque<HistoryEntry>>,
    /// Service entries by (host, service).
    pub services: BTreeMap<ServiceKey, VecDeque<HistoryEntry>>,
}

fn push(list: &mut VecDeque<HistoryEntry>, entry: HistoryEntry) {
    list.push_back(entry);
    while list.len() > ENTRIES_PER_SUBJECT {
        list.pop_front();
    }
}

impl History {
    /// Folds one event and the changes the fleet fold derived from it.
    pub fn apply(&mut self, seq: u64, env: &Envelope, changes: &[Change]) {
        let entry = |host: &HostId, service: Option<ServiceName>, change| HistoryEntry {
            seq,
            time: env.time,
            host: host.clone(),
            service,
            change,
        };
        for change in changes {
            match change {
                Change::Service {
                    key,
                    from,
                    to,
                    detail,
                } => push(
                    self.services.entry(key.clone()).or_default(),
                    entry(
                        &key.host,
                        Some(key.service.clone()),
                        HistoryChange::Service {
                            from: *from,
                            to: *to,
                            detail: detail.clone(),
                        },
                    ),
                ),
                Change::Liveness { host, from, to, .. } => push(
                    self.hosts.entry(host.clone()).or_default(),
                    entry(
                        host,
                        None,
                        HistoryChange::Agent {
                            from: *from,
                            to: *to,
                        },
                    ),
                ),
                Change::Reachability {
                    host,
                    reachable,
                    reason,
                } => push(
                    self.hosts.entry(host.clone()).or_default(),
                    entry(
                        host,
                        None,
                        HistoryChange::Reachability {
                            reachable: *reachable,
                            reason: reason.clone(),
                        },
                    ),
                ),
            }
        }
        match &env.event {
            Event::Host(HostEvent::Registered(spec) | HostEvent::Updated(spec)) => push(
                self.hosts.entry(spec.host.clone()).or_default(),
                entry(&spec.host, None, HistoryChange::Registered),
            ),
            Event::Host(HostEvent::Removed { host }) => push(
                self.hosts.entry(host.clone()).or_default(),
                entry(host, None, HistoryChange::Removed),
            ),
            _ => {}
        }
    }

    /// Entries for a host (its own and its services'), or one service, newest first, with
    /// sequence below `before_seq`, at most `limit`.
    pub fn page(
        &self,
        host: Option<&HostId>,
        service: Option<&ServiceName>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Vec<HistoryEntry> {
        let mut out: Vec<&HistoryEntry> = match (host, service) {
            (Some(h), Some(s)) => self
                .services
                .get(&ServiceKey::new(h.clone(), s.clone()))
                .into_iter()
                .flatten()
                .collect(),
            (Some(h), None) => self
                .hosts
                .get(h)
                .into_iter()
                .flatten()
                .chain(
                    self.services
                        .iter()
                        .filter(|(key, _)| &key.host == h)
                        .flat_map(|(_, list)| list),
                )
                .collect(),
            (None, _) => self
                .hosts
                .values()
                .flatten()
                .chain(self.services.values().flatten())
                .collect(),
        };
        out.retain(|e| before_seq.is_none_or(|b| e.seq < b));
        out.sort_by_key(|e| std::cmp::Reverse(e.seq));
        out.into_iter().take(limit).cloned().collect()
    }
}
