//! The fleetbus scheduler: cron with time zones (exactly one firing per slot, even with several
//! schedulers running), agent staleness, heartbeat and deadline checks, and retention.
//!
//! It reads the log (the `EVENTS` stream) from the start into a private cache ([`core::Core`]),
//! then takes `schedule` and `check` commands from its work queues and decides at the instants
//! its [`clock::Clock`] tells. See `README.md` for what fires when.

pub mod bus;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod core;
pub mod ids;
pub(crate) mod slots;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock, TestClock, WarpClock};
pub use config::Config;

/// Everything that stops the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The config is unusable.
    #[error("config: {0}")]
    Config(String),
    /// Connecting to the bus failed.
    #[error(transparent)]
    Runtime(#[from] fleetbus_runtime::RuntimeError),
    /// A JetStream call failed.
    #[error("jetstream {what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The server's or client's words.
        reason: String,
    },
}

impl SchedulerError {
    pub(crate) fn js(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SchedulerError::JetStream {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Runs the scheduler on the system clock until `shutdown` is cancelled.
/// (or the warped clock of `config.warp`, for tests and demos).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    let clock = config.clock()?;
    run_with_clock(config, clock, shutdown).await
}

/// Runs the scheduler on `clock` until `shutdown` is cancelled.
pub async fn run_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let core = config.core()?;
    let client = fleetbus_runtime::nats::connect(&config.nats, &shutdown).await?;
    let sweep = std::time::Duration::from_millis(config.liveness.sweep_ms);
    bus::Scheduler::new(client, clock, core, sweep)
        .run(shutdown)
        .await
}
