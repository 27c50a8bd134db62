//! `fleetbus-web`: the dashboard. `fleetbus-web [--config web.toml]`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "fleetbus web dashboard and HTTP API")]
struct Args {
    /// Config file (TOML); `FLEETBUS_WEB__*` variables override it.
    #[arg(long, env = "FLEETBUS_WEB_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: fleetbus_web::WebConfig =
        fleetbus_runtime::config::load(args.config.as_deref(), "web")?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("web config: {e}"))?;
    fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env())?;
    let shutdown = fleetbus_runtime::shutdown();
    fleetbus_web::run(config, shutdown).await?;
    Ok(())
}
