//! `fleetbus-notifier`: parse config, init tracing, run.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "fleetbus notifier: alerts become notifications")]
struct Args {
    /// Config file (TOML). Without it: defaults plus FLEETBUS_NOTIFIER__* overrides.
    #[arg(long, env = "FLEETBUS_NOTIFIER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env())?;
    let config = match fleetbus_notifier::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleetbus-notifier: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = fleetbus_runtime::shutdown();
    fleetbus_notifier::run(config, shutdown).await?;
    Ok(())
}
