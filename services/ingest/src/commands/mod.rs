//! Commands of the areas ingest owns (host, agent, user, alert, config): validated against the
//! current projections; accepted ones become events, rejected ones a `CommandRejected` event.
//! Either way the resulting events go through JetStream like everyone else's (so the log order
//! is the bus order), and the command is acked only after they are committed to the log.
//!
//! Event ids are derived from the command id, so a command redelivered after a crash produces
//! the same ids and the log stores its outcome once.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use fleetbus_bus_config::CommandArea;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{Event, SystemEvent};
use fleetbus_schemas::{
    Actor, Command, CommandEnvelope, CommandId, Envelope, EventId, SCHEMA_VERSION,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::writer::Shared;
use crate::IngestError;
use fleetbus_projections::State;

mod decide;

#[cfg(test)]
use self::decide::check_password_hash;
use self::decide::decide;

/// The component name in `CommandRejected` events and the `source` of ingest's events.
pub(crate) const COMPONENT: &str = "ingest";

/// The areas ingest consumes.
pub(crate) const AREAS: [CommandArea; 5] = [
    CommandArea::Host,
    CommandArea::Agent,
    CommandArea::User,
    CommandArea::Alert,
    CommandArea::Config,
];

/// A rejection: kind and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// Typed reason.
    pub kind: RejectKind,
    /// For people.
    pub message: String,
}

fn reject(kind: RejectKind, message: impl Into<String>) -> Rejection {
    Rejection {
        kind,
        message: message.into(),
    }
}

/// A deterministic event id for the `n`-th event caused by a command.
pub(crate) fn derived_id(command: CommandId, n: u8) -> EventId {
    let digest = Sha256::new()
        .chain_update(command.to_bytes())
        .chain_update([n])
        .finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    EventId(ulid::Ulid::from_parts(
        command.timestamp_ms(),
        u128::from_be_bytes(random),
    ))
}

fn envelope(cmd_id: CommandId, actor: &Actor, n: u8, event: Event) -> Envelope {
    Envelope {
        id: derived_id(cmd_id, n),
        time: chrono::Utc::now(),
        source: COMPONENT.into(),
        actor: actor.clone(),
        causation: Some(cmd_id),
        schema: SCHEMA_VERSION,
        event,
    }
}

/// The rejection event for a command (or for a payload whose id could not be read).
pub(crate) fn rejected_event(
    command: Option<CommandId>,
    actor: Option<&Actor>,
    subject: &str,
    rejection: Rejection,
) -> Envelope {
    let event = Event::System(SystemEvent::CommandRejected {
        component: COMPONENT.into(),
        command,
        subject: subject.chars().take(256).collect(),
        reason: rejection.kind,
        message: rejection.message,
    });
    match command {
        Some(id) => envelope(id, actor.unwrap_or(&Actor::service(COMPONENT)), 255, event),
        None => Envelope::new(COMPONENT, Actor::service(COMPONENT), None, event),
    }
}

/// The one authorization policy (`fleetbus_runtime::authz`), as a rejection.
pub(crate) fn authorize(actor: &Actor, command: &Command) -> Result<(), Rejection> {
    fleetbus_runtime::authz::authorize(actor, command)
        .map_err(|e| reject(RejectKind::Forbidden, e.0))
}

/// Decodes a command payload and turns it into the events to publish.
pub(crate) fn handle(
    state: &State,
    subject: &str,
    payload: &[u8],
) -> Result<Vec<Envelope>, Box<Envelope>> {
    let cmd: CommandEnvelope = match fleetbus_schemas::decode(payload) {
        Ok(c) => c,
        Err(e) => {
            let kind = match e {
                fleetbus_schemas::CodecError::TooLarge { .. } => RejectKind::TooLarge,
                _ => RejectKind::Malformed,
            };
            // Try to name the command even when the body is unusable.
            let id = rmpv_command_id(payload);
            return Err(Box::new(rejected_event(
                id,
                None,
                subject,
                reject(kind, e.to_string()),
            )));
        }
    };
    if cmd.subject() != subject {
        return Err(Box::new(rejected_event(
            Some(cmd.id),
            Some(&cmd.actor),
            subject,
            reject(
                RejectKind::Malformed,
                format!(
                    "a {} command belongs on {}",
                    cmd.command.verb(),
                    cmd.subject()
                ),
            ),
        )));
    }
    match decide(state, &cmd) {
        Ok(events) => Ok(events
            .into_iter()
            .enumerate()
            .map(|(n, e)| envelope(cmd.id, &cmd.actor, n as u8, e))
            .collect()),
        Err(rejection) => Err(Box::new(rejected_event(
            Some(cmd.id),
            Some(&cmd.actor),
            subject,
            rejection,
        ))),
    }
}

/// Reads just the `id` field of a msgpack map, for naming an undecodable command.
fn rmpv_command_id(payload: &[u8]) -> Option<CommandId> {
    #[derive(serde::Deserialize)]
    struct JustId {
        id: CommandId,
    }
    if payload.len() > fleetbus_schemas::MAX_MESSAGE_BYTES {
        return None;
    }
    rmp_serde::from_slice::<JustId>(payload).ok().map(|j| j.id)
}

/// Consumes one command area until shutdown, one command at a time (each waits for its events
/// to be committed, so the next command is validated against a state that includes them).
pub(crate) async fn consume_area(
    js: jetstream::Context,
    shared: Shared,
    area: CommandArea,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let durable = area.consumer_name();
    let stream = fleetbus_bus_config::streams::COMMANDS_STREAM;
    let mut pull = crate::bus::Pull::new(&js, stream, &durable, 50, &shutdown);
    while let Some(message) = pull.next().await {
        process(&js, &shared, &message, &shutdown).await;
    }
    Ok(())
}

async fn process(
    js: &jetstream::Context,
    shared: &Shared,
    message: &jetstream::Message,
    shutdown: &CancellationToken,
) {
    let subject = message.subject.to_string();
    let outcome = {
        let state = shared.read_state();
        handle(&state, &subject, &message.payload)
    };
    let events = match outcome {
        Ok(events) => events,
        Err(mut rejection) => {
            // A payload without a readable command id still gets a stable event id (from its
            // stream position), so a redelivery is logged once.
            if rejection.causation.is_none() {
                if let Ok(info) = message.info() {
                    let ms = (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
                    let digest = Sha256::new()
                        .chain_update(info.stream.as_bytes())
                        .chain_update(info.stream_sequence.to_be_bytes())
                        .finalize();
                    let mut random = [0u8; 16];
                    random[6..].copy_from_slice(&digest[..10]);
                    rejection.id = EventId(ulid::Ulid::from_parts(ms, u128::from_be_bytes(random)));
                }
            }
            vec![*rejection]
        }
    };
    if let Some(first) = events.first() {
        let (command, reason) = match &first.event {
            Event::System(SystemEvent::CommandRejected { message, .. }) => {
                (first.causation, Some(message.clone()))
            }
            _ => (first.causation, None),
        };
        match &reason {
            None => {
                Metrics::inc(&shared.metrics.commands_accepted);
                tracing::info!(%subject, command = ?command.map(|c| c.to_string()), events = events.len(), "command accepted");
            }
            Some(reason) => {
                Metrics::inc(&shared.metrics.commands_rejected);
                tracing::warn!(%subject, command = ?command.map(|c| c.to_string()), %reason, "command rejected");
            }
        }
    }
    // Publish, then wait for the commit; on failure leave the command unacked (redelivered,
    // and the derived ids make the retry idempotent).
    let committed =
        crate::commit::publish_and_wait(shared, js, &events, Duration::from_secs(30), shutdown)
            .await;
    match committed {
        Ok(_) => {
            if let Err(e) = message.ack().await {
                tracing::warn!(%subject, error = %e, "cannot ack command; it will be redelivered");
            }
        }
        Err(e) => {
            tracing::warn!(%subject, error = %e, "command outcome not committed; leaving it for redelivery");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::commands::{AgentCommand, HostCommand};
    use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
    use fleetbus_schemas::HostId;
    use fleetbus_schemas::UserRole;

    fn spec(host: &str) -> HostSpec {
        HostSpec {
            host: host.parse().expect("id"),
            address: "127.0.0.2".into(),
            port: 22,
            user: "fleet".into(),
            tags: vec![],
            roles: vec![],
            host_key_policy: HostKeyPolicy::AcceptNew,
            allow_adhoc: false,
            disabled: false,
        }
    }

    fn admin_cmd(command: Command) -> CommandEnvelope {
        CommandEnvelope::new(Actor::user("root", UserRole::Admin), command)
    }

    fn rejected(env: &Envelope) -> (Option<CommandId>, RejectKind) {
        match &env.event {
            Event::System(SystemEvent::CommandRejected {
                command, reason, ..
            }) => (*command, reason.clone()),
            other => panic!("not a rejection: {other:?}"),
        }
    }

    #[test]
    fn given_a_host_when_added_again_then_conflict_else_registered() {
        let mut state = State::default();
        let add = admin_cmd(Command::Host(HostCommand::Add(spec("web-1"))));
        let events = handle(
            &state,
            &add.subject(),
            &fleetbus_schemas::encode(&add).expect("enc"),
        )
        .expect("accepted");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].causation, Some(add.id));
        assert_eq!(events[0].actor, add.actor);
        assert_eq!(
            events[0].id,
            derived_id(add.id, 0),
            "ids derive from the command id"
        );
        fleetbus_log::Fold::apply(&mut state, 1, &events[0]);
        let again = admin_cmd(Command::Host(HostCommand::Add(spec("web-1"))));
        let err = handle(
            &state,
            &again.subject(),
            &fleetbus_schemas::encode(&again).expect("enc"),
        )
        .expect_err("conflict");
        assert_eq!(rejected(&err), (Some(again.id), RejectKind::Conflict));
    }

    #[test]
    fn bad_specs_keys_and_hashes_are_invalid() {
        let mut bad = spec("web-1");
        bad.address = "a b; rm -rf /".into();
        let c = admin_cmd(Command::Host(HostCommand::Add(bad)));
        assert_eq!(
            decide(&State::default(), &c).expect_err("bad").kind,
            RejectKind::Invalid
        );
        let c = admin_cmd(Command::Agent(AgentCommand::IssueKey {
            agent: "web-1".parse().expect("id"),
            host: "web-1".parse::<HostId>().expect("id"),
            key_id: "k".into(),
            key_hash: "ab".repeat(32),
        }));
        assert_eq!(
            decide(&State::default(), &c).expect_err("no host").kind,
            RejectKind::NotFound
        );
        assert!(
            check_password_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNo").is_ok()
        );
        assert!(check_password_hash("$2b$12$abcdefghijklmnopqrstuu").is_err());
        assert!(check_password_hash("plain").is_err());
    }

    #[test]
    fn garbage_and_oversize_payloads_are_rejected_without_a_command_id() {
        let err =
            handle(&State::default(), "fleet.cmd.host.add", b"\xc1\xc1").expect_err("garbage");
        assert_eq!(rejected(&err), (None, RejectKind::Malformed));
        let huge = vec![0u8; fleetbus_schemas::MAX_MESSAGE_BYTES + 1];
        let err = handle(&State::default(), "fleet.cmd.host.add", &huge).expect_err("huge");
        assert_eq!(rejected(&err), (None, RejectKind::TooLarge));
        // A payload whose body is wrong but whose id is readable is named.
        #[derive(serde::Serialize)]
        struct Half {
            id: CommandId,
            command: u8,
        }
        let id = CommandId::new();
        let bytes = rmp_serde::to_vec_named(&Half { id, command: 1 }).expect("enc");
        let err = handle(&State::default(), "fleet.cmd.host.add", &bytes).expect_err("half");
        assert_eq!(rejected(&err), (Some(id), RejectKind::Malformed));
    }
}
