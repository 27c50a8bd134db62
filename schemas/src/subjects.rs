//! NATS subject names, JetStream stream, consumer and object-store names. Build subjects with
//! these functions; never format a subject or name a stream or consumer at a call site.
//! `bus-config` declares the streams and consumers under these names; services use them.

use crate::commands::Command;
use crate::events::Event;
use crate::ids::JobId;

/// Stream of all events except credential-bearing ones.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Stream of credential-bearing events (not readable by `tap`).
pub const SECRETS_STREAM: &str = "SECRETS";
/// Work-queue stream of commands.
pub const COMMANDS_STREAM: &str = "COMMANDS";
/// Stream of live job output, bounded by age and size.
pub const OUTPUT_STREAM: &str = "OUTPUT";

/// Ingest's reader of `EVENTS`: an ephemeral, ack-less consumer ingest creates at each start
/// from the position its log recorded.
pub const INGEST_EVENTS_CONSUMER: &str = "ingest-events";
/// Ingest's reader of `SECRETS` (as [`INGEST_EVENTS_CONSUMER`]).
pub const INGEST_SECRETS_CONSUMER: &str = "ingest-secrets";
/// The executor's work-queue consumer of job commands on `COMMANDS`.
pub const JOB_COMMANDS_CONSUMER: &str = "cmd-job";
/// The scheduler's work-queue consumer of schedule commands on `COMMANDS`.
pub const SCHEDULE_COMMANDS_CONSUMER: &str = "cmd-schedule";
/// The scheduler's work-queue consumer of check commands on `COMMANDS`.
pub const CHECK_COMMANDS_CONSUMER: &str = "cmd-check";

/// The durable work-queue consumer of one command area on `COMMANDS`: `cmd-<area>`.
pub fn command_consumer(area: &str) -> String {
    format!("cmd-{area}")
}

/// Event subjects the executor follows: the registry (hosts, services, host keys) and task
/// definitions, from which it derives its inventory.
pub const EXECUTOR_EVENT_FILTERS: [&str; 6] = [
    "fleet.evt.host.>",
    "fleet.evt.service.*.registered",
    "fleet.evt.service.*.updated",
    "fleet.evt.service.*.removed",
    "fleet.evt.job.*.task_saved",
    "fleet.evt.job.*.task_deleted",
];

/// Object store (bucket) of agents' config snapshots, sealed by ingest.
pub const SNAPSHOTS_BUCKET: &str = "snapshots";
/// Object store (bucket) of the files agents download (`/v1/assets`).
pub const ASSETS_BUCKET: &str = "assets";
/// Every object store ingest may create and use (stream `OBJ_<bucket>`).
pub const OBJECT_BUCKETS: [&str; 2] = [SNAPSHOTS_BUCKET, ASSETS_BUCKET];

/// Every event subject.
pub const EVENTS_ALL: &str = "fleet.evt.>";
/// Every credential-bearing event subject.
pub const SECRETS_ALL: &str = "fleet.sec.>";
/// Every command subject.
pub const COMMANDS_ALL: &str = "fleet.cmd.>";
/// Every output subject.
pub const OUTPUT_ALL: &str = "fleet.out.>";
/// Every query subject.
pub const QUERIES_ALL: &str = "fleet.q.>";

/// The subject an event is published on: `fleet.evt.<domain>.<entity>.<type>`, or
/// `fleet.sec.…` when it carries credential material.
pub fn event(event: &Event) -> String {
    let prefix = if event.is_secret() {
        "fleet.sec"
    } else {
        "fleet.evt"
    };
    format!(
        "{prefix}.{}.{}.{}",
        event.domain(),
        event.entity(),
        event.type_name()
    )
}

/// The subject a command is published on: `fleet.cmd.<area>.<verb>`.
pub fn command(command: &Command) -> String {
    format!("fleet.cmd.{}.{}", command.area(), command.verb())
}

/// The filter matching every command of one area: `fleet.cmd.<area>.>`.
pub fn command_area(area: &str) -> String {
    format!("fleet.cmd.{area}.>")
}

/// The filter matching events of one domain, optionally one entity: `fleet.evt.<domain>.<entity|*>.>`.
pub fn events_of(domain: &str, entity: Option<&str>) -> String {
    format!("fleet.evt.{domain}.{}.>", entity.unwrap_or("*"))
}

/// The live output subject of a job.
pub fn job_output(job: JobId) -> String {
    format!("fleet.out.job.{job}")
}

/// The request/reply subject of a read-model query.
pub fn query(model: &str) -> String {
    format!("fleet.q.{model}")
}

/// The parts of an event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject<'a> {
    /// True for `fleet.sec.…`.
    pub secret: bool,
    /// Domain token.
    pub domain: &'a str,
    /// Entity token.
    pub entity: &'a str,
    /// Type token.
    pub type_name: &'a str,
}

/// Splits an event subject; `None` if it is not `fleet.{evt,sec}.<d>.<e>.<t>`.
pub fn parse_event(subject: &str) -> Option<EventSubject<'_>> {
    let mut parts = subject.split('.');
    if parts.next()? != "fleet" {
        return None;
    }
    let secret = match parts.next()? {
        "evt" => false,
        "sec" => true,
        _ => return None,
    };
    let (domain, entity, type_name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [domain, entity, type_name].iter().any(|t| t.is_empty()) {
        return None;
    }
    Some(EventSubject {
        secret,
        domain,
        entity,
        type_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Command;
    use crate::events::Event;

    #[test]
    fn every_event_subject_has_five_valid_tokens_matching_its_serde_tag() {
        for sample in Event::samples() {
            let subject = event(&sample);
            let parsed = parse_event(&subject).unwrap_or_else(|| panic!("bad subject {subject}"));
            assert_eq!(parsed.secret, sample.is_secret());
            assert_eq!(parsed.domain, sample.domain());
            let json = serde_json::to_value(&sample).unwrap();
            assert_eq!(json["domain"], sample.domain(), "{subject}");
            assert_eq!(json["body"]["type"], sample.type_name(), "{subject}");
            assert!(!subject.contains(['*', '>', ' ']), "{subject}");
        }
    }

    #[test]
    fn credential_events_never_use_the_public_prefix() {
        let secrets: Vec<String> = Event::samples()
            .iter()
            .filter(|e| e.is_secret())
            .map(event)
            .collect();
        assert!(!secrets.is_empty());
        assert!(secrets.iter().all(|s| s.starts_with("fleet.sec.")));
        for e in Event::samples().iter().filter(|e| !e.is_secret()) {
            let json = serde_json::to_string(e).unwrap();
            for field in ["key_hash", "password_hash"] {
                assert!(
                    !json.contains(field),
                    "public event carries {field}: {json}"
                );
            }
        }
    }

    #[test]
    fn every_command_subject_matches_its_serde_tags() {
        for cmd in Command::samples() {
            let subject = command(&cmd);
            let json = serde_json::to_value(&cmd).unwrap();
            assert_eq!(
                subject,
                format!(
                    "fleet.cmd.{}.{}",
                    json["area"].as_str().unwrap(),
                    json["body"]["type"].as_str().unwrap()
                )
            );
            assert!(Command::AREAS.contains(&cmd.area()));
        }
    }

    #[test]
    fn parse_event_rejects_other_shapes() {
        for bad in [
            "fleet.cmd.a.b.c",
            "fleet.evt.a.b",
            "fleet.evt.a.b.c.d",
            "x.evt.a.b.c",
            "fleet.evt..b.c",
        ] {
            assert_eq!(parse_event(bad), None, "{bad}");
        }
    }
}
