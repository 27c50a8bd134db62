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
mod open;
mod rebuild;
mod repair;
mod tables;
mod verify;

pub use anchor::anchor_event;
pub use checkpoint::Checkpoint;
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
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};
use sha2::{Digest, Sha256};

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

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The database file could not be opened (missing directory, locked by a running ingest, …).
    #[error("cannot open event log {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A redb operation failed.
    #[error("event log storage: {0}")]
    Storage(String),
    /// A stored value is not in the documented format.
    #[error("event log entry {seq} is corrupt: {reason}")]
    Corrupt {
        /// The entry (or snapshot) sequence.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot could not be encoded or decoded.
    #[error("projection snapshot at seq {seq}: {reason}")]
    Snapshot {
        /// The snapshot's sequence.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log does not verify: ingest refuses to serve it (`fleetbus-ingest --repair` is the
    /// explicit way out).
    #[error("event log does not verify: {part} {seq}: {problem}")]
    Unverified {
        /// What is bad: `entry`, `snapshot`, `dedup index`, `time index`, `head` or `anchor`.
        part: &'static str,
        /// The entry or snapshot sequence (for an index row: the entry it points at).
        seq: u64,
        /// What mismatched.
        problem: String,
    },
    /// An entry cannot be stored (e.g. a subject longer than 65,535 bytes).
    #[error("cannot append event {id}: {reason}")]
    Invalid {
        /// The event.
        id: EventId,
        /// Why.
        reason: String,
    },
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for LogError {
            fn from(e: $t) -> Self {
                LogError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One stored log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence (1-based, gapless).
    pub seq: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The envelope bytes exactly as published (MessagePack).
    pub envelope: Vec<u8>,
    /// The previous entry's hash.
    pub prev_hash: Hash,
    /// This entry's hash.
    pub hash: Hash,
}

/// The hash of an entry: `SHA-256(prev_hash || seq BE || subject_len u16 BE || subject || envelope)`.
pub fn entry_hash(prev_hash: &Hash, seq: u64, subject: &str, envelope: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    // Subjects are capped at u16::MAX on append; the cast cannot truncate for stored entries.
    h.update((subject.len() as u16).to_be_bytes());
    h.update(subject.as_bytes());
    h.update(envelope);
    h.finalize().into()
}

const ENTRY_HEADER: usize = HASH_LEN * 2 + 2;

impl Entry {
    /// The stored value: `prev_hash | hash | subject_len u16 BE | subject | envelope`.
    pub fn encode(&self) -> Vec<u8> {
        encode_entry(&self.prev_hash, &self.hash, &self.subject, &self.envelope)
    }

    /// Parses a stored value.
    pub fn decode(seq: u64, value: &[u8]) -> Result<Entry, LogError> {
        let (subject, envelope) = split_entry(seq, value)?;
        let mut prev_hash = GENESIS_HASH;
        prev_hash.copy_from_slice(&value[..HASH_LEN]);
        let mut hash = GENESIS_HASH;
        hash.copy_from_slice(&value[HASH_LEN..HASH_LEN * 2]);
        Ok(Entry {
            seq,
            subject: subject.to_owned(),
            envelope: envelope.to_vec(),
            prev_hash,
            hash,
        })
    }

    /// The hash this entry should have, recomputed from its contents.
    pub fn computed_hash(&self) -> Hash {
        entry_hash(&self.prev_hash, self.seq, &self.subject, &self.envelope)
    }

    /// Decodes the envelope.
    pub fn envelope(&self) -> Result<Envelope, LogError> {
        decode_envelope(self.seq, &self.envelope)
    }
}

/// Splits a stored value into its subject and envelope bytes without copying them.
fn split_entry(seq: u64, value: &[u8]) -> Result<(&str, &[u8]), LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        seq,
        reason: reason.to_owned(),
    };
    if value.len() < ENTRY_HEADER {
        return Err(corrupt("shorter than the 66-byte header"));
    }
    let subject_len = u16::from_be_bytes([value[HASH_LEN * 2], value[HASH_LEN * 2 + 1]]) as usize;
    let rest = &value[ENTRY_HEADER..];
    if rest.len() < subject_len {
        return Err(corrupt("subject length runs past the end of the entry"));
    }
    let subject =
        std::str::from_utf8(&rest[..subject_len]).map_err(|_| corrupt("subject is not UTF-8"))?;
    Ok((subject, &rest[subject_len..]))
}

/// Decodes the envelope of a stored value in place (the refold path: no copy of the entry).
fn stored_envelope(seq: u64, value: &[u8]) -> Result<Envelope, LogError> {
    let (_, envelope) = split_entry(seq, value)?;
    decode_envelope(seq, envelope)
}

fn decode_envelope(seq: u64, bytes: &[u8]) -> Result<Envelope, LogError> {
    fleetbus_schemas::decode(bytes).map_err(|e| LogError::Corrupt {
        seq,
        reason: format!("envelope does not decode: {e}"),
    })
}

fn encode_entry(prev_hash: &Hash, hash: &Hash, subject: &str, envelope: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + subject.len() + envelope.len());
    v.extend_from_slice(prev_hash);
    v.extend_from_slice(hash);
    v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
    v.extend_from_slice(subject.as_bytes());
    v.extend_from_slice(envelope);
    v
}

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
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
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
        Ok(table.get(stream)?.map(|v| v.value()).unwrap_or(0))
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
        match meta.get(HEAD_KEY)? {
            Some(v) => Head::decode(v.value()),
            None => Ok(Head::EMPTY),
        }
    }

    /// The sequence an event id was stored under, if it is in the log.
    pub fn lookup(&self, id: EventId) -> Result<Option<u64>, LogError> {
        let txn = self.db.begin_read()?;
        let dedup = txn.open_table(DEDUP)?;
        Ok(dedup.get(u128::from(id.0))?.map(|v| v.value()))
    }

    /// One entry.
    pub fn entry(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        entries
            .get(seq)?
            .map(|v| Entry::decode(seq, v.value()))
            .transpose()
    }

    /// Entries with `seq >= from_seq`, oldest first, from one consistent read snapshot.
    pub fn export(&self, from_seq: u64) -> Result<Export, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        Ok(Export {
            range: entries.range(from_seq..)?,
            reverse: false,
        })
    }

    /// Entries with `seq < before_seq`, newest first.
    pub fn export_before(&self, before_seq: u64) -> Result<Export, LogError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        Ok(Export {
            range: entries.range(..before_seq)?,
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
        txn.set_durability(Durability::Immediate);
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
        txn.set_durability(Durability::Immediate);
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
    range: redb::Range<'static, u64, &'static [u8]>,
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
