//! Rebuild: refold the whole log from the empty state on decoder threads, comparing every
//! stored snapshot with the refold at its sequence.

use std::time::Instant;

use fleetbus_schemas::Envelope;
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::tables::{ENTRIES, SNAPSHOTS};
use super::{snapshot_matches, stored_envelope, Fold, LogError, LogStore};

/// Sequences per chunk handed from a rebuild's decoder threads to its fold.
const REBUILD_CHUNK: u64 = 1024;

/// One chunk of a rebuild: the decoded entries of a range of sequences and the stored bytes of
/// the snapshots taken at sequences in that range.
struct Chunk {
    entries: Vec<(u64, Envelope)>,
    snapshots: Vec<(u64, Vec<u8>)>,
}

/// Reads and decodes the entries `start..end` (which must all exist: sequences have no gaps)
/// and the snapshots taken in that range (`snapshot_seqs`: every snapshot's sequence, sorted).
///
/// Snapshots are fetched by key, never through a range over their table: a snapshot is one
/// large leaf page, and a range reads the leaf pages at both of its ends even when nothing
/// falls in between, which made every chunk copy two snapshots' pages.
fn decode_chunk(
    entries: &redb::ReadOnlyTable<u64, &[u8]>,
    snapshots: &redb::ReadOnlyTable<u64, &[u8]>,
    snapshot_seqs: &[u64],
    start: u64,
    end: u64,
    mut chunk: Chunk,
) -> Result<Chunk, LogError> {
    chunk.entries.clear();
    chunk.snapshots.clear();
    for item in entries.range(start..end)? {
        let (k, v) = item?;
        let seq = k.value();
        chunk.entries.push((seq, stored_envelope(seq, v.value())?));
    }
    if chunk.entries.len() as u64 != end - start {
        return Err(LogError::Corrupt {
            seq: start + chunk.entries.len() as u64,
            reason: "entry missing: sequences must have no gaps".into(),
        });
    }
    let from = snapshot_seqs.partition_point(|&s| s < start);
    let to = snapshot_seqs.partition_point(|&s| s < end);
    for &seq in &snapshot_seqs[from..to] {
        if let Some(v) = snapshots.get(seq)? {
            chunk.snapshots.push((seq, v.value().to_vec()));
        }
    }
    Ok(chunk)
}

/// The result of [`LogStore::rebuild`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    /// Entries folded.
    pub events: u64,
    /// Wall time of the refold in seconds.
    pub seconds: f64,
    /// Stored snapshots compared with the refold at their sequence.
    pub snapshots_compared: u64,
    /// The sequence of the first stored snapshot that differs from the refold, if any.
    pub first_difference: Option<u64>,
    /// The sequence of the newest stored snapshot (the live state at the last clean shutdown
    /// or periodic snapshot).
    pub latest_snapshot: Option<u64>,
}

impl RebuildReport {
    /// `true` when every stored snapshot equals the refold.
    pub fn equal(&self) -> bool {
        self.first_difference.is_none()
    }
}

impl LogStore {
    /// Refolds the whole log from the empty state and compares the refold with every stored
    /// snapshot at its sequence (the newest one is the live state saved at the last clean
    /// shutdown). Returns the report and the refolded state.
    pub fn rebuild_as<S: Fold>(&self) -> Result<(RebuildReport, S), LogError> {
        let started = Instant::now();
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let mut state = S::default();
        let mut events = 0u64;
        let mut compared = 0u64;
        let mut first_difference = None;
        let mut latest_snapshot = None;
        // Reading and decoding cost several times the fold: decoder threads each read and decode
        // every n-th chunk of sequences (entries and the snapshots stored among them), this
        // thread folds the chunks back in log order and compares.
        let last = entries.last()?.map_or(0, |(k, _)| k.value());
        // One pass over the snapshot keys (each snapshot's page is read once here, once when
        // its chunk decodes it).
        let snapshot_seqs = snapshots
            .iter()?
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<Vec<u64>, _>>()?;
        let decoders =
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)) as u64;
        // Folded chunks go back to their decoder, which drops the envelopes where they were
        // allocated (cheaper than freeing across threads) and reuses the vectors.
        std::thread::scope(|scope| -> Result<(), LogError> {
            let mut lanes = Vec::new();
            for d in 0..decoders {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk, LogError>>(4);
                let (back_tx, back_rx) = std::sync::mpsc::channel::<Chunk>();
                lanes.push((rx, back_tx));
                let (entries, snapshots, snapshot_seqs) = (&entries, &snapshots, &snapshot_seqs);
                scope.spawn(move || {
                    let mut start = 1 + d * REBUILD_CHUNK;
                    while start <= last {
                        let end = (start + REBUILD_CHUNK).min(last + 1);
                        let spare = back_rx.try_iter().last().unwrap_or_else(|| Chunk {
                            entries: Vec::with_capacity(REBUILD_CHUNK as usize),
                            snapshots: Vec::new(),
                        });
                        let chunk =
                            decode_chunk(entries, snapshots, snapshot_seqs, start, end, spare);
                        let failed = chunk.is_err();
                        if tx.send(chunk).is_err() || failed {
                            return;
                        }
                        start += decoders * REBUILD_CHUNK;
                    }
                });
            }
            for i in 0.. {
                let (rx, back_tx) = &lanes[i % lanes.len()];
                let Ok(chunk) = rx.recv() else { break };
                let chunk = chunk?;
                let mut snaps = chunk.snapshots.iter().peekable();
                for (seq, envelope) in &chunk.entries {
                    state.apply(*seq, envelope);
                    events += 1;
                    while let Some((sseq, stored)) = snaps.next_if(|(sseq, _)| sseq <= seq) {
                        latest_snapshot = Some(*sseq);
                        compared += 1;
                        if first_difference.is_none() && !snapshot_matches(*sseq, stored, &state) {
                            first_difference = Some(*sseq);
                        }
                    }
                }
                // A decoder that has finished no longer listens; the chunk is dropped here.
                let _ = back_tx.send(chunk);
            }
            Ok(())
        })?;
        // A snapshot for a sequence that has no entry cannot be checked.
        if let Some(&sseq) = snapshot_seqs.iter().find(|&&s| s > last) {
            latest_snapshot = Some(sseq);
            first_difference = first_difference.or(Some(sseq));
        }
        Ok((
            RebuildReport {
                events,
                seconds: started.elapsed().as_secs_f64(),
                snapshots_compared: compared,
                first_difference,
                latest_snapshot,
            },
            state,
        ))
    }
}
