//! The redb tables of the event log. All of them live in one file (`<state>/ingest/log.redb`).

use redb::TableDefinition;

/// `seq → entry`. Sequences start at 1 and have no gaps. The value layout is documented in
/// [`super::Entry::encode`]: `prev_hash[32] | hash[32] | subject_len u16 BE | subject | envelope`.
pub(crate) const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// `event id (ULID as u128, 16 bytes) → seq`. Checked inside the same write transaction as the
/// append, so an id already in the log is never appended again, however late it comes.
pub(crate) const DEDUP: TableDefinition<u128, u64> = TableDefinition::new("dedup");

/// `commit time (ms since the epoch) → last seq committed at or before it`. One row per commit;
/// commit times never go backwards (clamped to the previous commit's time).
pub(crate) const TIME_INDEX: TableDefinition<u64, u64> = TableDefinition::new("time_index");

/// `seq → projections snapshot` (MessagePack with named fields) taken right after `seq` was
/// applied; written in the same transaction as that entry.
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");

/// `stream name → sequence of the last message of that stream the log has taken in` (appended
/// or found to be a duplicate), written in the same transaction as the entries. Ingest resumes
/// each stream right after it, whatever any consumer's ack floor says.
pub(crate) const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");

/// `seq → entry_hash[32] | state_sha256[32] | digest[32]`: binds the snapshot stored under the
/// same `seq` to the chain. `entry_hash` is entry `seq`'s hash (zeros for seq 0), `state_sha256`
/// the SHA-256 of the snapshot's bytes, and `digest = SHA-256(previous row's digest (zeros for
/// the first) | seq u64 BE | entry_hash | state_sha256)`. Written in the same transaction as the
/// snapshot; see [`super::checkpoint`].
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");

/// Small named values: `head` = `seq u64 BE | hash[32] | last commit ms u64 BE`.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Key of the head row in [`META`].
pub(crate) const HEAD_KEY: &str = "head";

/// Key of this log's identity in [`META`] (a ULID string, made when the file is created):
/// head anchors name it, so `verify` knows which anchors speak of this file's checkpoints.
pub(crate) const LOG_ID_KEY: &str = "log_id";
