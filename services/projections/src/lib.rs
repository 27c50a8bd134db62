//! Projections: pure folds of the event log.
//!
//! Every read model a user sees is `fold(state, (seq, envelope)) -> state` over the log, with no
//! I/O and no clock: anything time-relative (e.g. "last 24 hours") is computed at query time from
//! a `now` the caller passes. Ingest holds the authoritative copy (and proves rebuild == live);
//! other services may fold the same events into a private cache and derive the same answers —
//! in particular the same alert ids, because an alert's id is the id of the event that opened it.
//!
//! These types are also the reply types of the `fleet.q.*` queries.

use fleetbus_schemas::Envelope;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod alerts;
pub mod checks;
pub mod configs;
pub mod counts;
pub mod fleet;
pub mod history;
pub mod jobs;
pub mod registry;
pub mod state;

pub use alerts::{Alert, AlertKind, AlertState, Alerts};
pub use checks::Checks;
pub use configs::{Configs, DriftState, DriftView, Management};
pub use counts::EventCounts;
pub use fleet::{FleetStatus, HostState, HostStatus, Liveness, ServiceView};
pub use history::{History, HistoryChange, HistoryEntry};
pub use jobs::{JobState, JobView, Jobs};
pub use registry::{AgentRecord, Registry, UserRecord};
pub use state::State;

/// A projection state that can be folded over the log and snapshotted (the log crate,
/// `fleetbus-log`, stores snapshots of any `Fold`).
///
/// `apply` must be a pure function of the state and the entry (no clock, no I/O), so that a
/// rebuild from the log gives exactly the live state.
pub trait Fold: Default + Serialize + DeserializeOwned + PartialEq + Send + 'static {
    /// Folds one log entry into the state.
    fn apply(&mut self, seq: u64, envelope: &Envelope);
}

/// All projections, folded together in log order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Projections {
    /// Sequence of the last entry applied (0 = none).
    pub seq: u64,
    /// Hosts, agents and services as registered (includes credential hashes: never reply with
    /// it unredacted).
    pub registry: Registry,
    /// Status of every host and service.
    pub fleet: FleetStatus,
    /// Alerts opened and resolved by events.
    pub alerts: Alerts,
    /// State-change history.
    pub history: History,
    /// Per-host event counts by hour.
    pub counts: EventCounts,
    /// Jobs and their outcomes.
    pub jobs: Jobs,
}

impl Projections {
    /// Folds one log entry. Entries must be applied in sequence order; an entry at or below the
    /// current sequence is ignored, so re-applying a tail is harmless.
    pub fn apply(&mut self, seq: u64, env: &Envelope) {
        if seq <= self.seq {
            return;
        }
        self.seq = seq;
        // Registry first: the others look up specs (e.g. whether a service is expected to run).
        self.registry.apply(env);
        let changes = self.fleet.apply(seq, env, &self.registry);
        self.alerts.apply(seq, env, &self.registry, &changes);
        self.history.apply(seq, env, &changes);
        self.counts.apply(env);
        self.jobs.apply(seq, env);
    }

    /// A copy safe to send to any reader: credential hashes removed.
    pub fn registry_redacted(&self) -> Registry {
        self.registry.redacted()
    }
}

/// A state change the fleet fold noticed; alerts and history react to these.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A service's reduced state changed (`from` is `None` the first time it is seen).
    Service {
        /// The service.
        key: fleetbus_schemas::ServiceKey,
        /// Previous state.
        from: Option<fleetbus_schemas::events::agent::ServiceState>,
        /// New state.
        to: fleetbus_schemas::events::agent::ServiceState,
        /// The manager's words.
        detail: Option<String>,
    },
    /// An agent's liveness changed.
    Liveness {
        /// The host the agent runs on.
        host: fleetbus_schemas::HostId,
        /// The agent.
        agent: fleetbus_schemas::AgentId,
        /// Previous.
        from: Liveness,
        /// New.
        to: Liveness,
    },
    /// A host became unreachable or reachable again over SSH.
    Reachability {
        /// The host.
        host: fleetbus_schemas::HostId,
        /// Now reachable?
        reachable: bool,
        /// Why not, if not.
        reason: Option<String>,
    },
}
