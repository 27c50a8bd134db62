//! Counters, logged periodically and readable in tests and the benchmark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Entries appended.
    pub appended: AtomicU64,
    /// Events whose id was already in the log.
    pub duplicates: AtomicU64,
    /// Write transactions committed.
    pub commits: AtomicU64,
    /// Total commit time in microseconds.
    pub commit_us: AtomicU64,
    /// Bus messages on EVENTS/SECRETS that could not be decoded (terminated, not stored).
    pub malformed_events: AtomicU64,
    /// Commands accepted.
    pub commands_accepted: AtomicU64,
    /// Commands rejected.
    pub commands_rejected: AtomicU64,
    /// Queries answered.
    pub queries: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_commit(&self, appended: u64, duplicates: u64, took: Duration) {
        self.appended.fetch_add(appended, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
