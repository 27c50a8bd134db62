//! The log's one error type.

use std::path::PathBuf;

use fleetbus_schemas::EventId;

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
    redb::CommitError,
    redb::SetDurabilityError
);
