//! fleetctl's errors and their exit codes.

use std::path::PathBuf;

/// Everything fleetctl reports to its user. The text is printed as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The command line is wrong in a way clap could not see (exit 2).
    #[error("{0}")]
    Usage(String),
    /// An input file or argument could not be parsed.
    #[error("{what}: {reason}")]
    Input {
        /// What was being read (`command JSON from -`, `hosts.toml`, …).
        what: String,
        /// What was wrong, with the path of the offending field.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The NATS connection could not be made.
    #[error("cannot connect to nats: {0}")]
    Connect(String),
    /// A NATS or JetStream operation failed.
    #[error("{what}: {reason}")]
    Nats {
        /// The operation.
        what: String,
        /// Why.
        reason: String,
    },
    /// An SSH target could not be read (host key scan).
    #[error("{what}: {reason}")]
    Ssh {
        /// The operation.
        what: String,
        /// Why.
        reason: String,
    },
    /// Nothing answered in time.
    #[error("{0}")]
    Timeout(String),
    /// A command was rejected.
    #[error("command {id} rejected by {component} ({kind}): {message}")]
    Rejected {
        /// Command id.
        id: String,
        /// Who rejected it.
        component: String,
        /// The typed reason.
        kind: String,
        /// Why.
        message: String,
    },
    /// `do`: some jobs did not succeed (their results have been printed).
    #[error("{failed} of {total} jobs did not succeed (see above)")]
    JobsFailed {
        /// Jobs that failed, were cancelled or not re-run.
        failed: usize,
        /// Jobs scheduled.
        total: usize,
    },
    /// A query answered with an error.
    #[error("query {model}: {message}")]
    Query {
        /// The model.
        model: String,
        /// The error.
        message: String,
    },
    /// Bus configuration failed.
    #[error(transparent)]
    BusConfig(#[from] fleetbus_bus_config::BusConfigError),
    /// `bus check` found drift (the report has been printed).
    #[error("the bus differs from its definitions (see above); run `fleetctl bus apply`")]
    Drift,
    /// The event log could not be used.
    #[error(transparent)]
    Log(#[from] fleetbus_log::LogError),
    /// `log verify` found a bad entry, snapshot or index row (the report has been printed).
    #[error("log verification failed: {problem}")]
    LogBroken {
        /// The first bad entry or snapshot (for an index row: the entry it is about).
        seq: u64,
        /// What is bad and what mismatched (`<part> <seq>: …`).
        problem: String,
    },
    /// `log rebuild` found a snapshot that differs from the refold.
    #[error("rebuild differs from the stored projections at seq {0}")]
    RebuildDiffers(u64),
}

impl CtlError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            _ => 1,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> CtlError {
        CtlError::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn nats(what: impl Into<String>, e: impl std::fmt::Display) -> CtlError {
        CtlError::Nats {
            what: what.into(),
            reason: e.to_string(),
        }
    }
}
