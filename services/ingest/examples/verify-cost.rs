//! What verifying the log at open costs (release build): `cargo run --release -p
//! fleetbus-ingest --example verify-cost`. `VERIFY_EVENTS` (default 1,000,000) sets the log size
//! (snapshots every 10,000 entries, as ingest); `VERIFY_LOG` keeps the log at that path between
//! runs (built once). Prints three runs of each step with the median.
use std::time::Instant;

use fleetbus_log::{LogStore, NewEntry};
use fleetbus_projections::State;

mod sample;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runs(name: &str, n: u64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut secs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{name:<44} median {:>6.3} s ({:.3}–{:.3}), {:>5.2} s per 1M entries",
        sorted[1],
        sorted[0],
        sorted[2],
        sorted[1] * 1e6 / n as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("VERIFY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = std::env::var("VERIFY_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("log.redb"));
    let fresh = !path.exists();
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
            store.append_batch(&batch, &mut state, 10_000)?;
        }
    }
    let head = store.head()?.seq;
    println!("log: {head} entries, {}", path.display());
    runs("verify at open (chain, indexes, snapshots)", head, || {
        anyhow::ensure!(store.verify()?.ok());
        Ok(())
    })?;
    let newest = store.latest_checkpoint()?.map_or(0, |c| c.seq);
    let anchored = newest.saturating_sub(100_000);
    runs("prove snapshots after an anchor 100k back", head, || {
        store.prove_unanchored::<State>(Some(anchored))?;
        Ok(())
    })?;
    runs("prove snapshots with no anchor (full refold)", head, || {
        store.prove_unanchored::<State>(None)?;
        Ok(())
    })?;
    Ok(())
}
