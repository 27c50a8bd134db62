//! Model test: the redb log against an in-memory `Vec` under random appends, duplicates,
//! snapshots and reopens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::*;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{Actor, AgentId};

/// A fold that remembers every (seq, event id) it saw.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    ids: Vec<(u64, String)>,
}

impl Fold for Seen {
    fn apply(&mut self, seq: u64, envelope: &Envelope) {
        self.ids.push((seq, envelope.id.to_string()));
    }
}

fn new_entry(id: EventId) -> NewEntry {
    let agent = AgentId::new("web-1").expect("valid id");
    let mut env = Envelope::new(
        "test",
        Actor::service("test"),
        None,
        Event::Agent(AgentEvent::Unblocked { agent }),
    );
    env.id = id;
    let bytes = fleetbus_schemas::encode(&env).expect("encode");
    NewEntry {
        subject: env.subject(),
        bytes: bytes.into(),
        envelope: env,
    }
}

#[test]
fn log_matches_a_vec_model_under_random_appends_duplicates_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut model: Vec<EventId> = Vec::new();
    let mut store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    for round in 0..60 {
        match rng.gen_range(0..10) {
            // Reopen, reloading the state from snapshot + tail, as after a crash.
            0 => {
                drop(store);
                store = LogStore::open(&path).expect("reopen");
                let (loaded, at) = store.load_latest::<Seen>().expect("load");
                assert_eq!(at.seq, model.len() as u64, "round {round}");
                assert_eq!(loaded, state, "round {round}: reloaded state differs");
                state = loaded;
            }
            _ => {
                let n = rng.gen_range(1..40);
                let mut batch = Vec::new();
                let mut expected = Vec::new();
                let mut in_batch: Vec<EventId> = Vec::new();
                for _ in 0..n {
                    let dup = !model.is_empty() && rng.gen_bool(0.3);
                    let id = if dup {
                        model[rng.gen_range(0..model.len())]
                    } else if !in_batch.is_empty() && rng.gen_bool(0.1) {
                        in_batch[0]
                    } else {
                        EventId::new()
                    };
                    match model.iter().position(|m| *m == id) {
                        Some(i) => expected.push(Appended::Duplicate(i as u64 + 1)),
                        None => {
                            model.push(id);
                            in_batch.push(id);
                            expected.push(Appended::New(model.len() as u64));
                        }
                    }
                    batch.push(new_entry(id));
                }
                let (got, head) = store.append_batch(&batch, &mut state, 7).expect("append");
                assert_eq!(got, expected, "round {round}");
                assert_eq!(head.seq, model.len() as u64);
                assert_eq!(store.head().expect("head"), head);
            }
        }
    }
    assert!(
        model.len() > 100,
        "the model test appended only {}",
        model.len()
    );
    let stored: Vec<EventId> = store
        .export(1)
        .expect("export")
        .map(|e| e.expect("entry").envelope().expect("env").id)
        .collect();
    assert_eq!(stored, model);
    for (i, id) in model.iter().enumerate() {
        assert_eq!(store.lookup(*id).expect("lookup"), Some(i as u64 + 1));
    }
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, model.len() as u64);
    let (rebuild, refolded) = store.rebuild_as::<Seen>().expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert!(rebuild.snapshots_compared >= model.len() as u64 / 7);
    assert_eq!(refolded, state);
    // Time travel to a past sequence equals the prefix of the model.
    let mid = model.len() as u64 / 2 + 3;
    let (past, at) = store.state_at::<Seen>(mid).expect("state_at");
    assert_eq!(past.ids.len() as u64, mid);
    assert!(at.refolded < 7, "{at:?}");
    let backwards: Vec<u64> = store
        .export_before(5)
        .expect("export_before")
        .map(|e| e.expect("entry").seq)
        .collect();
    assert_eq!(backwards, vec![4, 3, 2, 1]);
}

#[test]
fn verify_names_a_changed_entry_and_a_broken_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let batch: Vec<NewEntry> = (0..10).map(|_| new_entry(EventId::new())).collect();
    store
        .append_batch(&batch, &mut Seen::default(), 0)
        .expect("append");
    assert!(store.verify().expect("verify").ok());
    drop(store);

    // Flip one byte of entry 6's envelope, writing the redb file directly.
    {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(tables::ENTRIES).expect("table");
            let mut v = t.get(6).expect("get").expect("entry 6").value().to_vec();
            let last = v.len() - 1;
            v[last] ^= 0x01;
            t.insert(6, v.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = LogStore::open(&path).expect("reopen");
    let report = store.verify().expect("verify");
    let bad = report.first_bad.expect("tampering detected");
    assert_eq!(bad.seq, 6);
    assert!(
        bad.problem.contains("does not match the recomputed hash"),
        "{}",
        bad.problem
    );
}

#[test]
fn time_index_maps_instants_to_the_last_committed_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(dir.path().join("log.redb")).expect("open");
    assert_eq!(store.seq_at_time(u64::MAX).expect("time"), 0);
    let mut state = Seen::default();
    store
        .append_batch(&[new_entry(EventId::new())], &mut state, 0)
        .expect("append");
    let t1 = store.head().expect("head").commit_ms;
    std::thread::sleep(std::time::Duration::from_millis(3));
    store
        .append_batch(
            &[new_entry(EventId::new()), new_entry(EventId::new())],
            &mut state,
            0,
        )
        .expect("append");
    let t2 = store.head().expect("head").commit_ms;
    assert!(t2 > t1);
    assert_eq!(store.seq_at_time(t1 - 1).expect("time"), 0);
    assert_eq!(store.seq_at_time(t1).expect("time"), 1);
    assert_eq!(store.seq_at_time(t2 - 1).expect("time"), 1);
    assert_eq!(store.seq_at_time(t2).expect("time"), 3);
}

#[test]
fn rebuild_folds_many_chunks_in_order_and_stops_at_a_corrupt_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    // Several of the rebuild's 1,024-entry chunks.
    let n = 1024 * 4 + 77;
    for _ in 0..5 {
        let batch: Vec<NewEntry> = (0..n / 5 + 1).map(|_| new_entry(EventId::new())).collect();
        store
            .append_batch(&batch, &mut state, 1000)
            .expect("append");
    }
    let (rebuild, refolded) = store.rebuild_as::<Seen>().expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert_eq!(rebuild.events, state.ids.len() as u64);
    assert!(rebuild.snapshots_compared >= 4, "{rebuild:?}");
    assert_eq!(refolded, state, "the refold is in sequence order");
    drop(store);

    // Cut entry 3500 short of its header: the rebuild names it instead of folding past it.
    {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(tables::ENTRIES).expect("table");
            t.insert(3500, [0u8; 10].as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = LogStore::open(&path).expect("reopen");
    match store.rebuild_as::<Seen>() {
        Err(LogError::Corrupt { seq, .. }) => assert_eq!(seq, 3500),
        other => panic!("expected entry 3500 to be corrupt, got {other:?}"),
    }
}

#[test]
fn rebuild_accepts_an_equal_snapshot_in_another_encoding_and_names_a_different_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    let batch: Vec<NewEntry> = (0..3000).map(|_| new_entry(EventId::new())).collect();
    store
        .append_batch(&batch, &mut state, 1000)
        .expect("append");
    drop(store);
    let rewrite = |seq: u64, bytes: Vec<u8>| {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(tables::SNAPSHOTS).expect("table");
            t.insert(seq, bytes.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    };
    let at = |n: usize| Seen {
        ids: state.ids[..n].to_vec(),
    };

    // The state at 1000 as a msgpack array (as an older writer might have stored it): other
    // bytes, same state.
    rewrite(1000, rmp_serde::to_vec(&at(1000)).expect("encode"));
    let (rebuild, _) = LogStore::open(&path)
        .expect("reopen")
        .rebuild_as::<Seen>()
        .expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert_eq!(rebuild.snapshots_compared, 3);

    // The state at 2000 stored under 2000 but missing its last event: named.
    rewrite(2000, rmp_serde::to_vec_named(&at(1999)).expect("encode"));
    let (rebuild, _) = LogStore::open(&path)
        .expect("reopen")
        .rebuild_as::<Seen>()
        .expect("rebuild");
    assert_eq!(rebuild.first_difference, Some(2000), "{rebuild:?}");
    assert_eq!(rebuild.latest_snapshot, Some(3000));
}

fn append(store: &LogStore, n: usize, state: &mut Seen, snapshot_every: u64) {
    let batch: Vec<NewEntry> = (0..n).map(|_| new_entry(EventId::new())).collect();
    store
        .append_batch(&batch, state, snapshot_every)
        .expect("append");
}

fn anchor_entry(env: Envelope) -> NewEntry {
    let bytes = fleetbus_schemas::encode(&env).expect("encode");
    NewEntry {
        subject: env.subject(),
        bytes: bytes.into(),
        envelope: env,
    }
}

#[test]
fn snapshots_of_an_older_log_are_bound_only_after_the_refold_proves_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    append(&store, 50, &mut state, 10);
    drop(store);
    let unbind = || {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        txn.delete_table(tables::CHECKPOINTS).expect("delete");
        txn.commit().expect("commit");
    };
    // As a build from before checkpoints left it: snapshots, no checkpoint rows.
    unbind();
    let report = LogStore::open(&path)
        .expect("open")
        .verify()
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.unbound_snapshots, report.snapshots), (5, 0));
    let opened = open_verified::<Seen>(&path, false).expect("open and bind");
    assert_eq!(opened.bound, 5);
    assert_eq!(opened.state, state);
    let report = opened.store.verify().expect("verify");
    assert_eq!((report.unbound_snapshots, report.snapshots), (0, 5));
    drop(opened);

    // An unbound snapshot that differs from the refold is refused, and repair drops it.
    unbind();
    {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(tables::SNAPSHOTS).expect("table");
            let forged = Seen {
                ids: state.ids[..29].to_vec(),
            };
            let bytes = rmp_serde::to_vec_named(&forged).expect("encode");
            t.insert(30, bytes.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    match open_verified::<Seen>(&path, false) {
        Err(LogError::Unverified { part, seq, .. }) => assert_eq!((part, seq), ("snapshot", 30)),
        other => panic!("expected snapshot 30 to be refused, got {other:?}"),
    }
    let opened = open_verified::<Seen>(&path, true).expect("repair");
    let repaired = opened.repaired.clone().expect("report");
    assert_eq!(repaired.snapshots_dropped, 3, "{repaired:?}");
    assert_eq!(repaired.snapshots_bound, 2, "{repaired:?}");
    assert_eq!(opened.state, state);
    assert!(opened.store.verify_full::<Seen>().expect("verify").ok());
}

#[test]
fn anchors_are_checked_against_the_chain_and_pin_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    append(&store, 20, &mut state, 10);
    let (head, cp) = store.anchor_point().expect("anchor point");
    let log_id = store.log_id().expect("log id");
    let good = crate::anchor_event(&log_id, &head, cp.as_ref());
    store
        .append_batch(&[anchor_entry(good)], &mut state, 10)
        .expect("append");
    append(&store, 5, &mut state, 10);
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.anchors, report.anchored_checkpoint), (1, Some(20)));

    // A claim that is not this chain's: the anchor entry is named.
    let mut wrong = head;
    wrong.seq = 12;
    let lie = crate::anchor_event(&log_id, &wrong, cp.as_ref());
    store
        .append_batch(&[anchor_entry(lie)], &mut state, 0)
        .expect("append");
    let bad = store.verify().expect("verify").first_bad.expect("bad");
    assert_eq!((bad.part, bad.seq), (Part::Anchor, 27), "{bad:?}");
    drop(store);

    // A checkpoint rewritten under an anchor names its snapshot; repair drops it and the ones
    // after it, and the log verifies again.
    let path2 = dir.path().join("log2.redb");
    let store = LogStore::open(&path2).expect("open");
    let mut state = Seen::default();
    append(&store, 20, &mut state, 10);
    let (head, cp) = store.anchor_point().expect("anchor point");
    let event = crate::anchor_event(&store.log_id().expect("id"), &head, cp.as_ref());
    store
        .append_batch(&[anchor_entry(event)], &mut state, 10)
        .expect("append");
    append(&store, 15, &mut state, 10);
    drop(store);
    {
        let db = redb::Database::open(&path2).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(tables::CHECKPOINTS).expect("table");
            let mut row = t.get(10).expect("get").expect("row").value().to_vec();
            row[40] ^= 1;
            let cp = Checkpoint::decode(10, &row).expect("row");
            let cp = Checkpoint {
                digest: checkpoint::chain_digest(
                    &GENESIS_HASH,
                    10,
                    &cp.entry_hash,
                    &cp.state_sha256,
                ),
                ..cp
            };
            t.insert(10, cp.encode().as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = LogStore::open(&path2).expect("open");
    let bad = store.verify().expect("verify").first_bad.expect("bad");
    assert_eq!(bad.part, Part::Snapshot, "{bad:?}");
    drop(store);
    let opened = open_verified::<Seen>(&path2, true).expect("repair");
    assert_eq!(opened.state, state);
    assert!(opened.store.verify_full::<Seen>().expect("verify").ok());
}

#[test]
fn verify_walks_the_chain_in_lanes_and_names_breaks_at_their_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = Seen::default();
    for _ in 0..5 {
        append(&store, 5000, &mut state, 0);
    }
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.dedup_rows), (25_000, 25_000));
    drop(store);
    type Entries<'t> = redb::Table<'t, u64, &'static [u8]>;
    let edit = |f: &dyn Fn(&mut Entries)| {
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        f(&mut txn.open_table(tables::ENTRIES).expect("table"));
        txn.commit().expect("commit");
    };
    // With two to four lanes, 12,501 starts one and 12,500 ends one; with one, nothing changes.
    edit(&|t| {
        let mut v = t.get(12_501).expect("get").expect("entry").value().to_vec();
        v[0] ^= 1;
        t.insert(12_501, v.as_slice()).expect("insert");
    });
    let bad = LogStore::open(&path)
        .expect("open")
        .verify()
        .expect("verify")
        .first_bad
        .expect("bad");
    assert_eq!((bad.part, bad.seq), (Part::Entry, 12_501), "{bad:?}");
    assert!(bad.problem.starts_with("prev_hash"), "{bad:?}");
    edit(&|t| {
        t.remove(12_500).expect("remove");
        t.remove(20_000).expect("remove");
    });
    let bad = LogStore::open(&path)
        .expect("open")
        .verify()
        .expect("verify")
        .first_bad
        .expect("bad");
    assert_eq!((bad.part, bad.seq), (Part::Entry, 12_500), "{bad:?}");
    assert!(bad.problem.contains("missing"), "{bad:?}");
}
