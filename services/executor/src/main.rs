//! `fleetbus-executor [--config FILE]` runs the executor;
//! `fleetbus-executor sudoers --host H [--config FILE]` prints the host's scoped sudoers lines.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(about = "fleetbus executor: runs jobs on remote hosts over SSH")]
struct Args {
    /// Config file (TOML); FLEETBUS_EXECUTOR__* variables override it.
    #[arg(long, global = true, env = "FLEETBUS_EXECUTOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Print the scoped sudoers lines for a registered host (from the inventory the executor
    /// folded from the log) and the config's privileged verbs.
    Sudoers {
        /// The host id.
        #[arg(long)]
        host: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: fleetbus_executor::Config =
        fleetbus_runtime::config::load(args.config.as_deref(), "executor")
            .context("loading the executor config")?;
    if let Some(Cmd::Sudoers { host }) = args.cmd {
        print!(
            "{}",
            fleetbus_executor::sudoers_from_inventory(&config, &host)?
        );
        return Ok(());
    }
    fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env())?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let shutdown = fleetbus_runtime::shutdown();
        fleetbus_executor::run(config, shutdown).await
    })?;
    Ok(())
}
