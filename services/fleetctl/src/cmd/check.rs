//! `fleetctl check heartbeat|deadline|pause|resume|rm|ls` (the scheduler's `fleet.cmd.check.*`).
//!
//! `ls` folds the check events of a replay of the `EVENTS` stream (see
//! [`super::schedule::replay`], a `StreamReader` catch-up).

use std::collections::BTreeMap;

use clap::Subcommand;
use fleetbus_schemas::commands::CheckCommand;
use fleetbus_schemas::events::check::{CheckEvent, CheckKind, CheckSpec, CheckState};
use fleetbus_schemas::{CheckId, Command, Envelope, Event, HostId};

use super::agent::report;
use super::schedule::replay;
use crate::{CtlError, Ctx};

/// `check` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Define (or change) a heartbeat check: expects a ping every `--period` seconds (admin).
    Heartbeat {
        /// The check id.
        check: CheckId,
        /// Expected seconds between pings.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        period: u64,
        /// Seconds of slack after the period before the check is down.
        #[arg(long, default_value_t = 0)]
        grace: u64,
        /// A host whose agent may ping the check (repeat for several). Without one, no agent
        /// may ping it.
        #[arg(long = "ping-host")]
        ping_hosts: Vec<HostId>,
    },
    /// Define (or change) a deadline check: an agent event of `--kind` from `--host` by a local
    /// time every day (admin).
    Deadline {
        /// The check id.
        check: CheckId,
        /// The agent event kind expected, e.g. `backup_succeeded`.
        #[arg(long)]
        kind: String,
        /// The host it must come from.
        #[arg(long)]
        host: HostId,
        /// Local time of day, `HH:MM`.
        #[arg(long, value_parser = parse_by)]
        by: String,
        /// IANA time zone of `--by`.
        #[arg(long = "tz", default_value = "UTC")]
        time_zone: String,
        /// Another host whose agent may ping the check (the `--host` agent always may).
        #[arg(long = "ping-host")]
        ping_hosts: Vec<HostId>,
    },
    /// Pause a check: it raises nothing (operator).
    Pause {
        /// The check.
        check: CheckId,
    },
    /// Resume a paused check; it starts again as `new` (operator).
    Resume {
        /// The check.
        check: CheckId,
    },
    /// Delete a check (admin).
    Rm {
        /// The check.
        check: CheckId,
    },
    /// List checks with their last state, folded from the check events in `EVENTS`.
    Ls,
}

fn parse_by(s: &str) -> Result<String, String> {
    fleetbus_schemas::commands::notify::parse_hhmm(s)?;
    Ok(s.to_owned())
}

/// A check as the log knows it.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    spec: CheckSpec,
    state: CheckState,
}

fn fold(events: &[Envelope]) -> BTreeMap<CheckId, Row> {
    let mut rows: BTreeMap<CheckId, Row> = BTreeMap::new();
    for env in events {
        let Event::Check(ev) = &env.event else {
            continue;
        };
        match ev {
            CheckEvent::Defined(spec) => {
                let state = rows.get(&spec.check).map_or(CheckState::New, |r| r.state);
                rows.insert(
                    spec.check.clone(),
                    Row {
                        spec: spec.clone(),
                        state,
                    },
                );
            }
            CheckEvent::StateChanged { check, to, .. } => {
                if let Some(r) = rows.get_mut(check) {
                    r.state = *to;
                }
            }
            CheckEvent::Deleted { check } => {
                rows.remove(check);
            }
            _ => {}
        }
    }
    rows
}

fn kind_text(k: &CheckKind) -> String {
    match k {
        CheckKind::Heartbeat { period_s, grace_s } => {
            format!("heartbeat every {period_s}s, grace {grace_s}s")
        }
        CheckKind::Deadline {
            event_kind,
            host,
            by,
            time_zone,
        } => format!("deadline {event_kind} from {host} by {by} {time_zone}"),
    }
}

fn state_text(s: CheckState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Runs a `check` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let send = |c: CheckCommand| report(ctx, Command::Check(c));
    match args.verb {
        Verb::Heartbeat {
            check,
            period,
            grace,
            ping_hosts,
        } => {
            send(CheckCommand::Define(CheckSpec {
                check,
                kind: CheckKind::Heartbeat {
                    period_s: period,
                    grace_s: grace,
                },
                ping_hosts,
            }))
            .await
        }
        Verb::Deadline {
            check,
            kind,
            host,
            by,
            time_zone,
            ping_hosts,
        } => {
            send(CheckCommand::Define(CheckSpec {
                check,
                kind: CheckKind::Deadline {
                    event_kind: kind,
                    host,
                    by,
                    time_zone,
                },
                ping_hosts,
            }))
            .await
        }
        Verb::Pause { check } => send(CheckCommand::Pause { check }).await,
        Verb::Resume { check } => send(CheckCommand::Resume { check }).await,
        Verb::Rm { check } => send(CheckCommand::Delete { check }).await,
        Verb::Ls => {
            let filters: Vec<String> = ["defined", "deleted", "state_changed"]
                .iter()
                .map(|t| format!("fleet.evt.check.*.{t}"))
                .collect();
            let rows = fold(&replay(ctx, &filters).await?);
            let mut human = format!("{:<24} {:<8} {}\n", "CHECK", "STATE", "WATCHES");
            for (id, r) in &rows {
                human.push_str(&format!(
                    "{id:<24} {:<8} {}\n",
                    state_text(r.state),
                    kind_text(&r.spec.kind)
                ));
            }
            let json: Vec<&Row> = rows.values().collect();
            ctx.print(human, &json);
            Ok(())
        }
    }
}
