//! fleetbus executor: turns `fleet.cmd.job.*` commands into work on remote hosts over SSH
//! (russh), and tells what happened only through job events.

pub mod error;
pub mod quote;
pub mod resources;
pub mod ssh;
pub mod status;
pub mod templates;

pub use error::{ExecError, Rejection};
