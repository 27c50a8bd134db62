//! `fleetbus-ingest --repair`: the explicit way out of a log that does not verify. What it does
//! is chosen to never invent history:
//!
//! - a copy of the file is kept first (`log.redb.before-repair-<unix ms>`), so nothing is lost
//!   to the repair itself;
//! - a bad entry: the log is cut right before it (entries, their index rows and snapshots from
//!   it on are removed, the head moves back) and the stream positions are cleared, so ingest
//!   reads its streams again from their start and takes in what the streams still hold (the
//!   dedup index drops the events the log already has);
//! - a bad snapshot (changed bytes, broken checkpoint, or different from the refold): it and
//!   every later snapshot are dropped; the state is refolded from the last good one;
//! - bad dedup index rows: the index is rebuilt from the entries; a wrong head record is set to
//!   the end of the chain; time index rows that go backwards or past the head are dropped;
//! - an anchor that contradicts the chain is NOT repaired: history before it was rewritten
//!   consistently, and only a replica or a backup can say which entries are true.

use std::path::PathBuf;

use redb::{Durability, ReadableTable};
use serde::Serialize;

use super::tables::{
    CHECKPOINTS, DEDUP, ENTRIES, HEAD_KEY, META, POSITIONS, SNAPSHOTS, TIME_INDEX,
};
use super::verify::Part;
use super::{now_ms, Entry, Fold, Head, LogError, LogStore, GENESIS_HASH};

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The copy of the file taken before anything was changed (`None`: nothing to repair).
    pub backup: Option<PathBuf>,
    /// The log was cut after this sequence (the last good entry).
    pub truncated_after: Option<u64>,
    /// Entries removed by the cut.
    pub entries_removed: u64,
    /// Snapshots dropped (bad ones and the ones chained after them).
    pub snapshots_dropped: u64,
    /// The dedup index was rebuilt from the entries.
    pub dedup_rebuilt: bool,
    /// Time index rows dropped.
    pub time_rows_dropped: u64,
    /// The head record was set to the end of the chain.
    pub head_reset: bool,
    /// Snapshots from before checkpoints existed, bound after the refold proved them.
    pub snapshots_bound: u64,
}

impl RepairReport {
    /// `true` when the log needed no change.
    pub fn nothing_done(&self) -> bool {
        self.backup.is_none()
    }
}

/// More passes than any combination of problems needs (each pass fixes one kind).
const MAX_PASSES: usize = 12;

impl LogStore {
    /// Repairs what verification finds (see the module docs), then refolds and drops snapshots
    /// that differ from the refold. Ends with a log that verifies, or an error naming what
    /// cannot be repaired.
    pub fn repair<S: Fold>(&self) -> Result<RepairReport, LogError> {
        let mut out = RepairReport::default();
        for _ in 0..MAX_PASSES {
            let report = self.verify()?;
            if let Some(bad) = report.first_bad {
                self.backup_once(&mut out)?;
                match bad.part {
                    Part::Entry => self.truncate_from(bad.seq, &mut out)?,
                    Part::Head => self.reset_head(&mut out)?,
                    Part::DedupIndex => self.rebuild_dedup(&mut out)?,
                    Part::TimeIndex => self.drop_bad_time_rows(&mut out)?,
                    Part::Snapshot => self.drop_snapshots_from(bad.seq, &mut out)?,
                    Part::Anchor => {
                        return Err(LogError::Unverified {
                            part: bad.part.name(),
                            seq: bad.seq,
                            problem: format!(
                                "{}; this cannot be repaired (entries before the anchor were rewritten): restore the log from a replica or a backup",
                                bad.problem
                            ),
                        })
                    }
                }
                continue;
            }
            // The chain and indexes verify: compare every snapshot with the refold.
            // An entry whose hash holds but whose envelope does not decode is cut like any bad
            // entry.
            let rebuild = match self.rebuild_as::<S>() {
                Ok((rebuild, _)) => rebuild,
                Err(LogError::Corrupt { seq, .. }) => {
                    self.backup_once(&mut out)?;
                    self.truncate_from(seq, &mut out)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match rebuild.first_difference {
                Some(seq) => {
                    self.backup_once(&mut out)?;
                    self.drop_snapshots_from(seq, &mut out)?;
                }
                None => {
                    out.snapshots_bound = self.bind_legacy_snapshots::<S>()?;
                    return Ok(out);
                }
            }
        }
        self.verify()?.into_result()?;
        Ok(out)
    }

    fn backup_once(&self, out: &mut RepairReport) -> Result<(), LogError> {
        if out.backup.is_some() {
            return Ok(());
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".before-repair-{}", now_ms()));
        let backup = PathBuf::from(name);
        // No write transaction is open: the file on disk is the last durable commit.
        std::fs::copy(&self.path, &backup).map_err(|e| {
            LogError::Storage(format!(
                "cannot keep a copy of {} before repairing it, at {}: {e}",
                self.path.display(),
                backup.display()
            ))
        })?;
        tracing::warn!(backup = %backup.display(), "repair: copy of the log kept");
        out.backup = Some(backup);
        Ok(())
    }

    /// Cuts the log right before `seq`.
    fn truncate_from(&self, seq: u64, out: &mut RepairReport) -> Result<(), LogError> {
        let keep = seq.saturating_sub(1);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut removed = 0u64;
            entries.retain_in(seq.., |_, _| {
                removed += 1;
                false
            })?;
            let hash = match entries.get(keep)? {
                Some(v) => Entry::decode(keep, v.value())?.hash,
                None => GENESIS_HASH,
            };
            txn.open_table(DEDUP)?.retain(|_, s| s < seq)?;
            let mut dropped = 0u64;
            txn.open_table(SNAPSHOTS)?.retain_in(seq.., |_, _| {
                dropped += 1;
                false
            })?;
            txn.open_table(CHECKPOINTS)?
                .retain_in(seq.., |_, _| false)?;
            let mut time = txn.open_table(TIME_INDEX)?;
            time.retain(|_, s| s < seq)?;
            let commit_ms = now_ms().max(time.last()?.map_or(0, |(k, _)| k.value()));
            if keep > 0 {
                time.insert(commit_ms, keep)?;
            }
            let head = Head {
                seq: keep,
                hash,
                commit_ms,
            };
            txn.open_table(META)?
                .insert(HEAD_KEY, head.encode().as_slice())?;
            // Which stream messages the removed entries came from is not known: read the
            // streams again from their start; the dedup index drops what the log still holds.
            txn.open_table(POSITIONS)?.retain(|_, _| false)?;
            tracing::warn!(
                last_good = keep,
                removed,
                "repair: log cut after the last good entry"
            );
            out.truncated_after = Some(keep);
            out.entries_removed += removed;
            out.snapshots_dropped += dropped;
        }
        txn.commit()?;
        Ok(())
    }

    fn reset_head(&self, out: &mut RepairReport) -> Result<(), LogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let entries = txn.open_table(ENTRIES)?;
            let (seq, hash) = match entries.last()? {
                Some((k, v)) => (k.value(), Entry::decode(k.value(), v.value())?.hash),
                None => (0, GENESIS_HASH),
            };
            let mut meta = txn.open_table(META)?;
            let commit_ms = match meta.get(HEAD_KEY)? {
                Some(v) => Head::decode(v.value()).map_or(0, |h| h.commit_ms),
                None => 0,
            };
            let head = Head {
                seq,
                hash,
                commit_ms,
            };
            meta.insert(HEAD_KEY, head.encode().as_slice())?;
            tracing::warn!(
                head = seq,
                "repair: head record set to the end of the chain"
            );
        }
        txn.commit()?;
        out.head_reset = true;
        Ok(())
    }

    fn rebuild_dedup(&self, out: &mut RepairReport) -> Result<(), LogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.delete_table(DEDUP)?;
        {
            let entries = txn.open_table(ENTRIES)?;
            let mut dedup = txn.open_table(DEDUP)?;
            for item in entries.iter()? {
                let (k, v) = item?;
                let seq = k.value();
                let id = Entry::decode(seq, v.value())?.envelope()?.id;
                dedup.insert(u128::from(id.0), seq)?;
            }
        }
        txn.commit()?;
        tracing::warn!("repair: dedup index rebuilt from the entries");
        out.dedup_rebuilt = true;
        Ok(())
    }

    fn drop_bad_time_rows(&self, out: &mut RepairReport) -> Result<(), LogError> {
        let head = self.head()?.seq;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut time = txn.open_table(TIME_INDEX)?;
            let mut floor = 0u64;
            let mut dropped = 0u64;
            time.retain(|_, seq| {
                let good = seq >= floor && seq <= head;
                if good {
                    floor = seq;
                } else {
                    dropped += 1;
                }
                good
            })?;
            tracing::warn!(dropped, "repair: time index rows dropped");
            out.time_rows_dropped += dropped;
        }
        txn.commit()?;
        Ok(())
    }

    /// Drops the snapshot at `seq` and every later one (their checkpoints chain on it).
    fn drop_snapshots_from(&self, seq: u64, out: &mut RepairReport) -> Result<(), LogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut dropped = 0u64;
            txn.open_table(SNAPSHOTS)?.retain_in(seq.., |_, _| {
                dropped += 1;
                false
            })?;
            txn.open_table(CHECKPOINTS)?
                .retain_in(seq.., |_, _| false)?;
            tracing::warn!(
                from = seq,
                dropped,
                "repair: snapshots dropped; the state is refolded"
            );
            out.snapshots_dropped += dropped;
        }
        txn.commit()?;
        Ok(())
    }
}
