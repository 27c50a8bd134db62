//! `fleetctl log verify` on a real redb log: ok on a good one; a changed snapshot, a moved dedup
//! row or a flipped entry byte is named (exit 1), in text and in `--json`.

use std::path::Path;
use std::process::{Command, Output};

use fleetbus_log::{LogStore, NewEntry};
use fleetbus_projections::State;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Envelope};
use redb::{ReadableTable, TableDefinition};

const BIN: &str = env!("CARGO_BIN_EXE_fleetctl");

fn verify(db: &Path, json: bool) -> Output {
    let mut cmd = Command::new(BIN);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["log", "verify", "--db"])
        .arg(db)
        .env_remove("FLEETBUS_NATS_URL")
        .output()
        .expect("run fleetctl")
}

fn entry() -> NewEntry {
    let env = Envelope::new(
        "test",
        Actor::service("test"),
        None,
        Event::Agent(AgentEvent::Unblocked {
            agent: AgentId::new("web-1").expect("id"),
        }),
    );
    NewEntry {
        subject: env.subject(),
        bytes: fleetbus_schemas::encode(&env).expect("encode").into(),
        envelope: env,
    }
}

/// A 60-entry log with snapshots at 25 and 50 and one saved at the head (60).
fn good_log(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("log.redb");
    let store = LogStore::open(&path).expect("open");
    let mut state = State::default();
    let batch: Vec<NewEntry> = (0..60).map(|_| entry()).collect();
    store.append_batch(&batch, &mut state, 25).expect("append");
    store.save_snapshot(&state).expect("snapshot");
    path
}

fn edit(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).expect("redb open");
    let txn = db.begin_write().expect("write");
    f(&txn);
    txn.commit().expect("commit");
}

#[test]
fn verify_names_a_changed_snapshot_a_moved_index_row_and_a_flipped_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = good_log(dir.path());
    let o = verify(&path, false);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.starts_with("ok: 60 entries"), "{out}");
    assert!(out.contains("3 snapshots"), "{out}");

    // One bit of a snapshot's bytes changed.
    edit(&path, |txn| {
        let mut t = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("snapshots"))
            .expect("table");
        let mut v = t.get(50).expect("get").expect("snapshot").value().to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        t.insert(50, v.as_slice()).expect("insert");
    });
    let o = verify(&path, true);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["first_bad"]["part"], "snapshot", "{report}");
    assert_eq!(report["first_bad"]["seq"], 50, "{report}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("snapshot 50"), "{stderr}");

    // A dedup row pointing at another entry.
    let path = good_log(&subdir(dir.path(), "b"));
    edit(&path, |txn| {
        let mut t = txn
            .open_table(TableDefinition::<u128, u64>::new("dedup"))
            .expect("table");
        let (id, seq) = {
            let (k, v) = t.iter().expect("iter").next().expect("row").expect("row");
            (k.value(), v.value())
        };
        t.insert(id, seq % 60 + 1).expect("insert");
    });
    let o = verify(&path, false);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("BAD dedup index row for entry"), "{out}");

    // A flipped entry byte.
    let path = good_log(&subdir(dir.path(), "c"));
    edit(&path, |txn| {
        let mut t = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("entries"))
            .expect("table");
        let mut v = t.get(33).expect("get").expect("entry").value().to_vec();
        let i = v.len() - 3;
        v[i] ^= 0x02;
        t.insert(33, v.as_slice()).expect("insert");
    });
    let o = verify(&path, false);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("BAD entry 33:"), "{out}");
}

fn subdir(dir: &Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
