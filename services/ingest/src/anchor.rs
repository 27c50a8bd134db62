//! Head anchors: ingest periodically publishes its committed head (seq, hash) and newest
//! checkpoint digest as a `system.head_anchored` event. The event goes through the stream
//! into every replica's log like any other, so a copy of the log can be checked against
//! anchors held elsewhere, and `fleetctl log verify` checks each anchor in the log against
//! the chain before it.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use fleetbus_log::{anchor_event, LogStore};
use tokio_util::sync::CancellationToken;

use crate::IngestError;

/// When anchors are published.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnchorSettings {
    /// At least this often while the head moves (zero: not by time).
    pub every: Duration,
    /// Whenever the head is this many entries past the last anchor (0: not by count).
    pub every_entries: u64,
}

/// How often the head is looked at.
const TICK: Duration = Duration::from_secs(1);

/// Publishes anchors until `stop`. A failed publish is logged and retried at the next tick.
pub(crate) async fn publish_anchors(
    js: jetstream::Context,
    store: LogStore,
    settings: AnchorSettings,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    if settings.every.is_zero() && settings.every_entries == 0 {
        return Ok(());
    }
    let log = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.log_id()).await??
    };
    // The head claimed by the last anchor and when it was sent; counting starts at the head
    // ingest opened with, so a start alone publishes nothing.
    let start = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.head()).await??
    };
    let mut last = (start.seq, Instant::now());
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(TICK) => {}
        }
        let store = store.clone();
        let (head, checkpoint) =
            tokio::task::spawn_blocking(move || store.anchor_point()).await??;
        // The anchor itself is the one entry after the head it claims: not a reason for another.
        let moved = head.seq.saturating_sub(last.0);
        let due = (moved > 1 && !settings.every.is_zero() && last.1.elapsed() >= settings.every)
            || (settings.every_entries > 0 && moved >= settings.every_entries);
        if !due {
            continue;
        }
        let env = anchor_event(&log, &head, checkpoint.as_ref());
        match crate::bus::publish_all(&js, std::slice::from_ref(&env)).await {
            Ok(_) => {
                tracing::debug!(seq = head.seq, event = %env.id, "head anchored");
                last = (head.seq, Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, seq = head.seq, "head anchor not published"),
        }
    }
}
