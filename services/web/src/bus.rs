//! The web service's only way to the rest of fleetbus, through [`fleetbus_runtime::bus`]:
//! read-model queries on `fleet.q.*`, commands on `fleet.cmd.*` (JetStream, `Nats-Msg-Id` =
//! command id) and the outcome of a command, told by the first events whose causation is the
//! command's id (heard through the hub).

use std::time::Duration;

use fleetbus_runtime::bus::{self, BusError, CommandOutcome, CommandWait};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::SystemEvent;
use fleetbus_schemas::queries::QueryErrorKind;
use fleetbus_schemas::{Actor, Command, CommandEnvelope, CommandId, Envelope, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::hub::Hub;
use crate::WebError;

/// A connection to the bus with the timeouts of this service.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    query_timeout: Duration,
    command_timeout: Duration,
}

/// What became of a command.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The events it caused (at least one), in the order heard.
    Done(Vec<Envelope>),
    /// A service refused it.
    Rejected {
        /// Why, typed.
        reason: RejectKind,
        /// For people.
        message: String,
    },
    /// Nothing was heard in time (the command stays queued; its result will still show up in
    /// the timeline).
    Pending(CommandId),
}

/// True for commands that may start jobs on several hosts.
fn fans_out(command: &Command) -> bool {
    use fleetbus_schemas::commands::JobCommand;
    match command {
        Command::Job(
            JobCommand::RunTask { targets, .. }
            | JobCommand::RunBatch { targets, .. }
            | JobCommand::RunVerb { targets, .. },
        ) => targets.hosts.len() != 1 || !targets.tags.is_empty() || !targets.roles.is_empty(),
        _ => false,
    }
}

impl Bus {
    /// Wraps a connected client.
    pub fn new(
        client: async_nats::Client,
        query_timeout: Duration,
        command_timeout: Duration,
    ) -> Bus {
        let js = async_nats::jetstream::new(client.clone());
        Bus {
            client,
            js,
            query_timeout,
            command_timeout,
        }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// How long a query (and a JetStream ack) may take.
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// The core client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// True while the client is connected to a server.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// Asks `fleet.q.<model>`; the reply's error kinds map to HTTP statuses.
    pub async fn query<Q: Serialize, R: DeserializeOwned>(
        &self,
        model: &str,
        request: &Q,
    ) -> Result<R, WebError> {
        bus::query(&self.client, model, request, self.query_timeout)
            .await
            .map_err(|e| match e {
                BusError::Query { source, .. } => match source.kind {
                    QueryErrorKind::NotFound => WebError::NotFound(source.message),
                    QueryErrorKind::BadRequest => WebError::BadRequest(source.message),
                    QueryErrorKind::Unavailable => WebError::Unavailable(source.message),
                },
                BusError::Encode { .. } => WebError::Internal(e.to_string()),
                other => WebError::Unavailable(other.to_string()),
            })
    }

    /// Publishes a command to the COMMANDS stream and waits for its first events (or its
    /// rejection) through the hub, then until the last of them is in the log, so the page
    /// that follows (and the next command, decided against ingest's state) sees them:
    /// read-your-writes.
    pub async fn command(
        &self,
        hub: &Hub,
        actor: Actor,
        command: Command,
    ) -> Result<Outcome, WebError> {
        let envelope = CommandEnvelope::new(actor, command);
        let wait = CommandWait {
            timeout: self.query_timeout,
            answer: self.command_timeout,
            // A command for several targets causes several events in quick succession.
            settle: fans_out(&envelope.command).then_some(Duration::from_millis(150)),
            committed: true,
        };
        self.send(hub, &envelope, &wait).await
    }

    /// Publishes a command and waits for its first events (or its rejection) as `wait` says.
    pub async fn send(
        &self,
        hub: &Hub,
        envelope: &CommandEnvelope,
        wait: &CommandWait,
    ) -> Result<Outcome, WebError> {
        let mut waiter = hub.wait_for(envelope.id);
        let outcome = bus::send_command(&self.client, &self.js, envelope, wait, &mut waiter)
            .await
            .map_err(|e| match e {
                BusError::Encode { .. } => WebError::Internal(e.to_string()),
                other => WebError::Unavailable(format!("command not stored: {other}")),
            })?;
        Ok(match outcome {
            CommandOutcome::Done { events, committed } => {
                if let (Some(Err(e)), Some((_, last))) = (committed, events.last()) {
                    tracing::warn!(event = %last.id, error = %e, "event published but not in the log yet");
                }
                Outcome::Done(events.into_iter().map(|(_, e)| e).collect())
            }
            CommandOutcome::Rejected { event, .. } => match event.event {
                Event::System(SystemEvent::CommandRejected {
                    reason, message, ..
                }) => Outcome::Rejected { reason, message },
                _ => Outcome::Pending(envelope.id),
            },
            CommandOutcome::Pending => Outcome::Pending(envelope.id),
        })
    }
}

/// The error for a command nobody answered in time: it stays queued and its result will show
/// on the timeline when the service that handles it is back.
pub(crate) fn no_answer(id: CommandId) -> WebError {
    WebError::Unavailable(format!(
        "command {id} is queued but no service answered in time; its result will appear on the events page"
    ))
}
