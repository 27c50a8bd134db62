//! Where a rebuild's time goes: reading entries, decoding envelopes, folding (release build).
//!
//! `PROF_EVENTS` (default 300,000) sets the log size; `PROF_LOG` keeps the log at that path
//! between runs (built once), so `perf record` can look at the rebuild alone.
use std::time::Instant;

use fleetbus_log::{Entry, Fold, LogStore, NewEntry};
use fleetbus_projections::State;
use fleetbus_schemas::Envelope;

mod sample;

/// The log's decode path allocates many small strings; mimalloc makes a refold about a third
/// faster than the system allocator (see the README's rebuild numbers).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rate(n: u64, t: Instant) -> String {
    format!("{:>9.0} ev/s", n as f64 / t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("PROF_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir()?;
    let path = std::env::var("PROF_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("log.redb"));
    let fresh = !path.exists();
    // `PROF_SNAPSHOT_EVERY` (default 10,000, as ingest) when the log is built.
    let snapshot_every: u64 = std::env::var("PROF_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let store = LogStore::open(&path)?;
    if fresh {
        let mut state = State::default();
        for start in (0..n).step_by(1000) {
            let batch: Vec<NewEntry> = (start..(start + 1000).min(n))
                .map(|i| {
                    let env = sample::report_envelope(i);
                    NewEntry {
                        subject: env.subject(),
                        bytes: fleetbus_schemas::encode(&env).unwrap_or_default().into(),
                        envelope: env,
                    }
                })
                .collect();
            store.append_batch(&batch, &mut state, snapshot_every)?;
        }
    }
    // `PROF_REBUILD_ONLY=1` skips the split measurements (for `perf record`).
    if std::env::var_os("PROF_REBUILD_ONLY").is_none() {
        split(&store)?;
    }
    for _ in 0..3 {
        let (report, _) = store.rebuild_as::<State>()?;
        anyhow::ensure!(report.equal(), "rebuild differs: {report:?}");
        println!(
            "rebuild:        {:>9.0} ev/s ({} events, {} snapshots compared)",
            report.events as f64 / report.seconds,
            report.events,
            report.snapshots_compared
        );
    }
    Ok(())
}

/// Times each stage of a refold on its own: read, decode, fold.
fn split(store: &LogStore) -> anyhow::Result<()> {
    let entries: Vec<Entry> = {
        let t = Instant::now();
        let export = store.export(1)?;
        let all: Vec<Entry> = export.collect::<Result<_, _>>()?;
        println!("read entries:   {}", rate(all.len() as u64, t));
        all
    };
    let t = Instant::now();
    let envelopes: Vec<Envelope> = entries
        .iter()
        .map(|e| e.envelope())
        .collect::<Result<_, _>>()?;
    println!("decode only:    {}", rate(envelopes.len() as u64, t));
    let t = Instant::now();
    let mut state = State::default();
    for (i, e) in envelopes.iter().enumerate() {
        state.apply(i as u64 + 1, e);
    }
    println!("fold only:      {}", rate(envelopes.len() as u64, t));
    let bytes = rmp_serde::to_vec_named(&state)?;
    let t = Instant::now();
    let _: State = rmp_serde::from_slice(&bytes)?;
    println!(
        "snapshot:       {} bytes, decoded in {:?}",
        bytes.len(),
        t.elapsed()
    );
    Ok(())
}
