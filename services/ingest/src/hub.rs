//! The commit hub: in-process waiters keyed by event id, woken after the redb commit that
//! contains the event (or after the writer found the id already in the log).

use std::collections::HashMap;
use std::sync::Mutex;

use fleetbus_schemas::EventId;
use tokio::sync::oneshot;

use fleetbus_log::Appended;

/// Waiters for committed events.
#[derive(Debug, Default)]
pub struct Hub {
    waiters: Mutex<HashMap<EventId, Vec<oneshot::Sender<Appended>>>>,
}

impl Hub {
    /// Registers interest in `id`. Register before publishing, so the commit cannot be missed.
    pub fn wait(&self, id: EventId) -> oneshot::Receiver<Appended> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push(tx);
        rx
    }

    /// Wakes everyone waiting for any of `results`.
    pub fn notify(&self, results: impl IntoIterator<Item = (EventId, Appended)>) {
        let mut waiters = self.lock();
        if waiters.is_empty() {
            return;
        }
        for (id, outcome) in results {
            if let Some(list) = waiters.remove(&id) {
                for tx in list {
                    // The waiter may have given up (timeout); that is fine.
                    let _ = tx.send(outcome);
                }
            }
        }
    }

    /// Resolves the waiters of one id (e.g. from a dedup lookup).
    pub fn resolve(&self, id: EventId, outcome: Appended) {
        self.notify([(id, outcome)]);
    }

    /// Drops waiters of `id` that gave up.
    pub fn forget(&self, id: EventId) {
        let mut waiters = self.lock();
        if let Some(list) = waiters.get_mut(&id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(&id);
            }
        }
    }

    /// Number of ids with waiters (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Vec<oneshot::Sender<Appended>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}
