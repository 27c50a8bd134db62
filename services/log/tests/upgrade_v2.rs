//! A log written by fleetbus before redb 3 (file format v2) opens after the upgrade to redb 5:
//! the file is upgraded in place, a copy of the v2 file is kept, and the hash chain, snapshots,
//! checkpoints, dedup index and stream positions are exactly what they were.
//!
//! `fixtures/v2-log.redb.gz` was written by main at 0773733 (redb 2.6.4): 240 sample agent
//! reports from 20 hosts in 6 batches of 40, a snapshot every 100 entries plus one at the head,
//! the EVENTS position recorded with each batch.
use std::io::Read;

use fleetbus_log::{open_verified, LogStore};
use fleetbus_projections::State;

/// Head of the fixture as redb 2 wrote it.
const HEAD_SEQ: u64 = 240;
const HEAD_HASH: &str = "134af5d345df02cfc6cf36dfb3b1e67e8eddcd8f1e66b02e71b593ab85a7e13d";

fn unpack_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let gz = std::fs::File::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-log.redb.gz"),
    )
    .expect("fixture");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let path = dir.join("log.redb");
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn a_v2_log_is_upgraded_in_place_and_still_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unpack_fixture(dir.path());
    let v2 = std::fs::read(&path).expect("read");

    let store = LogStore::open(&path).expect("a v2 log opens (upgraded)");
    let head = store.head().expect("head");
    assert_eq!(head.seq, HEAD_SEQ);
    assert_eq!(hex::encode(head.hash), HEAD_HASH);
    assert_eq!(store.position("EVENTS").expect("position"), HEAD_SEQ);
    let report = store.verify_full::<State>().expect("verify");
    assert!(report.ok(), "upgraded log does not verify: {report:?}");
    assert_eq!(report.snapshots, 3, "snapshots at 100, 200 and 240");
    let (state, _) = store.state_at::<State>(HEAD_SEQ).expect("state");
    assert_eq!(state.projections.seq, HEAD_SEQ);
    assert_eq!(
        state.projections.fleet.hosts.len(),
        20,
        "the fold sees the 20 sample hosts"
    );
    drop(store);

    // The v2 file is kept, byte for byte, next to the upgraded one.
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("log.redb.before-redb-v3-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "one copy of the v2 file");
    assert_eq!(std::fs::read(kept[0].path()).expect("read copy"), v2);

    // Opening again is a plain open (no second upgrade, no second copy), and what ingest runs
    // at start accepts it.
    let opened = open_verified::<State>(&path, false).expect("ingest's open");
    assert_eq!(opened.store.head().expect("head").seq, HEAD_SEQ);
    let copies = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().contains("before-redb-v3"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(copies, 1);
}
