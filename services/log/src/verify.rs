//! Verification of a whole log file: the entry chain, the head record, the dedup and time
//! indexes, the snapshots (checkpoint chain, entry link, content hash and, in
//! [`LogStore::verify_full`], equality with the refold) and the head anchors found in the log.
//!
//! Ingest runs [`LogStore::verify`] before it serves (everything but the full refold; it
//! refolds only the snapshots no anchor pins, see [`LogStore::prove_unanchored`]); `fleetctl log
//! verify` runs [`LogStore::verify_full`].

use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::{Envelope, Event, EventId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{chain_digest, Checkpoint};
use super::tables::{CHECKPOINTS, DEDUP, ENTRIES, SNAPSHOTS, TIME_INDEX};
use super::{entry_hash, split_entry, Fold, Hash, LogError, LogStore, GENESIS_HASH, HASH_LEN};

/// Which part of the log file failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// An entry (missing, malformed, broken link or changed bytes).
    Entry,
    /// The head record.
    Head,
    /// A row of the dedup index (event id → seq).
    DedupIndex,
    /// A row of the time index (commit ms → seq).
    TimeIndex,
    /// A projection snapshot or its checkpoint row.
    Snapshot,
    /// A head anchor entry whose claim does not match the chain.
    Anchor,
}

impl Part {
    /// The name used in reports and errors.
    pub fn name(self) -> &'static str {
        match self {
            Part::Entry => "entry",
            Part::Head => "head",
            Part::DedupIndex => "dedup index row for entry",
            Part::TimeIndex => "time index row for entry",
            Part::Snapshot => "snapshot",
            Part::Anchor => "anchor entry",
        }
    }
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// The head sequence as recorded.
    pub head_seq: u64,
    /// The head hash as recorded (hex).
    pub head_hash: String,
    /// Dedup index rows checked.
    pub dedup_rows: u64,
    /// Snapshots whose checkpoint row (entry link and chain digest) was checked.
    pub snapshots: u64,
    /// Snapshots whose bytes were hashed and compared with their checkpoint.
    pub snapshot_contents: u64,
    /// Snapshots compared with the refold of the entries up to them ([`LogStore::verify_full`]).
    pub snapshots_refolded: u64,
    /// Snapshots written before checkpoints existed (no checkpoint row in the whole file); only
    /// the refold can check them, and ingest binds them after one at its next start.
    pub unbound_snapshots: u64,
    /// Head anchors found in the log and checked against the chain.
    pub anchors: u64,
    /// The newest checkpoint pinned by a head anchor of this file found in the log: it and
    /// every snapshot before it cannot change without contradicting an entry of the chain.
    pub anchored_checkpoint: Option<u64>,
    /// The newest checkpoint's sequence and digest (hex), if any.
    pub checkpoint: Option<(u64, String)>,
    /// The first thing that does not verify, if any.
    pub first_bad: Option<BadEntry>,
}

impl VerifyReport {
    /// `true` when everything checked verified.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }

    /// The failure as an error (for refusing to serve the log).
    pub fn into_result(self) -> Result<VerifyReport, LogError> {
        match self.first_bad {
            Some(bad) => Err(LogError::Unverified {
                part: bad.part.name(),
                seq: bad.seq,
                problem: bad.problem,
            }),
            None => Ok(self),
        }
    }
}

/// Something that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    /// Which part of the file.
    pub part: Part,
    /// The entry or snapshot sequence (for an index row: the entry it points at or should).
    pub seq: u64,
    /// What mismatched.
    pub problem: String,
}

/// Only the id of an envelope: the rest is skipped without being built.
#[derive(Deserialize)]
struct IdOnly {
    id: EventId,
}

/// A head anchor found in the log.
struct Anchor {
    at: u64,
    log: String,
    seq: u64,
    hash: String,
    checkpoint_seq: u64,
    checkpoint: String,
}

fn is_anchor_subject(subject: &str) -> bool {
    subject.starts_with("fleet.evt.system.") && subject.ends_with(".head_anchored")
}

impl LogStore {
    /// Everything but the refold: the entry chain (gapless from 1, each `prev_hash` the previous
    /// hash, each hash recomputed), the head record, the dedup index (every entry's id → its
    /// seq, no other rows), the time index (seqs never go backwards, none past the head), every
    /// snapshot's checkpoint row and bytes, and every head anchor in the log.
    ///
    /// Ingest runs this before it serves (see [`super::open_verified`]); hashing every snapshot's
    /// bytes costs little next to the chain (the README has the numbers).
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        self.verify_with()
    }

    /// [`LogStore::verify`], then a refold of the whole log compared with every stored snapshot
    /// ([`LogStore::rebuild_as`]).
    pub fn verify_full<S: Fold>(&self) -> Result<VerifyReport, LogError> {
        let mut report = self.verify()?;
        if !report.ok() {
            return Ok(report);
        }
        let (rebuild, _) = match self.rebuild_as::<S>() {
            Ok(r) => r,
            Err(LogError::Corrupt { seq, reason }) => {
                report.first_bad = Some(BadEntry {
                    part: Part::Entry,
                    seq,
                    problem: reason,
                });
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        report.snapshots_refolded = rebuild.snapshots_compared;
        if let Some(seq) = rebuild.first_difference {
            report.first_bad = Some(BadEntry {
                part: Part::Snapshot,
                seq,
                problem: format!(
                    "differs from the refold of entries 1..={seq} (its content was changed and its checkpoint recomputed, or the fold changed)"
                ),
            });
        }
        Ok(report)
    }

    fn verify_with(&self) -> Result<VerifyReport, LogError> {
        let head = self.head()?;
        let log_id = self.log_id()?;
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut report = VerifyReport {
            entries: 0,
            head_seq: head.seq,
            head_hash: hex::encode(head.hash),
            dedup_rows: 0,
            snapshots: 0,
            snapshot_contents: 0,
            snapshots_refolded: 0,
            unbound_snapshots: 0,
            anchors: 0,
            anchored_checkpoint: None,
            checkpoint: None,
            first_bad: None,
        };
        let fail = |report: &mut VerifyReport, part, seq, problem: String| {
            report.first_bad = Some(BadEntry { part, seq, problem });
        };

        // 1. The entry chain; collect (id, seq) for the dedup check and the anchors. Every
        // check is local to an entry and its predecessor's stored hash, so contiguous ranges
        // are walked on their own threads.
        let last = entries.last()?.map_or(0, |(k, _)| k.value());
        let lanes = match last {
            0..=20_000 => 1,
            _ => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)) as u64,
        };
        let per_lane = last.div_ceil(lanes).max(1);
        let walked: Vec<Result<Walked, LogError>> = std::thread::scope(|scope| {
            let entries = &entries;
            let handles: Vec<_> = (0..lanes)
                .map(|i| {
                    let start = 1 + i * per_lane;
                    let end = (start + per_lane).min(last + 1);
                    scope.spawn(move || walk(entries, start, end))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LogError::Storage("a verify thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut ids: Vec<(u128, u64)> = Vec::with_capacity(last as usize);
        let mut anchors = Vec::new();
        for lane in walked {
            match lane? {
                Walked::Good(lane) => {
                    report.entries += lane.ids.len() as u64;
                    ids.extend(lane.ids);
                    anchors.extend(lane.anchors);
                }
                Walked::Bad(seq, problem) => {
                    report.entries = seq - 1;
                    fail(&mut report, Part::Entry, seq, problem);
                    return Ok(report);
                }
            }
        }
        let mut prev = GENESIS_HASH;
        if let Some(v) = entries.get(last)? {
            prev.copy_from_slice(&v.value()[HASH_LEN..HASH_LEN * 2]);
        }

        // 2. The head record.
        if head.seq != last || head.hash != prev {
            let problem = format!(
                "head record says seq {} hash {}, the chain ends at seq {last} hash {}",
                head.seq,
                hex::encode(head.hash),
                hex::encode(prev)
            );
            fail(&mut report, Part::Head, head.seq.max(last), problem);
            return Ok(report);
        }
        let hash_at = |seq: u64| -> Result<Hash, LogError> {
            if seq == 0 {
                return Ok(GENESIS_HASH);
            }
            let mut h = GENESIS_HASH;
            if let Some(v) = entries.get(seq)? {
                h.copy_from_slice(&v.value()[HASH_LEN..HASH_LEN * 2]);
            }
            Ok(h)
        };

        // 3. The dedup index: exactly one row per entry, id → that entry's seq.
        let dedup = txn.open_table(DEDUP)?;
        if let Some((seq, problem)) = check_dedup(&dedup, ids, &mut report.dedup_rows)? {
            fail(&mut report, Part::DedupIndex, seq, problem);
            return Ok(report);
        }

        // 4. The time index: seqs never go backwards and never past the head.
        let time = txn.open_table(TIME_INDEX)?;
        let mut floor = 0u64;
        for item in time.iter()? {
            let (k, v) = item?;
            let (ms, seq) = (k.value(), v.value());
            if seq < floor || seq > last {
                let problem = format!(
                    "commit time {ms} ms maps to seq {seq}, expected between {floor} and the head {last}"
                );
                fail(&mut report, Part::TimeIndex, seq, problem);
                return Ok(report);
            }
            floor = seq;
        }

        // 5. Snapshots and their checkpoint rows.
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let checkpoints = txn.open_table(CHECKPOINTS)?;
        if checkpoints.is_empty()? {
            report.unbound_snapshots = snapshots.len()?;
        } else {
            let mut digest = GENESIS_HASH;
            let mut rows = checkpoints.iter()?;
            for item in snapshots.iter()? {
                let (k, v) = item?;
                let seq = k.value();
                let cp = match rows.next().transpose()? {
                    Some((ck, cv)) if ck.value() == seq => Checkpoint::decode(seq, cv.value())?,
                    Some((ck, _)) if ck.value() < seq => {
                        let problem = "checkpoint row without a snapshot".to_owned();
                        fail(&mut report, Part::Snapshot, ck.value(), problem);
                        return Ok(report);
                    }
                    _ => {
                        let problem =
                            "snapshot without a checkpoint row: it is not bound to the chain"
                                .to_owned();
                        fail(&mut report, Part::Snapshot, seq, problem);
                        return Ok(report);
                    }
                };
                let problem = if seq > last {
                    Some(format!("snapshot of seq {seq}, past the last entry {last}"))
                } else if cp.entry_hash != hash_at(seq)? {
                    Some(format!(
                        "checkpoint names entry hash {}, entry {seq} has {}",
                        hex::encode(cp.entry_hash),
                        hex::encode(hash_at(seq)?)
                    ))
                } else if cp.digest != chain_digest(&digest, seq, &cp.entry_hash, &cp.state_sha256)
                {
                    Some("checkpoint digest does not follow from the previous checkpoint (a checkpoint row was changed, inserted or removed)".to_owned())
                } else if <[u8; 32]>::from(Sha256::digest(v.value())) != cp.state_sha256 {
                    Some(format!(
                        "snapshot bytes hash to {}, its checkpoint recorded {} (the snapshot was changed)",
                        hex::encode(Sha256::digest(v.value())),
                        hex::encode(cp.state_sha256)
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    fail(&mut report, Part::Snapshot, seq, problem);
                    return Ok(report);
                }
                digest = cp.digest;
                report.snapshots += 1;
                report.snapshot_contents += 1;
                report.checkpoint = Some((seq, hex::encode(digest)));
            }
            if let Some((ck, _)) = rows.next().transpose()? {
                let problem = "checkpoint row without a snapshot".to_owned();
                fail(&mut report, Part::Snapshot, ck.value(), problem);
                return Ok(report);
            }
        }

        // 6. Head anchors: each claims an earlier head; it must be this chain's. An anchor of
        // this file also pins its checkpoint digest, and with it every snapshot up to there.
        for anchor in anchors {
            if anchor.seq > last {
                let problem = format!(
                    "anchors head seq {}, past this log's last entry {last} (entries were removed)",
                    anchor.seq
                );
                fail(&mut report, Part::Anchor, anchor.at, problem);
                return Ok(report);
            }
            let actual = hex::encode(hash_at(anchor.seq)?);
            if anchor.hash != actual {
                let problem = format!(
                    "anchors entry {} with hash {}, the chain has {actual} (history before it was rewritten)",
                    anchor.seq, anchor.hash
                );
                fail(&mut report, Part::Anchor, anchor.at, problem);
                return Ok(report);
            }
            report.anchors += 1;
            if anchor.log != log_id || anchor.checkpoint.is_empty() {
                continue;
            }
            // A row dropped by a repair leaves nothing to compare.
            let Some(v) = checkpoints.get(anchor.checkpoint_seq)? else {
                continue;
            };
            let cp = Checkpoint::decode(anchor.checkpoint_seq, v.value())?;
            if hex::encode(cp.digest) != anchor.checkpoint {
                let problem = format!(
                    "checkpoint digest {} differs from {} anchored at entry {} (this snapshot or an earlier one was rewritten with its checkpoints)",
                    hex::encode(cp.digest),
                    anchor.checkpoint,
                    anchor.at
                );
                fail(&mut report, Part::Snapshot, anchor.checkpoint_seq, problem);
                return Ok(report);
            }
            report.anchored_checkpoint = report.anchored_checkpoint.max(Some(cp.seq));
        }
        Ok(report)
    }
}

/// The walk of one range of the chain.
enum Walked {
    /// Every entry verified: their `(id, seq)` and the anchors among them.
    Good(Lane),
    /// The first bad entry of the range and what is wrong.
    Bad(u64, String),
}

struct Lane {
    ids: Vec<(u128, u64)>,
    anchors: Vec<Anchor>,
}

/// Walks entries `start..end`, linking the first to the stored hash of `start - 1`.
fn walk(
    entries: &redb::ReadOnlyTable<u64, &[u8]>,
    start: u64,
    end: u64,
) -> Result<Walked, LogError> {
    let mut prev = GENESIS_HASH;
    if start > 1 {
        // Missing or too short: the lane before names that entry, and a lower seq wins.
        if let Some(v) = entries.get(start - 1)? {
            if let Some(h) = v.value().get(HASH_LEN..HASH_LEN * 2) {
                prev.copy_from_slice(h);
            }
        }
    }
    let mut lane = Lane {
        ids: Vec::with_capacity(end.saturating_sub(start) as usize),
        anchors: Vec::new(),
    };
    let mut expected = start;
    for item in entries.range(start..end)? {
        let (k, v) = item?;
        let (seq, value) = (k.value(), v.value());
        if seq != expected {
            let problem = format!("entry missing: the next stored entry is {seq}");
            return Ok(Walked::Bad(expected, problem));
        }
        if let Err(problem) = check_entry(seq, value, &prev, &mut lane.ids, &mut lane.anchors) {
            return Ok(Walked::Bad(seq, problem));
        }
        prev.copy_from_slice(&value[HASH_LEN..HASH_LEN * 2]);
        expected += 1;
    }
    if expected < end {
        let next = entries.range(expected..)?.next().transpose()?;
        let next = next.map_or_else(|| "none".to_owned(), |(k, _)| k.value().to_string());
        let problem = format!("entry missing: the next stored entry is {next}");
        return Ok(Walked::Bad(expected, problem));
    }
    Ok(Walked::Good(lane))
}

/// Checks one stored entry against the previous hash; records its id and, for an anchor, its
/// claim.
fn check_entry(
    seq: u64,
    value: &[u8],
    prev: &Hash,
    ids: &mut Vec<(u128, u64)>,
    anchors: &mut Vec<Anchor>,
) -> Result<(), String> {
    let (subject, envelope) = split_entry(seq, value).map_err(|e| e.to_string())?;
    let stored_prev = &value[..HASH_LEN];
    let stored_hash = &value[HASH_LEN..HASH_LEN * 2];
    if stored_prev != prev {
        return Err(format!(
            "prev_hash {} does not match entry {}'s hash {}",
            hex::encode(stored_prev),
            seq - 1,
            hex::encode(prev)
        ));
    }
    let computed = entry_hash(prev, seq, subject, envelope);
    if computed != stored_hash {
        return Err(format!(
            "stored hash {} does not match the recomputed hash {} (subject or envelope bytes changed)",
            hex::encode(stored_hash),
            hex::encode(computed)
        ));
    }
    let id = rmp_serde::from_slice::<IdOnly>(envelope)
        .map_err(|e| format!("envelope has no readable event id: {e}"))?
        .id;
    ids.push((u128::from(id.0), seq));
    if is_anchor_subject(subject) {
        let env: Envelope = fleetbus_schemas::decode(envelope)
            .map_err(|e| format!("anchor envelope does not decode: {e}"))?;
        if let Event::System(SystemEvent::HeadAnchored {
            log,
            seq: anchored,
            hash,
            checkpoint_seq,
            checkpoint,
            ..
        }) = env.event
        {
            anchors.push(Anchor {
                at: seq,
                log,
                seq: anchored,
                hash,
                checkpoint_seq,
                checkpoint,
            });
        }
    }
    Ok(())
}

/// Merges the entries' `(id, seq)` pairs, sorted by id, with the dedup table (in id order);
/// returns the lowest-seq problem found.
fn check_dedup(
    dedup: &redb::ReadOnlyTable<u128, u64>,
    mut ids: Vec<(u128, u64)>,
    rows: &mut u64,
) -> Result<Option<(u64, String)>, LogError> {
    ids.sort_unstable();
    let mut worst: Option<(u64, String)> = None;
    let mut note = |seq: u64, problem: String| {
        if worst.as_ref().is_none_or(|(s, _)| seq < *s) {
            worst = Some((seq, problem));
        }
    };
    for pair in ids.windows(2) {
        if pair[0].0 == pair[1].0 {
            let id = EventId(ulid::Ulid(pair[0].0));
            note(
                pair[1].1,
                format!(
                    "event id {id} is stored twice (entries {} and {})",
                    pair[0].1, pair[1].1
                ),
            );
        }
    }
    let mut expected = ids.iter().peekable();
    for item in dedup.iter()? {
        let (k, v) = item?;
        let (id, seq) = (k.value(), v.value());
        *rows += 1;
        // Entries whose id sorts before this row have no row.
        while let Some(&&(eid, eseq)) = expected.peek() {
            if eid >= id {
                break;
            }
            let id = EventId(ulid::Ulid(eid));
            note(
                eseq,
                format!("event id {id} of entry {eseq} has no dedup row"),
            );
            expected.next();
        }
        match expected.peek() {
            Some(&&(eid, eseq)) if eid == id => {
                if seq != eseq {
                    let id = EventId(ulid::Ulid(id));
                    note(
                        eseq,
                        format!("event id {id} is indexed under {seq}, expected entry {eseq}"),
                    );
                }
                expected.next();
            }
            _ => {
                let id = EventId(ulid::Ulid(id));
                note(
                    seq,
                    format!("row for event id {id} → seq {seq}, but no entry has that id"),
                );
            }
        }
    }
    for &(eid, eseq) in expected {
        let id = EventId(ulid::Ulid(eid));
        note(
            eseq,
            format!("event id {id} of entry {eseq} has no dedup row"),
        );
    }
    Ok(worst)
}
