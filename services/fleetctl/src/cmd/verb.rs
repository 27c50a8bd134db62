//! `fleetctl do VERB-NOUN '{json}' --host H|--tag T|--role R`: runs a privileged verb through
//! the executor and waits for every job it schedules to finish.

use std::collections::BTreeMap;

use fleetbus_schemas::commands::{JobCommand, Targets};
use fleetbus_schemas::events::job::{JobEvent, JobOutcome};
use fleetbus_schemas::{Command, Envelope, Event, HostId, JobId};
use futures::StreamExt;

use crate::{CtlError, Ctx};

/// `do` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The verb, e.g. `RESTART-SERVICE`.
    verb: String,
    /// Its arguments as a JSON object, e.g. `'{"service":"web"}'`.
    #[arg(default_value = "{}")]
    args: String,
    /// A target host (repeatable).
    #[arg(long = "host")]
    hosts: Vec<HostId>,
    /// Hosts with this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Hosts with this role (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
}

/// How one job ended.
#[derive(Debug, serde::Serialize)]
struct Finished {
    job: JobId,
    host: Option<HostId>,
    state: &'static str,
    outcome: Option<JobOutcome>,
    reason: Option<String>,
}

fn valid_verb(v: &str) -> bool {
    !v.is_empty()
        && v.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Runs `do`.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    if !valid_verb(&args.verb) {
        return Err(CtlError::Usage(format!(
            "verb {:?} must look like VERB-NOUN in capitals, e.g. RESTART-SERVICE",
            args.verb
        )));
    }
    let verb_args: serde_json::Value =
        serde_json::from_str(&args.args).map_err(|e| CtlError::Input {
            what: "verb arguments".into(),
            reason: e.to_string(),
        })?;
    if !verb_args.is_object() {
        return Err(CtlError::Input {
            what: "verb arguments".into(),
            reason: "expected a JSON object, e.g. '{\"service\":\"web\"}'".into(),
        });
    }
    let targets = Targets {
        hosts: args.hosts,
        tags: args.tags,
        roles: args.roles,
    };
    if targets.is_empty() {
        return Err(CtlError::Usage(
            "name at least one target: --host H, --tag T or --role R".into(),
        ));
    }
    // Follow job events before sending, so no finish can slip past between the first
    // `scheduled` and the subscription.
    let client = ctx.client().await?;
    let mut jobs_sub = client
        .subscribe("fleet.evt.job.>")
        .await
        .map_err(|e| CtlError::nats("subscribe fleet.evt.job.>", e))?;
    client
        .flush()
        .await
        .map_err(|e| CtlError::nats("flush", e))?;
    let outcome = ctx
        .send(Command::Job(JobCommand::RunVerb {
            verb: args.verb.clone(),
            args: verb_args,
            targets,
        }))
        .await?;
    let command_id = outcome.command.id;

    // Every job this command scheduled, and how each ended.
    let mut scheduled: BTreeMap<JobId, HostId> = BTreeMap::new();
    let mut finished: BTreeMap<JobId, Finished> = BTreeMap::new();
    let quiet = ctx.global.json;
    let handle = |scheduled: &mut BTreeMap<JobId, HostId>,
                  finished: &mut BTreeMap<JobId, Finished>,
                  env: &Envelope| {
        if env.causation != Some(command_id) {
            return;
        }
        let Event::Job(e) = &env.event else { return };
        match e {
            JobEvent::Scheduled { job, host, .. } => {
                let new = scheduled.insert(*job, host.clone()).is_none();
                if new && !quiet {
                    println!("scheduled job {job} on {host}");
                }
            }
            JobEvent::Succeeded { job, outcome } => {
                finished.insert(*job, done(*job, "succeeded", Some(outcome.clone()), None));
            }
            JobEvent::Failed {
                job,
                outcome,
                reason,
                ..
            } => {
                finished.insert(
                    *job,
                    done(*job, "failed", Some(outcome.clone()), Some(reason.clone())),
                );
            }
            JobEvent::Cancelled { job, outcome } => {
                finished.insert(*job, done(*job, "cancelled", Some(outcome.clone()), None));
            }
            JobEvent::Restarted {
                job,
                rerun: false,
                reason,
            } => {
                finished.insert(*job, done(*job, "failed", None, Some(reason.clone())));
            }
            _ => {}
        }
    };
    handle(&mut scheduled, &mut finished, &outcome.event);
    let all_done = |scheduled: &BTreeMap<JobId, HostId>, finished: &BTreeMap<JobId, Finished>| {
        !scheduled.is_empty() && scheduled.keys().all(|j| finished.contains_key(j))
    };
    let wait = async {
        // The executor schedules every job of one command before any can finish, so once
        // each scheduled job has ended the command is complete.
        while !all_done(&scheduled, &finished) {
            let Some(msg) = jobs_sub.next().await else {
                return Err(CtlError::nats("wait for jobs", "subscription closed"));
            };
            if let Ok(env) = fleetbus_schemas::decode::<Envelope>(&msg.payload) {
                handle(&mut scheduled, &mut finished, &env);
            }
        }
        Ok(())
    };
    tokio::time::timeout(ctx.timeout(), wait)
        .await
        .map_err(|_| {
            CtlError::Timeout(format!(
                "command {command_id}: not every job finished within {}s (raise --timeout; follow with `fleetctl tail --subject 'fleet.evt.job.>'`)",
                ctx.global.timeout
            ))
        })??;

    let mut results: Vec<Finished> = finished.into_values().collect();
    for r in &mut results {
        r.host = scheduled.get(&r.job).cloned();
    }
    let failed = results.iter().filter(|r| r.state != "succeeded").count();
    let mut human = String::new();
    for r in &results {
        let exit = r
            .outcome
            .as_ref()
            .and_then(|o| o.exit_code)
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        human.push_str(&format!(
            "job {} on {}: {} (exit code {exit}){}\n",
            r.job,
            r.host.as_ref().map(|h| h.as_str()).unwrap_or("?"),
            r.state,
            r.reason
                .as_ref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ));
        if let Some(o) = &r.outcome {
            let tail = tail_lines(&o.tail, 20);
            if !tail.is_empty() {
                human.push_str(&tail);
                if !tail.ends_with('\n') {
                    human.push('\n');
                }
            }
        }
    }
    ctx.print(
        human,
        &serde_json::json!({
            "command_id": command_id.to_string(),
            "verb": args.verb,
            "jobs": results,
        }),
    );
    if failed > 0 {
        return Err(CtlError::JobsFailed {
            failed,
            total: results.len(),
        });
    }
    Ok(())
}

fn done(
    job: JobId,
    state: &'static str,
    outcome: Option<JobOutcome>,
    reason: Option<String>,
) -> Finished {
    Finished {
        job,
        // Filled from the scheduled event when the results are printed.
        host: None,
        state,
        outcome,
        reason,
    }
}

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_must_be_capital_words_joined_by_dashes() {
        assert!(valid_verb("RESTART-SERVICE"));
        assert!(valid_verb("SHOW-RESOURCES"));
        assert!(!valid_verb("restart-service"));
        assert!(!valid_verb("RESTART--SERVICE"));
        assert!(!valid_verb("RM -RF"));
        assert!(!valid_verb(""));
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
    }
}
