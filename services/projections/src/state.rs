//! The state ingest folds in the writer, in commit order, and snapshots in its log: the shared
//! projections plus what ingest needs to validate commands and agents (the last desired config
//! per agent, managed configs, defined checks). `fleetctl log verify|rebuild` folds the same.

use std::collections::BTreeMap;

use fleetbus_schemas::events::{ConfigEvent, Event};
use fleetbus_schemas::{AgentId, Envelope};
use serde::{Deserialize, Serialize};

use crate::{Checks, Configs, Fold, Projections};

/// The last desired config set for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Monotonic version.
    pub version: u64,
    /// SHA-256 (hex) of the TOML text.
    pub hash: String,
}

/// Everything ingest folds from the log. Snapshots store this whole value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The read models (`fleet.q.*` answers).
    pub projections: Projections,
    /// Desired config per agent (to number the next version).
    pub desired: BTreeMap<AgentId, Desired>,
    /// Managed configs, snapshots and instructions (see [`crate::configs`]).
    #[serde(default)]
    pub configs: Configs,
    /// Defined checks, to authorize agents' pings (see [`crate::checks`]).
    #[serde(default)]
    pub checks: Checks,
}

impl Fold for State {
    fn apply(&mut self, seq: u64, envelope: &Envelope) {
        self.projections.apply(seq, envelope);
        self.configs.apply(seq, envelope);
        self.checks.apply(envelope);
        if let Event::Config(ConfigEvent::DesiredSet {
            agent,
            version,
            hash,
            ..
        }) = &envelope.event
        {
            self.desired.insert(
                agent.clone(),
                Desired {
                    version: *version,
                    hash: hash.clone(),
                },
            );
        }
    }
}
