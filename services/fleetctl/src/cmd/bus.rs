//! `fleetctl bus init|apply|check`.

use std::path::PathBuf;

use clap::Subcommand;
use fleetbus_bus_config::{Credentials, Retention, ServerConf};

use crate::{CtlError, Ctx};

/// `bus` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Generate the NKey seeds (kept if present) and `<state>/nats/nats.conf` for one node.
    Init {
        /// Client port.
        #[arg(long, default_value_t = 4222)]
        port: u16,
        /// HTTP monitoring port on 127.0.0.1 (0: none).
        #[arg(long, default_value_t = 8222)]
        http_port: u16,
    },
    /// Create or update the streams and consumers; print what changed.
    Apply {
        /// Stream replicas (3 for a 3-node cluster).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Compare the streams and consumers with their definitions; exit 1 on drift.
    Check {
        /// Stream replicas expected.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
}

/// Runs a `bus` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.verb {
        Verb::Init { port, http_port } => init(ctx, port, http_port),
        Verb::Apply { replicas } => {
            // The whole bus: the fleet's streams and consumers and the TAP account's mirror.
            let client = ctx.client().await?;
            let report =
                fleetbus_bus_config::ensure_bus(client, &Retention::default(), replicas).await?;
            ctx.print(&report, &report.to_json());
            if report.has_drift() {
                return Err(CtlError::Drift);
            }
            Ok(())
        }
        Verb::Check { replicas } => {
            let client = ctx.client().await?;
            let report =
                fleetbus_bus_config::check_bus(client, &Retention::default(), replicas).await?;
            ctx.print(&report, &report.to_json());
            if report.has_drift() {
                return Err(CtlError::Drift);
            }
            Ok(())
        }
    }
}

fn init(ctx: &Ctx, port: u16, http_port: u16) -> Result<(), CtlError> {
    let state = &ctx.global.state;
    let nats_dir = state.join("nats");
    let creds = Credentials::ensure(&nats_dir)?;
    let http = (http_port != 0).then_some(http_port);
    let text = ServerConf::single(state, port, http).render(&creds);
    let conf: PathBuf = nats_dir.join("nats.conf");
    let unchanged = std::fs::read_to_string(&conf).is_ok_and(|old| old == text);
    if !unchanged {
        let tmp = nats_dir.join("nats.conf.tmp");
        std::fs::write(&tmp, &text).map_err(|e| CtlError::io(&tmp, e))?;
        std::fs::rename(&tmp, &conf).map_err(|e| CtlError::io(&conf, e))?;
    }
    let seeds: Vec<String> = fleetbus_bus_config::Role::ALL
        .iter()
        .map(|r| creds.seed_path(*r).display().to_string())
        .collect();
    let human = format!(
        "nats config {} ({})\nseeds in {} (mode 0600)\nstart the server: nats-server -c {}",
        conf.display(),
        if unchanged { "unchanged" } else { "written" },
        nats_dir.display(),
        conf.display()
    );
    ctx.print(
        human,
        &serde_json::json!({
            "conf": conf,
            "changed": !unchanged,
            "seeds": seeds,
            "port": port,
            "http_port": http,
        }),
    );
    Ok(())
}
