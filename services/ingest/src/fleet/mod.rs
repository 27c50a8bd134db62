//! The hub side of agent fleet management: managed configs and drift, instructions to agents
//! (push, self-update), disaster-recovery snapshots with retrieval passphrases, and assets.
//!
//! - [`merge`]: pure TOML deep merge, overlays and value-based drift.
//! - [`fold`]: [`Configs`], the managed-config read model folded from the log.
//! - [`decide`]: `fleet.cmd.config.*` commands → config events.
//! - [`http`]: the agent-facing routes (config fetch with ETag, live config, acks, snapshots,
//!   recovery, assets).
//! - [`store`]: object store buckets and snapshot sealing.
//! - [`queries`]: the `fleet.q.config` read model for fleetctl and the web UI.

pub(crate) mod decide;
pub(crate) mod http;
pub(crate) mod queries;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use fleetbus_schemas::Envelope;
use tokio_util::sync::CancellationToken;

pub(crate) use decide::decide;
use fleetbus_projections::configs::merge;
pub(crate) use http::router;

use crate::writer::Shared;
use fleetbus_log::Appended;

/// What can go wrong in fleet management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FleetError {
    /// The snapshot key file is unusable.
    #[error("snapshot key {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Sealing or opening a snapshot failed.
    #[error("snapshot crypto: {0}")]
    Crypto(String),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(String),
    /// The events were not committed.
    #[error("log: {0}")]
    Commit(#[source] crate::commit::CommitError),
}

/// Settings of the fleet routes. Defaults suit the demo; ingest passes its state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The snapshot key file.
    pub key_path: PathBuf,
    /// Largest snapshot accepted (bytes, plaintext).
    pub max_snapshot_bytes: usize,
    /// Snapshots kept per agent.
    pub keep_snapshots: usize,
    /// Largest live config or ack body (bytes).
    pub max_body_bytes: usize,
    /// Wrong passphrases allowed before an agent's recovery is locked for a while.
    pub free_attempts: u32,
    /// The first lockout; each further wrong passphrase doubles it.
    pub lockout: Duration,
    /// How long a request waits for its events to be committed.
    pub commit_timeout: Duration,
}

impl Settings {
    /// Defaults for a state dir.
    pub(crate) fn new(state_dir: &Path) -> Settings {
        Settings {
            key_path: store::SnapshotKey::path(state_dir),
            max_snapshot_bytes: 8 * 1024 * 1024,
            keep_snapshots: 5,
            max_body_bytes: merge::MAX_CONFIG_BYTES + 4 * 1024,
            free_attempts: 3,
            lockout: Duration::from_secs(30),
            commit_timeout: Duration::from_secs(10),
        }
    }
}

/// Publishes events and waits until each is in the log (like the agent API's "202 means
/// durable").
pub(crate) async fn commit(
    shared: &Shared,
    js: &jetstream::Context,
    envelopes: &[Envelope],
    timeout: Duration,
) -> Result<u64, FleetError> {
    let outcomes =
        crate::commit::publish_and_wait(shared, js, envelopes, timeout, &CancellationToken::new())
            .await
            .map_err(FleetError::Commit)?;
    Ok(outcomes.into_iter().map(Appended::seq).max().unwrap_or(0))
}
