//! fleetbus executor: turns `fleet.cmd.job.*` commands into work on remote hosts over SSH
//! (russh), and tells what happened only through job events.

pub mod batch;
pub mod error;
pub mod inventory;
pub mod quote;
pub mod resources;
pub mod ssh;
pub mod status;
pub mod sudoers;
pub mod tasks;
pub mod templates;
pub mod verbs;

pub use error::{ExecError, Rejection};
