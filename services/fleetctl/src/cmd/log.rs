//! `fleetctl log verify|rebuild|export`: offline work on ingest's redb log (ingest must be
//! stopped: redb allows one process at a time).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use fleetbus_log::LogStore;
use fleetbus_schemas::Envelope;

use crate::{CtlError, Ctx};

/// `log` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    /// The log file (default `<state>/ingest/log.redb`).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Walk the hash chain, the head, the dedup and time indexes, every snapshot (checkpoint
    /// chain, entry link, content hash, equality with the refold) and every head anchor; exit 1
    /// naming the first bad entry, snapshot or index row.
    Verify,
    /// Refold the projections from the log and compare with the stored snapshots.
    Rebuild,
    /// Print entries from a sequence on, one JSON object per line.
    Export {
        /// First sequence to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// Runs a `log` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let path = args
        .db
        .unwrap_or_else(|| ctx.global.state.join("ingest").join("log.redb"));
    if !path.is_file() {
        return Err(CtlError::io(
            &path,
            "no such log file (pass --db PATH or --state DIR)",
        ));
    }
    let json = ctx.global.json;
    let verb = args.verb;
    // redb is blocking I/O.
    let result = tokio::task::spawn_blocking(move || -> Result<(), CtlError> {
        let store = LogStore::open(&path)?;
        match verb {
            Verb::Verify => {
                let report = store.verify_full::<fleetbus_projections::State>()?;
                let human = match &report.first_bad {
                    None => format!(
                        "ok: {} entries, head {} {}; {} dedup rows; {} snapshots (checkpoints and contents checked, {} compared with the refold{}); {} anchors",
                        report.entries,
                        report.head_seq,
                        report.head_hash,
                        report.dedup_rows,
                        report.snapshots + report.unbound_snapshots,
                        report.snapshots_refolded,
                        match report.unbound_snapshots {
                            0 => String::new(),
                            n => format!(", {n} not yet bound to the chain"),
                        },
                        report.anchors,
                    ),
                    Some(bad) => format!("BAD {} {}: {}", bad.part.name(), bad.seq, bad.problem),
                };
                print_either(json, human, &report);
                match report.first_bad {
                    Some(bad) => Err(CtlError::LogBroken {
                        seq: bad.seq,
                        problem: format!("{} {}: {}", bad.part.name(), bad.seq, bad.problem),
                    }),
                    None => Ok(()),
                }
            }
            Verb::Rebuild => {
                let (report, _state) = store.rebuild_as::<fleetbus_projections::State>()?;
                let human = format!(
                    "refolded {} events in {:.3}s; {} snapshot(s) compared: {}",
                    report.events,
                    report.seconds,
                    report.snapshots_compared,
                    match report.first_difference {
                        None => "all equal".to_owned(),
                        Some(seq) => format!("DIFFERENT at seq {seq}"),
                    }
                );
                print_either(json, human, &report);
                match report.first_difference {
                    Some(seq) => Err(CtlError::RebuildDiffers(seq)),
                    None => Ok(()),
                }
            }
            Verb::Export { from, limit } => {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                let limit = limit.unwrap_or(u64::MAX);
                for entry in store
                    .export(from)?
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                {
                    let entry = entry?;
                    let envelope = fleetbus_schemas::decode::<Envelope>(&entry.envelope)
                        .map(|e| serde_json::to_value(e).unwrap_or_default())
                        .unwrap_or_else(|e| serde_json::json!({ "undecodable": e.to_string() }));
                    let line = serde_json::json!({
                        "seq": entry.seq,
                        "subject": entry.subject,
                        "prev_hash": hex::encode(entry.prev_hash),
                        "hash": hex::encode(entry.hash),
                        "envelope": envelope,
                    });
                    if writeln!(out, "{line}").is_err() {
                        break; // reader went away (e.g. `| head`)
                    }
                }
                Ok(())
            }
        }
    })
    .await
    .map_err(|e| CtlError::io("log", e))?;
    result
}

fn print_either(json: bool, human: String, value: &impl serde::Serialize) {
    if json {
        crate::ctx::print_json(value);
    } else {
        println!("{human}");
    }
}
