//! The web service's only way to the rest of fleetbus: read-model queries on `fleet.q.*`,
//! commands on `fleet.cmd.*` (JetStream, `Nats-Msg-Id` = command id) and the outcome of a
//! command, told by the first events whose causation is the command's id.

use std::sync::Arc;
use std::time::Duration;

use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::SystemEvent;
use fleetbus_schemas::queries::{
    model, Committed, CommittedQuery, QueryError, QueryErrorKind, Reply, COMMITTED_WAIT_MAX_MS,
};
use fleetbus_schemas::{Actor, Command, CommandEnvelope, CommandId, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::hub::{Hub, LiveEvent};
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
    /// The events it caused (at least one), in log order.
    Done(Vec<Arc<LiveEvent>>),
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
        let payload = fleetbus_schemas::encode(request)
            .map_err(|e| WebError::Internal(format!("encode {model} query: {e}")))?;
        let subject = fleetbus_schemas::subjects::query(model);
        let reply = tokio::time::timeout(
            self.query_timeout,
            self.client.request(subject, payload.into()),
        )
        .await
        .map_err(|_| {
            WebError::Unavailable(format!(
                "query {model}: no answer within {:?}",
                self.query_timeout
            ))
        })?
        .map_err(|e| WebError::Unavailable(format!("query {model}: {e}")))?;
        match fleetbus_schemas::decode::<Reply<R>>(&reply.payload) {
            Ok(Reply::Ok(answer)) => Ok(answer),
            Ok(Reply::Error(QueryError { kind, message })) => Err(match kind {
                QueryErrorKind::NotFound => WebError::NotFound(message),
                QueryErrorKind::BadRequest => WebError::BadRequest(message),
                QueryErrorKind::Unavailable => WebError::Unavailable(message),
            }),
            Err(e) => Err(WebError::Unavailable(format!(
                "query {model}: unreadable reply: {e}"
            ))),
        }
    }

    /// Publishes a command to the COMMANDS stream and waits for its first events (or its
    /// rejection) through the hub.
    pub async fn command(
        &self,
        hub: &Hub,
        actor: Actor,
        command: Command,
    ) -> Result<Outcome, WebError> {
        let envelope = CommandEnvelope::new(actor, command);
        let id = envelope.id;
        let mut waiter = hub.wait_for(id);
        self.publish_command(&envelope).await?;
        tracing::info!(command_id = %id, subject = %envelope.subject(), actor = %envelope.actor.name, "command published");
        let first = match tokio::time::timeout(self.command_timeout, waiter.recv()).await {
            Ok(Some(first)) => first,
            _ => {
                hub.forget(id);
                return Ok(Outcome::Pending(id));
            }
        };
        if let Event::System(SystemEvent::CommandRejected {
            reason, message, ..
        }) = &first.env.event
        {
            hub.forget(id);
            return Ok(Outcome::Rejected {
                reason: reason.clone(),
                message: message.clone(),
            });
        }
        // A command for several targets causes several events in quick succession.
        let mut events = vec![first];
        if !fans_out(&envelope.command) {
            hub.forget(id);
            self.wait_committed(&events).await;
            return Ok(Outcome::Done(events));
        }
        let settle = tokio::time::sleep(Duration::from_millis(150));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                more = waiter.recv() => match more {
                    Some(e) => events.push(e),
                    None => break,
                },
                () = &mut settle => break,
            }
        }
        hub.forget(id);
        self.wait_committed(&events).await;
        Ok(Outcome::Done(events))
    }

    /// Waits until the last of a command's events is in the log, so the page that follows (and
    /// the next command, decided against ingest's state) sees them: read-your-writes. The
    /// command took effect when its events were published; a log that is behind only delays.
    async fn wait_committed(&self, events: &[Arc<LiveEvent>]) {
        let Some(last) = events.last() else { return };
        let wait_ms = u32::try_from(self.query_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .saturating_sub(500)
            .min(COMMITTED_WAIT_MAX_MS);
        let query = CommittedQuery {
            id: last.env.id,
            wait_ms,
        };
        if let Err(e) = self.query::<_, Committed>(model::COMMITTED, &query).await {
            tracing::warn!(event = %last.env.id, error = %e, "event published but not in the log yet");
        }
    }

    /// Publishes a command without waiting for its outcome; returns once JetStream stored it.
    pub async fn publish_command(&self, envelope: &CommandEnvelope) -> Result<(), WebError> {
        let payload = fleetbus_schemas::encode(envelope)
            .map_err(|e| WebError::Internal(format!("encode command: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.id.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(envelope.subject(), headers, payload.into())
            .await
            .map_err(|e| WebError::Unavailable(format!("publish command: {e}")))?;
        tokio::time::timeout(self.query_timeout, ack)
            .await
            .map_err(|_| {
                WebError::Unavailable("command was not acknowledged by JetStream in time".into())
            })?
            .map_err(|e| WebError::Unavailable(format!("command not stored: {e}")))?;
        Ok(())
    }
}

/// The error for a command nobody answered in time: it stays queued and its result will show
/// on the timeline when the service that handles it is back.
pub(crate) fn no_answer(id: CommandId) -> WebError {
    WebError::Unavailable(format!(
        "command {id} is queued but no service answered in time; its result will appear on the events page"
    ))
}
