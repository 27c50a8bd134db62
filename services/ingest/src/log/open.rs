//! Opening the log for serving: verify what ingest relies on, or refuse.

use std::path::Path;
use std::time::Instant;

use super::tables::{CHECKPOINTS, HEAD_KEY, META};
use super::{Checkpoint, Fold, Head, LogError, LogStore, RepairReport, StateAt, VerifyReport};

/// A log opened for serving, and what was checked.
#[derive(Debug)]
pub struct Opened<S> {
    /// The store.
    pub store: LogStore,
    /// The state at the head (newest verified snapshot + refold of the tail).
    pub state: S,
    /// How the state was computed.
    pub at: StateAt,
    /// What [`LogStore::verify_at_open`] checked.
    pub verified: VerifyReport,
    /// Wall time of the verification in seconds.
    pub verify_seconds: f64,
    /// What `--repair` did (`None` without it).
    pub repaired: Option<RepairReport>,
    /// Snapshots from before checkpoints existed, bound after a refold proved them.
    pub bound: u64,
}

/// Opens the log at `path` for serving: with `repair`, first repairs it ([`LogStore::repair`]);
/// then verifies the whole entry chain, the head, the dedup and time indexes, every checkpoint
/// and the bytes of the newest snapshot ([`LogStore::verify_at_open`]), binds snapshots written
/// before checkpoints existed (after a refold proves them), and loads the state. A log that
/// does not verify is an [`LogError::Unverified`] naming the entry, snapshot or row.
pub fn open_verified<S: Fold>(path: &Path, repair: bool) -> Result<Opened<S>, LogError> {
    let store = LogStore::open(path)?;
    let repaired = if repair {
        Some(store.repair::<S>()?)
    } else {
        None
    };
    let started = Instant::now();
    let verified = store.verify_at_open()?.into_result()?;
    let verify_seconds = started.elapsed().as_secs_f64();
    let bound = store.bind_legacy_snapshots::<S>()?;
    let (state, at) = store.load_latest::<S>()?;
    Ok(Opened {
        store,
        state,
        at,
        verified,
        verify_seconds,
        repaired,
        bound,
    })
}

impl LogStore {
    /// The committed head and the newest checkpoint, read together (what a head anchor claims).
    pub fn anchor_point(&self) -> Result<(Head, Option<Checkpoint>), LogError> {
        let txn = self.db.begin_read()?;
        let head = match txn.open_table(META)?.get(HEAD_KEY)? {
            Some(v) => Head::decode(v.value())?,
            None => Head::EMPTY,
        };
        let checkpoints = txn.open_table(CHECKPOINTS)?;
        let last = redb::ReadableTable::last(&checkpoints)?;
        let cp = last
            .map(|(k, v)| Checkpoint::decode(k.value(), v.value()))
            .transpose()?;
        Ok((head, cp))
    }
}
