//! One module per verb group. Each has `Args` (clap) and `run(&Ctx, Args)`.

pub mod agent;
pub mod asset;
pub mod bus;
pub mod check;
pub mod config;
pub mod host;
pub mod log;
pub mod notify;
pub mod query;
pub mod schedule;
pub mod send;
pub mod sudoers;
pub mod tail;
pub mod user;
pub mod verb;
