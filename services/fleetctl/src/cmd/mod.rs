//! One module per verb group. Each has `Args` (clap) and `run(&Ctx, Args)`.

pub(crate) mod agent;
pub(crate) mod asset;
pub(crate) mod bus;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod host;
pub(crate) mod log;
pub(crate) mod notify;
pub(crate) mod query;
pub(crate) mod schedule;
pub(crate) mod send;
pub(crate) mod sudoers;
pub(crate) mod tail;
pub(crate) mod user;
pub(crate) mod verb;
