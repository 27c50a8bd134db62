//! NATS as configuration for fleetbus: users and permissions ([`users`]), `nats-server` config
//! text and NKey credentials ([`conf`]), and declarative JetStream streams and consumers with an
//! idempotent `ensure` that reports drift ([`streams`]).

pub mod conf;
pub mod streams;
pub mod users;

use std::path::{Path, PathBuf};

pub use conf::{Credentials, ServerConf};
pub use streams::{
    check, check_bus, definitions, ensure, ensure_bus, tap_definitions, CommandArea, Definitions,
    Report, Retention,
};
pub use users::{Account, Permissions, Role};

/// Everything that can go wrong in bus configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusConfigError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A seed file is unusable (the seed itself is never included).
    #[error("nkey seed {}: {reason}", path.display())]
    Seed {
        /// The seed file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A role name that is not one of the fleetbus users.
    #[error("unknown NATS user role '{0}', expected one of ingest, executor, scheduler, notifier, web, admin, tap")]
    UnknownRole(String),
    /// A JetStream API call failed.
    #[error("jetstream {what}: {reason}")]
    JetStream {
        /// The operation (e.g. `create stream EVENTS`).
        what: String,
        /// The server's or client's reason.
        reason: String,
    },
}

impl BusConfigError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        BusConfigError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
