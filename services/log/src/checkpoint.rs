//! Snapshots bound to the chain. Every projection snapshot has a row in `checkpoints` under the
//! same sequence, written in the same transaction:
//!
//! ```text
//! entry_hash[32] | state_sha256[32] | digest[32]
//! digest_k = SHA-256(digest_{k-1} | seq_k u64 BE | entry_hash(seq_k) | state_sha256_k),  digest_0 = zeros
//! ```
//!
//! The entries and their hashes are untouched (the log stays a pure function of the stream);
//! the checkpoint chain hangs off it. A snapshot whose bytes, sequence or position in the chain
//! were changed no longer matches its row, and a row changed to match breaks every later digest
//! and the digests published in head anchors.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};
use sha2::{Digest, Sha256};

use super::tables::{CHECKPOINTS, ENTRIES, SNAPSHOTS};
use super::{Fold, Hash, LogError, LogStore, GENESIS_HASH, HASH_LEN};

/// One snapshot's binding to the chain (a row of the `checkpoints` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The snapshot's sequence (the state after this entry was applied).
    pub seq: u64,
    /// Entry `seq`'s hash ([`GENESIS_HASH`] for 0).
    pub entry_hash: Hash,
    /// SHA-256 of the stored snapshot bytes.
    pub state_sha256: Hash,
    /// The checkpoint chain digest up to and including this snapshot.
    pub digest: Hash,
}

const ROW_LEN: usize = HASH_LEN * 3;

impl Checkpoint {
    /// The checkpoint following `prev_digest` for a snapshot at `seq`.
    pub fn next(prev_digest: &Hash, seq: u64, entry_hash: Hash, snapshot: &[u8]) -> Checkpoint {
        let state_sha256: Hash = Sha256::digest(snapshot).into();
        Checkpoint {
            seq,
            entry_hash,
            state_sha256,
            digest: chain_digest(prev_digest, seq, &entry_hash, &state_sha256),
        }
    }

    /// The stored row: `entry_hash | state_sha256 | digest`.
    pub fn encode(&self) -> [u8; ROW_LEN] {
        let mut v = [0; ROW_LEN];
        v[..HASH_LEN].copy_from_slice(&self.entry_hash);
        v[HASH_LEN..HASH_LEN * 2].copy_from_slice(&self.state_sha256);
        v[HASH_LEN * 2..].copy_from_slice(&self.digest);
        v
    }

    /// Parses the stored row of the snapshot at `seq`.
    pub fn decode(seq: u64, v: &[u8]) -> Result<Checkpoint, LogError> {
        if v.len() != ROW_LEN {
            return Err(LogError::Snapshot {
                seq,
                reason: format!("checkpoint row is {} bytes, expected {ROW_LEN}", v.len()),
            });
        }
        let part = |i: usize| {
            let mut h = GENESIS_HASH;
            h.copy_from_slice(&v[i * HASH_LEN..(i + 1) * HASH_LEN]);
            h
        };
        Ok(Checkpoint {
            seq,
            entry_hash: part(0),
            state_sha256: part(1),
            digest: part(2),
        })
    }
}

/// `SHA-256(prev_digest | seq u64 BE | entry_hash | state_sha256)`.
pub fn chain_digest(prev_digest: &Hash, seq: u64, entry_hash: &Hash, state_sha256: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev_digest);
    h.update(seq.to_be_bytes());
    h.update(entry_hash);
    h.update(state_sha256);
    h.finalize().into()
}

/// Stores a snapshot at `seq` (the head of the transaction) with its checkpoint row, chained to
/// the newest checkpoint before it. Snapshots are only ever taken at the head, so a row at `seq`
/// can only be the newest one (a second snapshot at the same head replaces it).
pub(crate) fn put_snapshot(
    snapshots: &mut Table<u64, &[u8]>,
    checkpoints: &mut Table<u64, &[u8]>,
    seq: u64,
    entry_hash: Hash,
    bytes: &[u8],
) -> Result<Checkpoint, LogError> {
    let prev = match checkpoints.range(..seq)?.next_back().transpose()? {
        Some((k, v)) => Checkpoint::decode(k.value(), v.value())?.digest,
        None => GENESIS_HASH,
    };
    let cp = Checkpoint::next(&prev, seq, entry_hash, bytes);
    snapshots.insert(seq, bytes)?;
    checkpoints.insert(seq, cp.encode().as_slice())?;
    Ok(cp)
}

impl LogStore {
    /// The newest checkpoint (`None` when no snapshot is bound yet).
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, LogError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHECKPOINTS)?;
        let last = table.last()?;
        last.map(|(k, v)| Checkpoint::decode(k.value(), v.value()))
            .transpose()
    }

    /// Every checkpoint row, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, LogError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHECKPOINTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(Checkpoint::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Binds the snapshots of a log written before checkpoints existed (snapshots stored, no
    /// checkpoint row at all). Their bytes are not trusted as they are: the whole log is refolded
    /// and every snapshot compared with the refold ([`LogStore::rebuild_as`]); only if all are
    /// equal are they bound, oldest first. Returns how many were bound (0: nothing to migrate).
    /// A snapshot that differs is an error naming it (`--repair` drops it).
    pub fn bind_legacy_snapshots<S: Fold>(&self) -> Result<u64, LogError> {
        {
            let txn = self.db.begin_read()?;
            let snapshots = txn.open_table(SNAPSHOTS)?;
            let checkpoints = txn.open_table(CHECKPOINTS)?;
            if snapshots.is_empty()? || !checkpoints.is_empty()? {
                return Ok(0);
            }
        }
        let (report, _) = self.rebuild_as::<S>()?;
        if let Some(seq) = report.first_difference {
            return Err(LogError::Unverified {
                part: "snapshot",
                seq,
                problem: "an unbound snapshot (written before checkpoints) differs from the refold of the entries up to it".into(),
            });
        }
        let txn = self.db.begin_write()?;
        let mut bound = 0;
        {
            let snapshots = txn.open_table(SNAPSHOTS)?;
            let entries = txn.open_table(ENTRIES)?;
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let mut prev = GENESIS_HASH;
            for item in snapshots.iter()? {
                let (k, v) = item?;
                let seq = k.value();
                let entry_hash = match seq {
                    0 => GENESIS_HASH,
                    _ => match entries.get(seq)? {
                        Some(e) => super::Entry::decode(seq, e.value())?.hash,
                        None => {
                            return Err(LogError::Unverified {
                                part: "snapshot",
                                seq,
                                problem: "snapshot of an entry that is not in the log".into(),
                            })
                        }
                    },
                };
                let cp = Checkpoint::next(&prev, seq, entry_hash, v.value());
                checkpoints.insert(seq, cp.encode().as_slice())?;
                prev = cp.digest;
                bound += 1;
            }
        }
        txn.commit()?;
        Ok(bound)
    }
}
