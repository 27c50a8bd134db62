//! `fleetbus-ingest`: parse config, init tracing, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The log's decode path allocates many small strings; mimalloc makes a refold about a third
/// faster than the system allocator (see the README's rebuild numbers).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The agent HTTP front door and keeper of the fleetbus event log.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML). Every key can be overridden with FLEETBUS_INGEST__<KEY>[__<SUB>].
    #[arg(long, short, env = "FLEETBUS_INGEST_CONFIG")]
    config: Option<PathBuf>,
    /// Repair a log that does not verify, then serve it: keeps a copy of the file
    /// (`log.redb.before-repair-<ms>`), cuts the log before a bad entry, drops bad snapshots
    /// (the state is refolded), rebuilds a bad dedup index. Without it ingest refuses to start
    /// on such a log.
    #[arg(long)]
    repair: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env()) {
        eprintln!("fleetbus-ingest: {e}");
        return ExitCode::from(2);
    }
    let mut config: fleetbus_ingest::Config =
        match fleetbus_runtime::config::load(args.config.as_deref(), "ingest") {
            Ok(c) => c,
            Err(e) => {
                eprintln!("fleetbus-ingest: bad config: {e}");
                return ExitCode::from(2);
            }
        };
    config.log.repair = args.repair;
    if let Err(e) = config.validate() {
        eprintln!("fleetbus-ingest: bad config: {e}");
        return ExitCode::from(2);
    }
    let shutdown = fleetbus_runtime::shutdown();
    match fleetbus_ingest::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ingest failed");
            eprintln!("fleetbus-ingest: {e}");
            if matches!(
                e,
                fleetbus_ingest::IngestError::Log(fleetbus_log::LogError::Unverified { .. })
            ) {
                eprintln!(
                    "fleetbus-ingest: refusing to serve this log. `fleetctl log verify` shows the \
                     report; `fleetbus-ingest --repair` keeps a copy of the file, then cuts the log \
                     before a bad entry, drops bad snapshots and rebuilds bad indexes (see the README)"
                );
            }
            ExitCode::FAILURE
        }
    }
}
