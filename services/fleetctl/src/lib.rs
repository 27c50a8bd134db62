//! fleetctl: the fleetbus command line for people and scripts.
//!
//! One module per verb group under [`cmd`]; each defines its clap arguments and a `run`
//! function taking the shared [`Ctx`] (global flags, a lazily opened NATS connection as the
//! `admin` user, output mode). Human output by default, `--json` on every verb; exit code 2 for
//! usage errors, 1 for failures.

pub(crate) mod cmd;
pub(crate) mod ctx;
pub(crate) mod error;

pub use ctx::{Ctx, Global};
pub use error::CtlError;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Steer a fleetbus installation: bus setup, agents, hosts, commands, events, queries, the log"
)]
pub struct Cli {
    /// Global flags.
    #[command(flatten)]
    pub global: Global,
    /// The verb.
    #[command(subcommand)]
    pub command: Verb,
}

/// Verb groups.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// NATS setup: credentials and server config, streams and consumers.
    Bus(cmd::bus::Args),
    /// Agent keys and blocking.
    Agent(cmd::agent::Args),
    /// The host and service registry.
    Host(cmd::host::Args),
    /// Publish any command from JSON and wait for its result.
    Send(cmd::send::Args),
    /// Follow events live, or replay them from a stream sequence or a time.
    Tail(cmd::tail::Args),
    /// Ask ingest for a read model (`fleet.q.<model>`).
    Query(cmd::query::Args),
    /// Offline work on ingest's event log file (while ingest is stopped).
    Log(cmd::log::Args),
    /// Dashboard users: add, passwd, role, rm, ls.
    User(cmd::user::Args),
    /// Managed agent configs: ls, show, drift, set, assign, template, pull, push, release, update, passphrase.
    Config(cmd::config::Args),
    /// Files agents download: put, ls, rm.
    Asset(cmd::asset::Args),
    /// Print the scoped sudoers lines a host needs for its allowlisted actions.
    Sudoers(cmd::sudoers::Args),
    /// Run a privileged verb (`VERB-NOUN '{json}'`) on hosts and wait for its jobs.
    #[command(name = "do")]
    Do(cmd::verb::Args),
    /// Schedules (scheduler): create, update, pause, resume, rm, ls.
    Schedule(cmd::schedule::Args),
    /// Heartbeat and deadline checks (scheduler): heartbeat, deadline, pause, resume, rm, ls.
    Check(cmd::check::Args),
    /// Notification rules, recipients, channels and mutes (notifier).
    Notify(cmd::notify::Args),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let ctx = Ctx::new(cli.global);
    match cli.command {
        Verb::Bus(a) => cmd::bus::run(&ctx, a).await,
        Verb::Agent(a) => cmd::agent::run(&ctx, a).await,
        Verb::Host(a) => cmd::host::run(&ctx, a).await,
        Verb::Send(a) => cmd::send::run(&ctx, a).await,
        Verb::Tail(a) => cmd::tail::run(&ctx, a).await,
        Verb::Query(a) => cmd::query::run(&ctx, a).await,
        Verb::Log(a) => cmd::log::run(&ctx, a).await,
        Verb::User(a) => cmd::user::run(&ctx, a).await,
        Verb::Config(a) => cmd::config::run(&ctx, a).await,
        Verb::Asset(a) => cmd::asset::run(&ctx, a).await,
        Verb::Sudoers(a) => cmd::sudoers::run(&ctx, a).await,
        Verb::Do(a) => cmd::verb::run(&ctx, a).await,
        Verb::Schedule(a) => cmd::schedule::run(&ctx, a).await,
        Verb::Check(a) => cmd::check::run(&ctx, a).await,
        Verb::Notify(a) => cmd::notify::run(&ctx, a).await,
    }
}
