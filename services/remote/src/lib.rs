//! What fleetbus sends to remote hosts, and how it knows them: allowlisted command templates
//! with typed, validated arguments and shell quoting ([`templates`], [`tasks`], [`quote`]), the
//! scoped sudoers lines those commands need ([`sudoers`]), and host-key reading ([`hostkey`]).
//!
//! A library, not a service: the executor runs these commands over SSH; `fleetctl` prints
//! sudoers files and scans host keys with the same code, without importing the executor.

pub mod hostkey;
pub mod quote;
pub mod sudoers;
pub mod tasks;
pub mod templates;

/// Why a command could not be built or a host key could not be read. The executor turns each
/// variant into its own error of the same name and text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A value is not acceptable (bad unit name, path, parameter, template, user name, …).
    #[error("{0}")]
    Invalid(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `address:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The SSH handshake ended without what was needed.
    #[error("ssh session to {addr} failed: {reason}")]
    Session {
        /// `address:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Something took too long.
    #[error("{what} timed out after {secs} s")]
    Timeout {
        /// What.
        what: String,
        /// The limit.
        secs: u64,
    },
}
