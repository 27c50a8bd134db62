//! `fleetbus-scheduler [--config scheduler.toml]`

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Cron with time zones, staleness sweeps, heartbeat and deadline checks, retention.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML); `FLEETBUS_SCHEDULER__*` variables override it.
    #[arg(long, env = "FLEETBUS_SCHEDULER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env())?;
    let config: fleetbus_scheduler::Config =
        fleetbus_runtime::config::load(args.config.as_deref(), "scheduler")?;
    let shutdown = fleetbus_runtime::shutdown();
    fleetbus_scheduler::run(config, shutdown)
        .await
        .context("scheduler failed")
}
