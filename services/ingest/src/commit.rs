//! "Publish, then wait until committed": the one way ingest answers only after its events are
//! in the redb log (the agent API's "202 means durable", the fleet routes, commands).

use std::time::Duration;

use async_nats::jetstream;
use fleetbus_schemas::{Envelope, EventId};
use tokio_util::sync::CancellationToken;

use crate::log::Appended;
use crate::writer::Shared;
use crate::IngestError;

/// Why events were not (known to be) committed. Resending with the same ids is always safe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// JetStream did not take them.
    #[error(transparent)]
    Publish(#[from] IngestError),
    /// An event was published but its commit was not seen in time.
    #[error("event {id} was not committed to the log within {} ms", .timeout.as_millis())]
    NotCommitted {
        /// The first event not seen.
        id: EventId,
        /// How long we waited.
        timeout: Duration,
    },
    /// Shutdown was requested while waiting.
    #[error("shutting down")]
    ShuttingDown,
}

/// Publishes `envelopes` (ids unique) and waits until each is in the log, at most `timeout`
/// in all (and not past `shutdown`). One outcome per envelope, in order.
pub(crate) async fn publish_and_wait(
    shared: &Shared,
    js: &jetstream::Context,
    envelopes: &[Envelope],
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Vec<Appended>, CommitError> {
    let hub = &shared.hub;
    // Registered before publishing, so no commit can be missed.
    let waiters: Vec<_> = envelopes.iter().map(|e| (e.id, hub.wait(e.id))).collect();
    let forget = || envelopes.iter().for_each(|e| hub.forget(e.id));
    let published = match crate::bus::publish_all(js, envelopes).await {
        Ok(p) => p,
        Err(e) => {
            forget();
            return Err(e.into());
        }
    };
    // JetStream dropped these as duplicates, so they will not come through the consumer again:
    // if the log has them, answer from the log; otherwise the first copy is on its way and its
    // commit wakes us. The lookups read redb: off the async runtime.
    let dups: Vec<EventId> = envelopes
        .iter()
        .zip(&published)
        .filter(|(_, p)| p.duplicate)
        .map(|(e, _)| e.id)
        .collect();
    if !dups.is_empty() {
        let store = shared.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            dups.into_iter()
                .filter_map(|id| store.lookup(id).ok().flatten().map(|seq| (id, seq)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (id, seq) in found {
            hub.resolve(id, Appended::Duplicate(seq));
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outcomes = Vec::with_capacity(waiters.len());
    for (id, rx) in waiters {
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx) => r,
            () = shutdown.cancelled() => {
                forget();
                return Err(CommitError::ShuttingDown);
            }
        };
        match outcome {
            Ok(Ok(appended)) => outcomes.push(appended),
            _ => {
                forget();
                return Err(CommitError::NotCommitted { id, timeout });
            }
        }
    }
    Ok(outcomes)
}
