//! Opening the log for serving: verify what ingest relies on, or refuse.

use std::path::Path;
use std::time::Instant;

use redb::{ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use super::tables::{CHECKPOINTS, ENTRIES, HEAD_KEY, META, SNAPSHOTS};
use super::{
    decode_snapshot, snapshot_matches, stored_envelope, Checkpoint, Fold, Head, LogError, LogStore,
    RepairReport, StateAt, VerifyReport,
};

/// A log opened for serving, and what was checked.
#[derive(Debug)]
pub struct Opened<S> {
    /// The store.
    pub store: LogStore,
    /// The state at the head (newest verified snapshot + refold of the tail).
    pub state: S,
    /// How the state was computed.
    pub at: StateAt,
    /// What [`LogStore::verify`] checked.
    pub verified: VerifyReport,
    /// Wall time of the verification in seconds.
    pub verify_seconds: f64,
    /// What `--repair` did (`None` without it).
    pub repaired: Option<RepairReport>,
    /// Snapshots from before checkpoints existed, bound after a refold proved them.
    pub bound: u64,
    /// Snapshots newer than the newest anchored checkpoint, proved equal to the refold.
    pub proved: u64,
    /// Entries refolded to prove them.
    pub proof_refolded: u64,
}

/// Opens the log at `path` for serving: with `repair`, first repairs it ([`LogStore::repair`]);
/// then verifies the whole entry chain, the head, the dedup and time indexes, every checkpoint
/// and every snapshot's bytes ([`LogStore::verify`]), binds snapshots written
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
    let verified = store.verify()?.into_result()?;
    let verify_seconds = started.elapsed().as_secs_f64();
    let bound = store.bind_legacy_snapshots::<S>()?;
    let (proved, proof_refolded) = store.prove_unanchored::<S>(verified.anchored_checkpoint)?;
    let (state, at) = store.load_latest::<S>()?;
    Ok(Opened {
        store,
        state,
        at,
        verified,
        verify_seconds,
        repaired,
        bound,
        proved,
        proof_refolded,
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
        let last = checkpoints.last()?;
        let cp = last
            .map(|(k, v)| Checkpoint::decode(k.value(), v.value()))
            .transpose()?;
        Ok((head, cp))
    }
}

impl LogStore {
    /// Proves the snapshots no head anchor pins (those after `anchored`, the newest checkpoint an
    /// anchor in the chain names): a snapshot rewritten together with its checkpoint rows matches
    /// its rows, so it is compared with the refold instead — from the anchored snapshot (its
    /// bytes hashed against its checkpoint), or from the empty state when there is none. With
    /// anchors every 100,000 entries that is a bounded tail. Returns (snapshots compared,
    /// entries refolded).
    pub fn prove_unanchored<S: Fold>(&self, anchored: Option<u64>) -> Result<(u64, u64), LogError> {
        let txn = self.db.begin_read()?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let Some(newest) = snapshots.last()?.map(|(k, _)| k.value()) else {
            return Ok((0, 0));
        };
        if anchored == Some(newest) {
            return Ok((0, 0));
        }
        let bad = |seq: u64, problem: String| LogError::Unverified {
            part: "snapshot",
            seq,
            problem,
        };
        let (mut state, from) = match anchored {
            Some(p) => {
                let bytes = snapshots
                    .get(p)?
                    .ok_or_else(|| bad(p, "anchored snapshot is missing".into()))?;
                let checkpoints = txn.open_table(CHECKPOINTS)?;
                let row = checkpoints
                    .get(p)?
                    .ok_or_else(|| bad(p, "anchored checkpoint is missing".into()))?;
                let cp = Checkpoint::decode(p, row.value())?;
                if <[u8; 32]>::from(Sha256::digest(bytes.value())) != cp.state_sha256 {
                    return Err(bad(
                        p,
                        "snapshot bytes do not hash to its anchored checkpoint".into(),
                    ));
                }
                (decode_snapshot::<S>(p, bytes.value())?, p)
            }
            None => (S::default(), 0),
        };
        let mut compared = 0;
        let differs = |seq: u64| {
            bad(
                seq,
                format!("differs from the refold of the entries after snapshot {from} (it was rewritten with its checkpoints)"),
            )
        };
        if anchored.is_none() {
            if let Some(v) = snapshots.get(0)? {
                if !snapshot_matches(0, v.value(), &state) {
                    return Err(differs(0));
                }
                compared += 1;
            }
        }
        let seqs = snapshots
            .range(from + 1..=newest)?
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<Vec<u64>, _>>()?;
        let mut next = seqs.iter().peekable();
        let entries = txn.open_table(ENTRIES)?;
        let mut refolded = 0;
        for item in entries.range(from + 1..=newest)? {
            let (k, v) = item?;
            let seq = k.value();
            state.apply(seq, &stored_envelope(seq, v.value())?);
            refolded += 1;
            if next.next_if(|&&s| s == seq).is_some() {
                let stored = snapshots
                    .get(seq)?
                    .ok_or_else(|| bad(seq, "snapshot vanished".into()))?;
                if !snapshot_matches(seq, stored.value(), &state) {
                    return Err(differs(seq));
                }
                compared += 1;
            }
        }
        Ok((compared, refolded))
    }
}
