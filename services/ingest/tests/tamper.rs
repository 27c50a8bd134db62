//! Tampering with copies of a real log (written by ingest through a real nats-server, with
//! snapshots and head anchors): every change that alters an answer is named by `verify` and
//! makes ingest refuse to open the copy; `--repair` gets a copy serving again, truthfully.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use fleetbus_bus_config::Role;
use fleetbus_ingest::{Config, State};
use fleetbus_log::{self as log, Checkpoint, LogError, LogStore, Part};
use fleetbus_schemas::AgentId;
use fleetbus_testkit::NatsServer;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const DEDUP: TableDefinition<u128, u64> = TableDefinition::new("dedup");
const TIME_INDEX: TableDefinition<u64, u64> = TableDefinition::new("time_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const FORGED_KEY: &str = "forged-key-0000000000000000000000000000000000000000000000000000";

fn config(server: &NatsServer, state_dir: &Path) -> Config {
    let mut c = test_config(server, state_dir);
    c.log.snapshot_every = 40;
    c.log.anchor_every_s = 1;
    c.log.anchor_every_entries = 30;
    c
}

/// A fresh state dir holding a copy of `log`.
fn copy_of(log: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::copy(log, &path).expect("copy log");
    (dir, path)
}

/// Edits the redb file directly, as someone with the file (not ingest) would.
fn edit(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).expect("redb open");
    let txn = db.begin_write().expect("write");
    f(&txn);
    txn.commit().expect("commit");
}

/// What `fleetctl log verify` finds.
fn verify_finds(path: &Path) -> log::BadEntry {
    let store = LogStore::open(path).expect("open");
    let report = store.verify_full::<State>().expect("verify");
    report.first_bad.expect("verify must find the tampering")
}

/// What ingest says when it opens the copy.
fn open_refuses(path: &Path) -> (String, u64, String) {
    match log::open_verified::<State>(path, false) {
        Err(LogError::Unverified { part, seq, problem }) => (part.to_owned(), seq, problem),
        Err(e) => panic!("expected a verification failure, got {e}"),
        Ok(_) => panic!("ingest opened a tampered log"),
    }
}

fn assert_named(path: &Path, part: Part, seq: u64) {
    let bad = verify_finds(path);
    assert_eq!((bad.part, bad.seq), (part, seq), "verify: {bad:?}");
    let (p, s, problem) = open_refuses(path);
    assert_eq!((p.as_str(), s), (part.name(), seq), "open: {problem}");
}

fn newest_snapshot(path: &Path) -> (u64, State) {
    let db = redb::Database::open(path).expect("redb open");
    let txn = db.begin_read().expect("read");
    let t = txn.open_table(SNAPSHOTS).expect("table");
    let (k, v) = t.last().expect("last").expect("a snapshot");
    (k.value(), rmp_serde::from_slice(v.value()).expect("decode"))
}

fn forge_key(state: &mut State, agent: &AgentId) {
    let record = state
        .projections
        .registry
        .agents
        .get_mut(agent)
        .expect("agent in snapshot");
    record.key_hash = Some(hex::encode(Sha256::digest(FORGED_KEY.as_bytes())));
}

async fn post_status(base: &str, agent: &TestAgent, key: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/v1/agents/{}/report", agent.agent))
        .bearer_auth(key)
        .json(&report(agent, 1))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_copies_are_named_by_verify_and_refused_at_open_and_repair_serves_the_truth() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = server.client(Role::Admin).await;

    // A real log: two agents, reports in rounds a second apart so head anchors land between
    // them, snapshots every 40 entries.
    let ingest = InProcess::start(config(&server, dir.path())).await;
    let web1 = add_agent(&admin, "web-1").await;
    let web2 = add_agent(&admin, "web-2").await;
    for round in 0..4 {
        for n in 0..25 {
            let agent = if n % 2 == 0 { &web1 } else { &web2 };
            assert_eq!(
                post_status(&ingest.base(), agent, &agent.key).await,
                202,
                "round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    ingest.stop().await;

    // The good log: ingest starts on it, takes the real key and refuses the forged one.
    let good = log_path(dir.path());
    let ingest = InProcess::start(config(&server, dir.path())).await;
    assert_eq!(post_status(&ingest.base(), &web1, &web1.key).await, 202);
    assert_eq!(post_status(&ingest.base(), &web1, FORGED_KEY).await, 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ingest.stop().await;
    let store = LogStore::open(&good).expect("open");
    let report = store.verify_full::<State>().expect("verify");
    assert!(report.ok(), "{report:?}");
    assert!(report.anchors >= 3, "{report:?}");
    assert!(report.snapshots >= 3, "{report:?}");
    assert!(report.anchored_checkpoint.is_some(), "{report:?}");
    let head = report.head_seq;
    drop(store);

    // 1. One flipped byte in an entry's envelope.
    let (_d1, flipped) = copy_of(&good);
    edit(&flipped, |txn| {
        let mut t = txn.open_table(ENTRIES).expect("table");
        let mut v = t.get(57).expect("get").expect("entry").value().to_vec();
        let i = v.len() - 5;
        v[i] ^= 0x04;
        t.insert(57, v.as_slice()).expect("insert");
    });
    assert_named(&flipped, Part::Entry, 57);

    // 2. The attack: the newest snapshot says web-1's key hash is the forger's.
    let (_d2, forged) = copy_of(&good);
    let (newest, mut state) = newest_snapshot(&forged);
    forge_key(&mut state, &web1.agent);
    let forged_bytes = rmp_serde::to_vec_named(&state).expect("encode");
    edit(&forged, |txn| {
        let mut t = txn.open_table(SNAPSHOTS).expect("table");
        t.insert(newest, forged_bytes.as_slice()).expect("insert");
    });
    assert_named(&forged, Part::Snapshot, newest);
    // ... and the binary refuses to serve it, exiting non-zero naming the snapshot.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetbus-ingest"))
        .env("FLEETBUS_INGEST__STATE_DIR", _d2.path())
        .env("FLEETBUS_INGEST__HTTP_ADDR", "127.0.0.1:1")
        .output()
        .expect("run ingest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("snapshot {newest}")), "{stderr}");
    assert!(stderr.contains("--repair"), "{stderr}");

    // 3. The same, with the checkpoint row recomputed to match (no secret stops that): the
    // content hash agrees now, the refold (verify) and the anchors or the refold of the
    // unanchored tail (open) do not.
    let (_d3, recomputed) = copy_of(&good);
    edit(&recomputed, |txn| {
        let mut snaps = txn.open_table(SNAPSHOTS).expect("table");
        snaps
            .insert(newest, forged_bytes.as_slice())
            .expect("insert");
        let mut cps = txn.open_table(CHECKPOINTS).expect("table");
        let prev = cps
            .range(..newest)
            .expect("range")
            .next_back()
            .map(|r| {
                let (k, v) = r.expect("row");
                Checkpoint::decode(k.value(), v.value())
                    .expect("row")
                    .digest
            })
            .unwrap_or([0; 32]);
        let old = Checkpoint::decode(newest, cps.get(newest).expect("get").expect("row").value())
            .expect("row");
        let cp = Checkpoint::next(&prev, newest, old.entry_hash, &forged_bytes);
        cps.insert(newest, cp.encode().as_slice()).expect("insert");
    });
    assert_named(&recomputed, Part::Snapshot, newest);

    // 4. Dedup index: a row pointing elsewhere, a missing row, an extra row.
    let id_of = |path: &Path, seq: u64| -> u128 {
        let store = LogStore::open(path).expect("open");
        let e = store.entry(seq).expect("entry").expect("exists");
        u128::from(e.envelope().expect("envelope").id.0)
    };
    let (_d4, moved) = copy_of(&good);
    let id = id_of(&moved, 30);
    edit(&moved, |txn| {
        txn.open_table(DEDUP)
            .expect("t")
            .insert(id, 31)
            .expect("insert");
    });
    assert_named(&moved, Part::DedupIndex, 30);
    let (_d5, missing) = copy_of(&good);
    let id = id_of(&missing, 44);
    edit(&missing, |txn| {
        txn.open_table(DEDUP)
            .expect("t")
            .remove(id)
            .expect("remove");
    });
    assert_named(&missing, Part::DedupIndex, 44);
    let (_d6, extra) = copy_of(&good);
    edit(&extra, |txn| {
        let id = u128::from(fleetbus_schemas::EventId::new().0);
        txn.open_table(DEDUP)
            .expect("t")
            .insert(id, 12)
            .expect("insert");
    });
    assert_named(&extra, Part::DedupIndex, 12);

    // 5. The time index pointing past the head; the head record moved back.
    let (_d7, time) = copy_of(&good);
    edit(&time, |txn| {
        txn.open_table(TIME_INDEX)
            .expect("t")
            .insert(u64::MAX - 1, head + 5)
            .expect("insert");
    });
    assert_named(&time, Part::TimeIndex, head + 5);
    let (_d8, moved_head) = copy_of(&good);
    edit(&moved_head, |txn| {
        let mut meta = txn.open_table(META).expect("t");
        let mut v = meta
            .get("head")
            .expect("get")
            .expect("head")
            .value()
            .to_vec();
        v[..8].copy_from_slice(&(head - 1).to_be_bytes());
        meta.insert("head", v.as_slice()).expect("insert");
    });
    assert_named(&moved_head, Part::Head, head);

    // Repair: a flipped entry cuts the log before it (a copy of the file is kept) ...
    let r = log::open_verified::<State>(&flipped, true).expect("repaired");
    let repaired = r.repaired.as_ref().expect("report");
    assert_eq!(repaired.truncated_after, Some(56), "{repaired:?}");
    assert!(
        repaired.backup.as_ref().is_some_and(|b| b.is_file()),
        "{repaired:?}"
    );
    assert_eq!(r.store.head().expect("head").seq, 56);
    assert!(r.store.verify_full::<State>().expect("verify").ok());
    drop(r);
    // ... bad index rows are rebuilt from the entries ...
    for path in [&moved, &missing, &extra] {
        let r = log::open_verified::<State>(path, true).expect("repaired");
        assert!(r.repaired.as_ref().is_some_and(|x| x.dedup_rebuilt));
        assert!(r.store.verify_full::<State>().expect("verify").ok());
    }
    // ... and forged snapshots are dropped and refolded: ingest serves the real key again.
    for (d, path) in [(&_d2, &forged), (&_d3, &recomputed)] {
        let r = log::open_verified::<State>(path, true).expect("repaired");
        assert!(r
            .repaired
            .as_ref()
            .is_some_and(|x| x.snapshots_dropped >= 1));
        let real = hex::encode(Sha256::digest(web1.key.as_bytes()));
        let record = &r.state.projections.registry.agents[&web1.agent];
        assert_eq!(record.key_hash.as_deref(), Some(real.as_str()));
        drop(r);
        let ingest = InProcess::start(config(&server, d.path())).await;
        assert_eq!(post_status(&ingest.base(), &web1, &web1.key).await, 202);
        assert_eq!(post_status(&ingest.base(), &web1, FORGED_KEY).await, 401);
        ingest.stop().await;
    }
}
