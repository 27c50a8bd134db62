//! `fleetbus-agent [--config FILE] [run|once|event …]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetbus_agent::{AgentConfig, NoticeArgs};
use fleetbus_schemas::events::agent::AgentEventKind;
use fleetbus_schemas::{ServiceName, Severity};

#[derive(Parser)]
#[command(
    name = "fleetbus-agent",
    version,
    about = "Reports this host's resources and services to fleetbus ingest"
)]
struct Cli {
    /// Config file (TOML); `FLEETBUS_AGENT__<KEY>` variables override its keys.
    #[arg(short, long, env = "FLEETBUS_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Push a report every interval until SIGINT/SIGTERM (the default).
    Run,
    /// Push one report (after any buffered ones) and exit; exit 1 if it could not be delivered.
    Once,
    /// Push one agent event (notice) and exit.
    Event {
        /// Event kind: heartbeat, service_down, service_up, disk_full, oom_kill, reboot, login,
        /// backup_succeeded, backup_failed, deploy, custom.
        #[arg(long, value_parser = parse_kind)]
        kind: AgentEventKind,
        /// info, warn, error or critical.
        #[arg(long, default_value = "info")]
        severity: Severity,
        /// A message for people (at most 4,096 characters).
        #[arg(long)]
        message: String,
        /// The service it is about.
        #[arg(long)]
        service: Option<ServiceName>,
        /// Extra fields, `KEY=VALUE`, repeatable.
        #[arg(long = "field", value_parser = parse_field)]
        fields: Vec<(String, String)>,
    },
    #[command(flatten)]
    Managed(fleetbus_agent::managed::ManagedCmd),
}

fn parse_kind(s: &str) -> Result<AgentEventKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        format!("unknown kind {s:?}, expected heartbeat, service_down, service_up, disk_full, oom_kill, reboot, login, backup_succeeded, backup_failed, deploy or custom")
    })
}

fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env()) {
        eprintln!("fleetbus-agent: {e}");
        return ExitCode::from(2);
    }
    let config = match AgentConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleetbus-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetbus-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Cmd::Run) {
            Cmd::Run => fleetbus_agent::run(config, fleetbus_runtime::shutdown()).await,
            Cmd::Once => fleetbus_agent::once(config).await.map(|o| {
                println!("delivered {} report(s)", o.delivered);
            }),
            Cmd::Event {
                kind,
                severity,
                message,
                service,
                fields,
            } => {
                let args = NoticeArgs {
                    kind,
                    severity,
                    message,
                    service,
                    fields: fields.into_iter().collect::<BTreeMap<_, _>>(),
                };
                fleetbus_agent::raise(config, args)
                    .await
                    .map(|id| println!("event {id} delivered"))
            }
            Cmd::Managed(cmd) => fleetbus_agent::managed::run_cmd(config, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetbus-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
