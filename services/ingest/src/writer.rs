//! The writer: one dedicated thread that owns appends to the log. It drains the channel into a
//! batch (group commit: whatever arrived while the previous fsync ran, up to `max_batch`; under
//! sustained load it lingers a few milliseconds for the group to fill, since each durable
//! commit has a fixed cost that small groups pay again and again),
//! appends and folds the batch in one durable transaction — recording in it how far into each
//! stream the batch reaches — then wakes the commit hub. Nothing is acknowledged to JetStream:
//! the log's own stream positions are where ingest resumes after a restart.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::hub::Hub;
use crate::metrics::Metrics;
use fleetbus_log::{Appended, Head, LogError, LogStore, NewEntry};
use fleetbus_projections::State;

/// One event on its way into the log.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The entry.
    pub entry: NewEntry,
    /// Where it came from: `(stream, stream sequence)`, recorded with the commit.
    pub position: Option<(&'static str, u64)>,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterConfig {
    /// Most events per transaction.
    pub max_batch: usize,
    /// Snapshot the projections every this many entries (0: never).
    pub snapshot_every: u64,
    /// How long a group may wait to fill under sustained load (zero: never).
    pub linger: Duration,
}

/// A group at least this large means load is sustained: the next group may linger.
pub(crate) const LINGER_FROM: usize = 64;

/// How often a lingering writer looks at the queue again.
const LINGER_POLL: Duration = Duration::from_micros(250);

/// Handles the writer shares with the rest of the service.
#[derive(Clone)]
pub struct Shared {
    /// The log.
    pub store: LogStore,
    /// The folded state, updated in commit order.
    pub state: Arc<RwLock<State>>,
    /// Commit waiters.
    pub hub: Arc<Hub>,
    /// The committed head.
    pub head: watch::Receiver<Head>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Read access to the state (a poisoned lock still holds a consistent committed state:
    /// the writer exits the process path on any append error).
    pub fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the writer thread. It runs until every sender of `rx` is dropped, then returns.
/// An append error stops it and is returned: the caller must stop the service (the in-memory
/// state may hold part of the failed batch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    store: LogStore,
    state: Arc<RwLock<State>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    head_tx: watch::Sender<Head>,
    mut rx: mpsc::Receiver<Pending>,
    config: WriterConfig,
) -> std::io::Result<JoinHandle<Result<(), LogError>>> {
    std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || {
            let max = config.max_batch.max(1);
            let mut entries = Vec::with_capacity(max.min(256));
            let mut sustained = false;
            while let Some(first) = rx.blocking_recv() {
                entries.clear();
                // The last position of each stream in the batch (messages of one stream arrive
                // in stream order).
                let mut positions: Vec<(&str, u64)> = Vec::with_capacity(2);
                let mut push = |p: Pending, entries: &mut Vec<NewEntry>| {
                    entries.push(p.entry);
                    if let Some((stream, seq)) = p.position {
                        match positions.iter_mut().find(|(s, _)| *s == stream) {
                            Some(at) => at.1 = seq,
                            None => positions.push((stream, seq)),
                        }
                    }
                };
                push(first, &mut entries);
                let linger_until = (sustained && !config.linger.is_zero())
                    .then(|| Instant::now() + config.linger);
                while entries.len() < max {
                    match rx.try_recv() {
                        Ok(p) => push(p, &mut entries),
                        Err(mpsc::error::TryRecvError::Empty)
                            if linger_until.is_some_and(|t| Instant::now() < t) =>
                        {
                            std::thread::sleep(LINGER_POLL);
                        }
                        Err(_) => break,
                    }
                }
                sustained = entries.len() >= LINGER_FROM;
                let started = Instant::now();
                // Fold under the lock, fsync outside it: readers (auth, queries) never wait for
                // the disk. They may see a batch a moment before it is durable; if the commit
                // fails the service stops and the batch is redelivered.
                let result = {
                    let mut guard = state.write().unwrap_or_else(|p| p.into_inner());
                    store.stage_batch(&entries, &mut *guard, config.snapshot_every)
                }
                .and_then(|mut staged| {
                    staged.record_positions(&positions)?;
                    staged.commit()
                });
                let (outcomes, head) = match result {
                    Ok(ok) => ok,
                    Err(e) => {
                        tracing::error!(error = %e, batch = entries.len(), "log append failed; stopping the writer");
                        return Err(e);
                    }
                };
                let appended = outcomes.iter().filter(|o| matches!(o, Appended::New(_))).count();
                metrics.record_commit(appended as u64, (outcomes.len() - appended) as u64, started.elapsed());
                tracing::trace!(batch = entries.len(), appended, head = head.seq,
                    commit_us = started.elapsed().as_micros() as u64, "batch committed");
                // Head first: whoever is woken may ask for it.
                head_tx.send_replace(head);
                hub.notify(entries.iter().map(|e| e.envelope.id).zip(outcomes.iter().copied()));
            }
            Ok(())
        })
}
