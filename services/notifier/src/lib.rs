//! fleetbus notifier: folds the event log into alert transitions, matches them against rules,
//! applies noise control (cooldowns, mutes and maintenance windows, host-down dependencies,
//! blocked agents, recipient preferences, burst digests), delivers through webhook, Slack, ntfy,
//! email and NATS channels with retries, and records every decision as an event.
//!
//! See `README.md` beside this crate for rules, channels and the exactly-once semantics.

pub(crate) mod alerts;
pub(crate) mod config;
pub(crate) mod deliver;
pub mod engine;
pub(crate) mod render;
pub(crate) mod service;

pub use config::{Config, Secrets};
pub use service::run;

use std::path::PathBuf;

/// Everything that can stop the notifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifierError {
    /// The config file or an override is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The secrets file is unusable (the message never contains a secret value).
    #[error("secrets file {}: {reason}", path.display())]
    Secrets {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The shared runtime failed (NATS connect, tracing).
    #[error(transparent)]
    Runtime(#[from] fleetbus_runtime::RuntimeError),
    /// A JetStream or NATS operation failed.
    #[error("nats: {0}")]
    Nats(String),
}
