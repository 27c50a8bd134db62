//! The event log: an append-only, hash-chained redb file with a dedup index, a time index and
//! periodic projection snapshots. Ingest is its only writer; `fleetctl log` reads, verifies and
//! rebuilds it offline. This crate is the file format and nothing else: no bus, no async.
//!
//! # Entry format (for outside verifiers)
//!
//! Each entry is stored under its sequence number (`u64`, 1-based, gapless) as
//!
//! ```text
//! prev_hash[32] | hash[32] | subject_len: u16 BE | subject (UTF-8) | envelope (MessagePack)
//! ```
//!
//! where `envelope` is the payload exactly as it was published on the bus, and
//!
//! ```text
//! hash = SHA-256(prev_hash || seq: u64 BE || subject_len: u16 BE || subject || envelope)
//! ```
//!
//! The first entry's `prev_hash` is 32 zero bytes. The subject length is hashed so that the
//! subject/envelope boundary cannot be moved without changing the hash. [`LogStore::verify`]
//! recomputes the chain and names the first entry that does not match.
//!
//! # Offline use (fleetctl)
//!
//! [`LogStore::open`] takes the redb file lock, so `verify`, `rebuild` and `export` run on the
//! file while ingest is stopped (`fleetctl log verify|rebuild|export --db <state>/ingest/log.redb`).
//! While ingest runs, the same entries are readable over the bus through the `events` query
//! (`after_seq` paging) and the head through the `log_head` query.

pub mod anchor;
pub mod checkpoint;
mod entry;
mod error;
mod open;
mod rebuild;
mod repair;
mod tables;
mod upgrade;
mod verify;

pub use anchor::anchor_event;
pub use checkpoint::Checkpoint;
use entry::{encode_entry, split_entry, stored_envelope};
pub use entry::{entry_hash, Entry};
pub use error::LogError;
/// The projection state a log folds and snapshots (defined with the folds).
pub use fleetbus_projections::Fold;
pub use open::{open_verified, Opened};
pub use rebuild::RebuildReport;
pub use repair::RepairReport;
pub use verify::{BadEntry, Part, VerifyReport};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetbus_schemas::{Envelope, EventId};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use tables::{
    CHECKPOINTS, DEDUP, ENTRIES, HEAD_KEY, LOG_ID_KEY, META, POSITIONS, SNAPSHOTS, TIME_INDEX,
};

/// SHA-256 digest length.
pub const HASH_LEN: usize = 32;

/// A SHA-256 digest.
pub type Hash = [u8; HASH_LEN];

/// redb page cache size.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The `prev_hash` of entry 1.
pub const GENESIS_HASH: Hash = [0; HASH_LEN];

/// The log's last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its sequence; 0 for an empty log.
    pub seq: u64,
    /// Its hash; [`GENESIS_HASH`] for an empty log.
    pub hash: Hash,
    /// When the last transaction committed (ms since the epoch).
    pub commit_ms: u64,
}

impl Head {
    const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS_HASH,
        commit_ms: 0,
    };

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.commit_ms.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Head, LogError> {
        if v.len() != 48 {
            return Err(LogError::Corrupt {
                seq: 0,
                reason: format!("head record is {} bytes, expected 48", v.len()),
            });
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&v[..8]);
        let mut hash = GENESIS_HASH;
        hash.copy_from_slice(&v[8..40]);
        let mut ms = [0; 8];
        ms.copy_from_slice(&v[40..48]);
        Ok(Head {
            seq: u64::from_be_bytes(seq),
            hash,
            commit_ms: u64::from_be_bytes(ms),
        })
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The subject it arrived on.
    pub subject: String,
    /// The payload as published.
    pub bytes: bytes::Bytes,
    /// The decoded payload.
    pub envelope: Envelope,
}

/// What became of one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this new sequence.
    New(u64),
    /// Its id was already in the log, under this sequence; nothing was stored.
    Duplicate(u64),
}

impl Appended {
    /// The sequence the event lives under.
    pub fn seq(self) -> u64 {
        match self {
            Appended::New(s) | Appended::Duplicate(s) => s,
        }
    }
}

/// How a past state was computed (for measuring time travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateAt {
    /// The state is as of this sequence.
    pub seq: u64,
    /// The snapshot it started from (0: from the empty state).
    pub snapshot_seq: u64,
    /// Entries folded on top of the snapshot.
    pub refolded: u64,
}

/// The event log file.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl LogStore {
    /// Opens (or creates) the log file. Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<LogStore, LogError> {
        let path = path.as_ref().to_owned();
        let open_err = |reason: String| LogError::Open {
            path: path.clone(),
            reason,
        };
        // redb's read cache would otherwise grow to 1 GiB as queries page through the log.
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let db = match builder.create(&path) {
            Err(redb::DatabaseError::UpgradeRequired(2)) => {
                upgrade::v2_to_v3(&path)?;
                builder.create(&path)
            }
            other => other,
        }
        .map_err(|e| open_err(e.to_string()))?;
        // Create every table once so readers never see "table does not exist".
        let txn = db.begin_write()?;
        {
            txn.open_table(ENTRIES)?;
            txn.open_table(DEDUP)?;
            txn.open_table(TIME_INDEX)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(POSITIONS)?;
            txn.open_table(CHECKPOINTS)?;
            let mut meta = txn.open_table(META)?;
            if meta.get(HEAD_KEY)?.is_none() {
                meta.insert(HEAD_KEY, Head::EMPTY.encode().as_slice())?;
            }
            if meta.get(LOG_ID_KEY)?.is_none() {
                meta.insert(LOG_ID_KEY, ulid::Ulid::new().to_string().as_bytes())?;
            }
        }
        txn.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            path,
        })
    }

    /// The stream sequence the log has taken in up to (0: nothing of that stream yet).
    pub fn position(&self, stream: &str) -> Result<u64, LogError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POSITIONS)?;
        let seq = table.get(stream)?.map(|v| v.value()).unwrap_or(0);
        Ok(seq)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This file's identity (made when it was created; head anchors name it).
    pub fn log_id(&self) -> Result<String, LogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let id = meta.get(LOG_ID_KEY)?.map(|v| v.value().to_vec());
        Ok(String::from_utf8_lossy(&id.unwrap_or_default()).into_owned())
    }

    /// The head as recorded.
    pub fn head(&self) -> Result<Head, LogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let head = match meta.get(HEAD_KEY)? {
            Some(v) => Head::decode(v.value()),
            None => Ok(Head::EMPTY),
        };
        head
    }

    /// The sequence an event id was stored under, if it is in the log.
    pub fn lookup(&self, id: EventId) -> Result<Option<u64>, LogError> {
        let txn = self.db.begin_read()?;
        let dedup = txn.open_table(DEDUP)?;
        let seq = dedup.get(u128::from(id.0))?.map(|v| v.value());
        Ok(seq)
    }

    /// One entry.
    pub fn entry(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let entry = entries
            .get(seq)?
            .map(|v| Entry::decode(seq, v.value()))
            .transpose();
        entry
    }

    /// Entries with `seq >= from_seq`, oldest first, from one consistent read snapshot.
    pub fn export(&self, from_seq: u64) -> Result<Export, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        Ok(Export {
            range: entries.range_owned(from_seq..)?,
            reverse: false,
        })
    }

    /// Entries with `seq < before_seq`, newest first.
    pub fn export_before(&self, before_seq: u64) -> Result<Export, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        Ok(Export {
            range: entries.range_owned(..before_seq)?,
            reverse: true,
        })
    }

    /// Number of stored entries.
    pub fn len(&self) -> Result<u64, LogError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(ENTRIES)?.len()?)
    }

    /// `true` for an empty log.
    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }

    /// The last sequence committed at or before `ms` (0 if none).
    pub fn seq_at_time(&self, ms: u64) -> Result<u64, LogError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(TIME_INDEX)?;
        let last = index.range(..=ms)?.next_back().transpose()?;
        Ok(last.map(|(_, seq)| seq.value()).unwrap_or(0))
    }

    /// The state as of `seq` (clamped to the head): the nearest snapshot at or below it plus a
    /// refold of the entries in between.
    pub fn state_at<S: Fold>(&self, seq: u64) -> Result<(S, StateAt), LogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let head = match meta.get(HEAD_KEY)? {
            Some(v) => Head::decode(v.value())?,
            None => Head::EMPTY,
        };
        let target = seq.min(head.seq);
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let (mut state, snapshot_seq) = match snapshots.range(..=target)?.next_back().transpose()? {
            Some((k, v)) => (decode_snapshot::<S>(k.value(), v.value())?, k.value()),
            None => (S::default(), 0),
        };
        let entries = txn.open_table(ENTRIES)?;
        let mut refolded = 0;
        for item in entries.range(snapshot_seq + 1..=target)? {
            let (k, v) = item?;
            let seq = k.value();
            state.apply(seq, &stored_envelope(seq, v.value())?);
            refolded += 1;
        }
        Ok((
            state,
            StateAt {
                seq: target,
                snapshot_seq,
                refolded,
            },
        ))
    }

    /// Reads the newest snapshot and refolds the entries after it: the state at the head.
    pub fn load_latest<S: Fold>(&self) -> Result<(S, StateAt), LogError> {
        self.state_at(u64::MAX)
    }

    /// Stores a snapshot of `state` at the current head (used at clean shutdown).
    pub fn save_snapshot<S: Fold>(&self, state: &S) -> Result<u64, LogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let seq;
        {
            let meta = txn.open_table(META)?;
            let head = match meta.get(HEAD_KEY)? {
                Some(v) => Head::decode(v.value())?,
                None => Head::EMPTY,
            };
            seq = head.seq;
            let bytes = encode_snapshot(seq, state)?;
            checkpoint::put_snapshot(
                &mut txn.open_table(SNAPSHOTS)?,
                &mut txn.open_table(CHECKPOINTS)?,
                seq,
                head.hash,
                &bytes,
            )?;
        }
        txn.commit()?;
        Ok(seq)
    }

    /// Appends a batch in one durable (fsync-ed) transaction: [`LogStore::stage_batch`] then
    /// [`Staged::commit`].
    pub fn append_batch<S: Fold>(
        &self,
        batch: &[NewEntry],
        state: &mut S,
        snapshot_every: u64,
    ) -> Result<(Vec<Appended>, Head), LogError> {
        self.stage_batch(batch, state, snapshot_every)?.commit()
    }

    /// Writes a batch into a durable (fsync-on-commit) transaction without committing it: dedup
    /// by event id, hash chain, time index, `state.apply` for every new entry, and a snapshot
    /// whenever a new entry's sequence is a multiple of `snapshot_every` (0: never). The writer
    /// holds the state lock only for this part, not for the fsync. On error nothing is stored,
    /// but `state` may already contain some of the batch: the caller must reload it.
    pub fn stage_batch<S: Fold>(
        &self,
        batch: &[NewEntry],
        state: &mut S,
        snapshot_every: u64,
    ) -> Result<Staged, LogError> {
        let mut out = Vec::with_capacity(batch.len());
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let head;
        {
            let mut meta = txn.open_table(META)?;
            let mut h = match meta.get(HEAD_KEY)? {
                Some(v) => Head::decode(v.value())?,
                None => Head::EMPTY,
            };
            let mut entries = txn.open_table(ENTRIES)?;
            let mut dedup = txn.open_table(DEDUP)?;
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let before = h.seq;
            for item in batch {
                let id = u128::from(item.envelope.id.0);
                if item.subject.len() > u16::MAX as usize {
                    return Err(LogError::Invalid {
                        id: item.envelope.id,
                        reason: format!("subject is {} bytes, at most 65535", item.subject.len()),
                    });
                }
                let seq = h.seq + 1;
                // One B-tree operation for the common case: claim the id; if it was already
                // there, put the original sequence back and report the duplicate.
                let previous = dedup.insert(id, seq)?.map(|g| g.value());
                if let Some(original) = previous {
                    dedup.insert(id, original)?;
                    out.push(Appended::Duplicate(original));
                    continue;
                }
                let hash = entry_hash(&h.hash, seq, &item.subject, &item.bytes);
                let value = encode_entry(&h.hash, &hash, &item.subject, &item.bytes);
                entries.insert(seq, value.as_slice())?;
                state.apply(seq, &item.envelope);
                if snapshot_every > 0 && seq % snapshot_every == 0 {
                    let bytes = encode_snapshot(seq, state)?;
                    checkpoint::put_snapshot(&mut snapshots, &mut checkpoints, seq, hash, &bytes)?;
                }
                h.seq = seq;
                h.hash = hash;
                out.push(Appended::New(seq));
            }
            if h.seq != before {
                h.commit_ms = now_ms().max(h.commit_ms);
                txn.open_table(TIME_INDEX)?.insert(h.commit_ms, h.seq)?;
                meta.insert(HEAD_KEY, h.encode().as_slice())?;
            }
            head = h;
        }
        Ok(Staged {
            txn,
            outcomes: out,
            head,
        })
    }
}

fn encode_snapshot<S: Fold>(seq: u64, state: &S) -> Result<Vec<u8>, LogError> {
    rmp_serde::to_vec_named(state).map_err(|e| LogError::Snapshot {
        seq,
        reason: e.to_string(),
    })
}

/// True when a stored snapshot equals `state`. Encoding is deterministic (ordered maps only),
/// so equal bytes settle it at a fraction of a decode's cost; different bytes (a snapshot
/// written by an older version, say) are decoded and compared field by field.
fn snapshot_matches<S: Fold>(seq: u64, stored: &[u8], state: &S) -> bool {
    if encode_snapshot(seq, state).is_ok_and(|now| now == stored) {
        return true;
    }
    decode_snapshot::<S>(seq, stored).is_ok_and(|old| old == *state)
}

fn decode_snapshot<S: Fold>(seq: u64, bytes: &[u8]) -> Result<S, LogError> {
    rmp_serde::from_slice(bytes).map_err(|e| LogError::Snapshot {
        seq,
        reason: e.to_string(),
    })
}

/// A batch written but not yet committed (see [`LogStore::stage_batch`]).
pub struct Staged {
    txn: redb::WriteTransaction,
    outcomes: Vec<Appended>,
    head: Head,
}

impl Staged {
    /// Records, in the same transaction, how far into each stream the batch reaches: `(stream,
    /// sequence of its last message in the batch)`. A position never moves backwards.
    pub fn record_positions(&mut self, positions: &[(&str, u64)]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut table = self.txn.open_table(POSITIONS)?;
        for (stream, seq) in positions {
            let stored = table.get(*stream)?.map(|v| v.value()).unwrap_or(0);
            if *seq > stored {
                table.insert(*stream, *seq)?;
            }
        }
        Ok(())
    }

    /// Commits durably; returns what became of each event and the new head.
    pub fn commit(self) -> Result<(Vec<Appended>, Head), LogError> {
        self.txn.commit()?;
        Ok((self.outcomes, self.head))
    }
}

/// Log entries in sequence order (see [`LogStore::export`]).
pub struct Export {
    range: redb::OwnedRange<u64, &'static [u8]>,
    reverse: bool,
}

impl Iterator for Export {
    type Item = Result<Entry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = if self.reverse {
            self.range.next_back()
        } else {
            self.range.next()
        }?;
        Some(
            item.map_err(LogError::from)
                .and_then(|(k, v)| Entry::decode(k.value(), v.value())),
        )
    }
}

#[cfg(test)]
mod tests;
