//! The executor's errors. Rejections of commands are typed ([`Rejection`]) so edges can map them
//! to 404/403/409/400; everything else is an [`ExecError`].

use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::JobId;

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The host, service, task, verb or job it names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The actor may not do this here (role, allowlist, host setting).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The same work is already queued or running.
    #[error("duplicate: {message}")]
    Duplicate {
        /// The job already doing it.
        job: JobId,
        /// What it is.
        message: String,
    },
    /// A field has an invalid value.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Rejection {
    /// The wire kind.
    pub fn kind(&self) -> RejectKind {
        match self {
            Rejection::NotFound(_) => RejectKind::NotFound,
            Rejection::Forbidden(_) => RejectKind::Forbidden,
            Rejection::Duplicate { job, .. } => RejectKind::Duplicate { job: *job },
            Rejection::Invalid(_) => RejectKind::Invalid,
        }
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> String {
        match self {
            Rejection::NotFound(m) | Rejection::Forbidden(m) | Rejection::Invalid(m) => m.clone(),
            Rejection::Duplicate { message, .. } => message.clone(),
        }
    }
}

/// Everything else that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A value is not acceptable (becomes a [`Rejection::Invalid`] at the edge).
    #[error("{0}")]
    Invalid(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The host presented a key other than the pinned one.
    #[error("host key mismatch for {host}: pinned {expected}, presented {presented}; refusing to connect (run `fleetctl host trust {host}` after checking the new key)")]
    HostKeyMismatch {
        /// The host.
        host: String,
        /// The pinned fingerprint.
        expected: String,
        /// The presented fingerprint.
        presented: String,
    },
    /// Strict policy and no key pinned.
    #[error("host key of {host} ({presented}) is not pinned and the host's policy is strict; run `fleetctl host trust {host}`")]
    HostKeyUnknown {
        /// The host.
        host: String,
        /// The presented fingerprint.
        presented: String,
    },
    /// Key exchange found no algorithm both sides accept.
    #[error("no common algorithm with {addr}: {detail} (fleetbus accepts only modern algorithms: curve25519/ECDH/DH-SHA2 key exchange, ed25519/ECDSA/RSA-SHA2 host keys, AES-GCM/CTR or ChaCha20 ciphers; no ssh-rsa SHA-1, no CBC)")]
    NoCommonAlgorithm {
        /// host:port.
        addr: String,
        /// Which kind and both lists.
        detail: String,
    },
    /// Authentication was refused.
    #[error("authentication as {user} on {addr} failed: {reason}")]
    Auth {
        /// The login user.
        user: String,
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The SSH session failed after it was set up.
    #[error("ssh session to {addr} failed: {reason}")]
    Session {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A deadline passed.
    #[error("{what} timed out after {secs} s")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        secs: u64,
    },
    /// A key file could not be read.
    #[error("cannot load key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Local file I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is wrong.
    #[error("config: {0}")]
    Config(String),
    /// NATS or JetStream failed.
    #[error("bus: {0}")]
    Bus(String),
    /// A NATS or JetStream operation failed; the cause is kept for the error chain.
    #[error("bus: {context}{source}{hint}")]
    Nats {
        /// What was being done (`"stream X: "`), or empty.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What to do about it (`" (run bus-config ensure)"`), or empty.
        hint: &'static str,
    },
    /// Publishing or reading the bus failed.
    #[error(transparent)]
    BusIo(#[from] fleetbus_runtime::bus::BusError),
}

impl From<fleetbus_remote::RemoteError> for ExecError {
    /// Each remote error becomes the executor error of the same name and text.
    fn from(e: fleetbus_remote::RemoteError) -> Self {
        use fleetbus_remote::RemoteError as R;
        match e {
            R::Invalid(m) => ExecError::Invalid(m),
            R::Connect { addr, reason } => ExecError::Connect { addr, reason },
            R::Session { addr, reason } => ExecError::Session { addr, reason },
            R::Timeout { what, secs } => ExecError::Timeout { what, secs },
            other => ExecError::Invalid(other.to_string()),
        }
    }
}

impl ExecError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
        let what = what.into();
        move |source| ExecError::Io { what, source }
    }
}
