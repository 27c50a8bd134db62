//! `fleetctl schedule create|update|pause|resume|rm|ls` (the scheduler's `fleet.cmd.schedule.*`).
//!
//! `ls` folds the schedule events of a replay of the `EVENTS` stream (one ordered consumer per
//! event type, merged by stream sequence), so it needs only NATS, not ingest.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use fleetbus_runtime::reader::StreamReader;
use fleetbus_schemas::commands::{ScheduleCommand, Targets};
use fleetbus_schemas::events::schedule::{
    MissedPolicy, ScheduleAction, ScheduleEvent, ScheduleSpec,
};
use fleetbus_schemas::{Command, Envelope, Event, EventId, HostId, ScheduleId, TaskId};
use tokio_util::sync::CancellationToken;

use super::agent::report;
use crate::{CtlError, Ctx};

/// `schedule` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Create a schedule (admin). Exactly one action: `--poll-*`, `--task` or `--command-file`.
    Create(SpecArgs),
    /// Replace a schedule's definition (admin); same flags as `create`.
    Update(SpecArgs),
    /// Pause a schedule: its slots neither fire nor count as missed (operator).
    Pause {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// Resume a paused schedule (operator).
    Resume {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// Delete a schedule (admin).
    Rm {
        /// The schedule.
        schedule: ScheduleId,
    },
    /// List schedules, folded from the schedule events in `EVENTS`.
    Ls,
}

/// Missed-slot policy on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Missed {
    /// Forget slots missed while the scheduler was down.
    Skip,
    /// Fire once for all of them.
    CatchUpOnce,
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("action")
        .required(true)
        .multiple(true)
        .args(["poll_tag", "poll_host", "poll_role", "task", "command_file"])
))]
struct SpecArgs {
    /// The schedule id.
    schedule: ScheduleId,
    /// Cron expression with seconds, e.g. `0 */5 * * * *`.
    #[arg(long)]
    cron: String,
    /// IANA time zone of the cron expression.
    #[arg(long = "tz", default_value = "UTC")]
    time_zone: String,
    /// Poll service status on hosts with this tag (repeatable).
    #[arg(long, conflicts_with_all = ["task", "command_file"])]
    poll_tag: Vec<String>,
    /// Poll service status on this host (repeatable).
    #[arg(long, conflicts_with_all = ["task", "command_file"])]
    poll_host: Vec<HostId>,
    /// Poll service status on hosts with this role (repeatable).
    #[arg(long, conflicts_with_all = ["task", "command_file"])]
    poll_role: Vec<String>,
    /// Run this saved task (with `--host`/`--tag`/`--role` targets).
    #[arg(long, conflicts_with = "command_file")]
    task: Option<TaskId>,
    /// A task parameter `key=value`; the value is JSON when it parses as JSON, else a string.
    #[arg(long = "param", requires = "task", value_parser = parse_param)]
    params: Vec<(String, serde_json::Value)>,
    /// Task target: a host (repeatable).
    #[arg(long, requires = "task")]
    host: Vec<HostId>,
    /// Task target: hosts with this tag (repeatable).
    #[arg(long, requires = "task")]
    tag: Vec<String>,
    /// Task target: hosts with this role (repeatable).
    #[arg(long, requires = "task")]
    role: Vec<String>,
    /// Publish this command (JSON, as for `fleetctl send`; `-` = standard input) at each slot.
    #[arg(long)]
    command_file: Option<PathBuf>,
    /// What to do with slots missed while the scheduler was down.
    #[arg(long, value_enum, default_value = "catch-up-once")]
    missed: Missed,
}

fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?}: empty key"));
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

/// Reads a file, or standard input for `-`, bounded by the bus's message size. Returns the text
/// and a description naming its source for error messages.
pub(crate) fn read_input(path: &Path, kind: &str) -> Result<(String, String), CtlError> {
    let (text, what) = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(fleetbus_schemas::MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| CtlError::io("-", e))?;
        (s, format!("{kind} from standard input"))
    } else {
        let s = std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))?;
        (s, format!("{kind} in {}", path.display()))
    };
    if text.len() > fleetbus_schemas::MAX_MESSAGE_BYTES {
        return Err(CtlError::Input {
            what,
            reason: format!("larger than {} bytes", fleetbus_schemas::MAX_MESSAGE_BYTES),
        });
    }
    Ok((text, what))
}

impl SpecArgs {
    fn into_spec(self) -> Result<ScheduleSpec, CtlError> {
        let task_only = !self.params.is_empty()
            || !self.host.is_empty()
            || !self.tag.is_empty()
            || !self.role.is_empty();
        if task_only && self.task.is_none() {
            return Err(CtlError::Usage(
                "--param, --host, --tag and --role belong to --task (status polls take --poll-host, --poll-tag, --poll-role)".into(),
            ));
        }
        let action = if let Some(task) = self.task {
            let targets = Targets {
                hosts: self.host,
                tags: self.tag,
                roles: self.role,
            };
            if targets.is_empty() {
                return Err(CtlError::Usage(
                    "--task needs targets: --host H, --tag T or --role R".into(),
                ));
            }
            ScheduleAction::RunTask {
                task,
                params: self.params.into_iter().collect(),
                targets,
            }
        } else if let Some(file) = self.command_file {
            let (text, what) = read_input(&file, "command JSON")?;
            let command = super::send::parse_command(&text, &what)?;
            ScheduleAction::Publish {
                command: Box::new(command),
            }
        } else {
            ScheduleAction::PollStatus {
                targets: Targets {
                    hosts: self.poll_host,
                    tags: self.poll_tag,
                    roles: self.poll_role,
                },
            }
        };
        Ok(ScheduleSpec {
            schedule: self.schedule,
            cron: self.cron,
            time_zone: self.time_zone,
            action,
            missed: match self.missed {
                Missed::Skip => MissedPolicy::Skip,
                Missed::CatchUpOnce => MissedPolicy::CatchUpOnce,
            },
        })
    }
}

/// Replays the `EVENTS` stream's events on `filters`, in stream order, up to its end as it was
/// when called (`fleetbus_runtime::reader::StreamReader::catch_up`, the one replay).
pub(crate) async fn replay(ctx: &Ctx, filters: &[String]) -> Result<Vec<Envelope>, CtlError> {
    let stream = fleetbus_schemas::subjects::EVENTS_STREAM;
    let js = ctx.jetstream().await?;
    let stop = CancellationToken::new();
    let mut reader = StreamReader::new(
        js,
        stream,
        format!("fleetctl-replay-{}", EventId::new()),
        1,
        stop.clone(),
    )
    .filter_subjects(filters.iter().cloned());
    let mut all = Vec::new();
    let replayed = tokio::time::timeout(
        ctx.timeout(),
        reader.catch_up(
            |msg| match fleetbus_schemas::decode::<Envelope>(&msg.payload) {
                Ok(env) => all.push(env),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable event skipped");
                }
            },
        ),
    )
    .await;
    stop.cancel();
    match replayed {
        Ok(_) => Ok(all),
        Err(_) => Err(CtlError::Timeout(format!(
            "replay of {stream} did not finish within {}s (is the stream there? run `fleetctl bus apply`)",
            ctx.global.timeout
        ))),
    }
}

/// A schedule as the log knows it.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    spec: ScheduleSpec,
    paused: bool,
    /// The actor of the last create/update: the schedule acts as this person.
    owner: String,
}

fn fold(events: &[Envelope]) -> BTreeMap<ScheduleId, Row> {
    let mut rows = BTreeMap::new();
    for env in events {
        let Event::Schedule(ev) = &env.event else {
            continue;
        };
        match ev {
            ScheduleEvent::Created(spec) | ScheduleEvent::Updated(spec) => {
                let paused = rows.get(&spec.schedule).is_some_and(|r: &Row| r.paused);
                rows.insert(
                    spec.schedule.clone(),
                    Row {
                        spec: spec.clone(),
                        paused,
                        owner: env.actor.name.clone(),
                    },
                );
            }
            ScheduleEvent::Paused { schedule } => {
                if let Some(r) = rows.get_mut(schedule) {
                    r.paused = true;
                }
            }
            ScheduleEvent::Resumed { schedule } => {
                if let Some(r) = rows.get_mut(schedule) {
                    r.paused = false;
                }
            }
            ScheduleEvent::Deleted { schedule } => {
                rows.remove(schedule);
            }
            _ => {}
        }
    }
    rows
}

fn targets_text(t: &Targets) -> String {
    let mut parts = Vec::new();
    parts.extend(t.hosts.iter().map(|h| format!("host={h}")));
    parts.extend(t.tags.iter().map(|x| format!("tag={x}")));
    parts.extend(t.roles.iter().map(|x| format!("role={x}")));
    parts.join(",")
}

fn action_text(a: &ScheduleAction) -> String {
    match a {
        ScheduleAction::PollStatus { targets } => format!("poll {}", targets_text(targets)),
        ScheduleAction::RunTask { task, targets, .. } => {
            format!("task {task} {}", targets_text(targets))
        }
        ScheduleAction::Publish { command } => {
            format!("publish {}.{}", command.area(), command.verb())
        }
    }
}

/// Runs a `schedule` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let send = |c: ScheduleCommand| report(ctx, Command::Schedule(c));
    match args.verb {
        Verb::Create(spec) => send(ScheduleCommand::Create(spec.into_spec()?)).await,
        Verb::Update(spec) => send(ScheduleCommand::Update(spec.into_spec()?)).await,
        Verb::Pause { schedule } => send(ScheduleCommand::Pause { schedule }).await,
        Verb::Resume { schedule } => send(ScheduleCommand::Resume { schedule }).await,
        Verb::Rm { schedule } => send(ScheduleCommand::Delete { schedule }).await,
        Verb::Ls => {
            let filters: Vec<String> = ["created", "updated", "paused", "resumed", "deleted"]
                .iter()
                .map(|t| format!("fleet.evt.schedule.*.{t}"))
                .collect();
            let rows = fold(&replay(ctx, &filters).await?);
            let mut human = format!(
                "{:<20} {:<16} {:<18} {:<14} {:<7} {:<12} {}\n",
                "SCHEDULE", "CRON", "TZ", "MISSED", "STATE", "OWNER", "ACTION"
            );
            for (id, r) in &rows {
                let missed = match r.spec.missed {
                    MissedPolicy::Skip => "skip",
                    MissedPolicy::CatchUpOnce => "catch-up-once",
                };
                human.push_str(&format!(
                    "{id:<20} {:<16} {:<18} {missed:<14} {:<7} {:<12} {}\n",
                    r.spec.cron,
                    r.spec.time_zone,
                    if r.paused { "paused" } else { "active" },
                    r.owner,
                    action_text(&r.spec.action)
                ));
            }
            let json: Vec<&Row> = rows.values().collect();
            ctx.print(human, &json);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_when_they_parse_else_strings() {
        assert_eq!(
            parse_param("n=3").unwrap(),
            ("n".into(), serde_json::json!(3))
        );
        assert_eq!(
            parse_param("path=/var/log").unwrap(),
            ("path".into(), serde_json::json!("/var/log"))
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }
}
