//! The bus toolkit every service uses, once: publishing to JetStream with `Nats-Msg-Id` (so the
//! server's duplicate window drops re-sends), read-model queries on `fleet.q.*`, sending a
//! command and waiting for the events it caused and for their commit to the log
//! ([`send_command`]), and reading a job's live output from `OUTPUT` ([`JobOutput`]).

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::{Publish, PublishAckFuture};
use async_nats::jetstream::{self, publish::PublishAck};
use bytes::Bytes;
use fleetbus_schemas::events::job::OutputChunk;
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::queries::{
    model, Committed, CommittedQuery, QueryError, QueryErrorKind, Reply, COMMITTED_WAIT_MAX_MS,
};
use fleetbus_schemas::subjects::{job_output, OUTPUT_STREAM};
use fleetbus_schemas::{CodecError, CommandEnvelope, CommandId, Envelope, Event, EventId, JobId};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A payload could not be encoded.
    #[error("encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// JetStream refused or lost a publish (is the stream there? run `fleetctl bus apply`).
    #[error("publish {subject}: {source}")]
    Publish {
        /// Where to.
        subject: String,
        /// The client's reason.
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    /// JetStream did not acknowledge a publish in time.
    #[error("no JetStream ack for {subject} within {timeout:?}")]
    AckTimeout {
        /// Where to.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Nobody subscribes to a query subject.
    #[error("nobody answers {subject}")]
    NoResponders {
        /// The query subject.
        subject: String,
    },
    /// A request got no reply in time.
    #[error("no reply on {subject} within {timeout:?}")]
    Timeout {
        /// The request subject.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A request failed.
    #[error("request {subject}: {source}")]
    Request {
        /// The request subject.
        subject: String,
        /// The client's reason.
        #[source]
        source: async_nats::RequestError,
    },
    /// A reply could not be decoded.
    #[error("unreadable reply on {subject}: {source}")]
    Reply {
        /// The request subject.
        subject: String,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// The read model answered with an error.
    #[error("query {model}: {source}")]
    Query {
        /// The model asked.
        model: String,
        /// Its typed answer.
        #[source]
        source: QueryError,
    },
    /// Any other NATS failure (subscribe, stream lookup, consumer create, …).
    #[error("{what}: {source}")]
    Nats {
        /// What was being done.
        what: String,
        /// The client's reason.
        #[source]
        source: async_nats::Error,
    },
}

impl BusError {
    fn nats(what: impl Into<String>, source: impl Into<async_nats::Error>) -> BusError {
        BusError::Nats {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The kind of a read model's error answer, if this is one.
    pub fn query_kind(&self) -> Option<QueryErrorKind> {
        match self {
            BusError::Query { source, .. } => Some(source.kind),
            _ => None,
        }
    }
}

/// One message for a JetStream stream with its deduplication id (`Nats-Msg-Id`).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject.
    pub subject: String,
    /// The `Nats-Msg-Id`.
    pub id: String,
    /// The MessagePack payload.
    pub payload: Bytes,
}

impl Outgoing {
    /// An event, deduplicated by its event id.
    pub fn event(env: &Envelope) -> Result<Outgoing, BusError> {
        Ok(Outgoing {
            subject: env.subject(),
            id: env.id.to_string(),
            payload: encode(&format!("event {}", env.id), env)?,
        })
    }

    /// A command, deduplicated by its command id.
    pub fn command(env: &CommandEnvelope) -> Result<Outgoing, BusError> {
        Ok(Outgoing {
            subject: env.subject(),
            id: env.id.to_string(),
            payload: encode(&format!("command {}", env.id), env)?,
        })
    }

    /// A chunk of a job's output, deduplicated by `<job>.<seq>`.
    pub fn output(chunk: &OutputChunk) -> Result<Outgoing, BusError> {
        Ok(Outgoing {
            subject: job_output(chunk.job),
            id: format!("{}.{}", chunk.job, chunk.seq),
            payload: encode("output chunk", chunk)?,
        })
    }

    async fn send(&self, js: &jetstream::Context) -> Result<PublishAckFuture, BusError> {
        let publish = Publish::build()
            .message_id(self.id.as_str())
            .payload(self.payload.clone());
        js.send_publish(self.subject.clone(), publish)
            .await
            .map_err(|source| BusError::Publish {
                subject: self.subject.clone(),
                source,
            })
    }
}

fn encode<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Bytes, BusError> {
    fleetbus_schemas::encode(value)
        .map(Bytes::from)
        .map_err(|source| BusError::Encode {
            what: what.to_owned(),
            source,
        })
}

/// Publishes one message and waits for the stream's ack.
pub async fn publish(js: &jetstream::Context, message: &Outgoing) -> Result<PublishAck, BusError> {
    message
        .send(js)
        .await?
        .await
        .map_err(|source| BusError::Publish {
            subject: message.subject.clone(),
            source,
        })
}

/// Publishes one message; fails if its ack takes longer than `timeout`.
pub async fn publish_within(
    js: &jetstream::Context,
    message: &Outgoing,
    timeout: Duration,
) -> Result<PublishAck, BusError> {
    tokio::time::timeout(timeout, publish(js, message))
        .await
        .map_err(|_| BusError::AckTimeout {
            subject: message.subject.clone(),
            timeout,
        })?
}

/// Publishes every message with all acks in flight at once (awaiting them one by one is an
/// order of magnitude slower); one result per message, in order.
pub async fn publish_all(
    js: &jetstream::Context,
    messages: &[Outgoing],
) -> Vec<Result<PublishAck, BusError>> {
    let mut acks = Vec::with_capacity(messages.len());
    for message in messages {
        acks.push(message.send(js).await);
    }
    let mut out = Vec::with_capacity(acks.len());
    for (message, ack) in messages.iter().zip(acks) {
        out.push(match ack {
            Ok(ack) => ack.await.map_err(|source| BusError::Publish {
                subject: message.subject.clone(),
                source,
            }),
            Err(e) => Err(e),
        });
    }
    out
}

/// What [`publish_retrying`] did.
#[derive(Debug, Default)]
pub struct Retried {
    /// `(subject, id)` of the messages JetStream dropped as duplicates within its window.
    pub duplicates: Vec<(String, String)>,
    /// What could not be published, with the last reason.
    pub failed: Vec<(Outgoing, BusError)>,
}

/// Publishes every message with all acks in flight, retrying the failed ones (JetStream's
/// duplicate window makes a retry harmless) up to `attempts` times with a growing pause, until
/// `shutdown`.
pub async fn publish_retrying(
    js: &jetstream::Context,
    messages: Vec<Outgoing>,
    attempts: u32,
    shutdown: &CancellationToken,
) -> Retried {
    let mut pending = messages;
    let mut failed = Vec::new();
    let mut duplicates = Vec::new();
    for attempt in 1..=attempts.max(1) {
        let results = publish_all(js, &pending).await;
        failed = Vec::new();
        for (message, result) in pending.into_iter().zip(results) {
            match result {
                Ok(ack) if ack.duplicate => duplicates.push((message.subject, message.id)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(subject = %message.subject, id = %message.id, attempt, error = %e, "publish failed");
                    failed.push((message, e));
                }
            }
        }
        if failed.is_empty() || attempt == attempts {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))) => {}
        }
        pending = failed.iter().map(|(m, _)| m.clone()).collect();
    }
    Retried { duplicates, failed }
}

/// Asks `fleet.q.<model>` and returns the raw reply payload.
pub async fn request(
    client: &async_nats::Client,
    model: &str,
    request: &(impl Serialize + ?Sized),
    timeout: Duration,
) -> Result<Bytes, BusError> {
    let payload = encode(&format!("{model} query"), request)?;
    let subject = fleetbus_schemas::subjects::query(model);
    let reply = tokio::time::timeout(timeout, client.request(subject.clone(), payload))
        .await
        .map_err(|_| BusError::Timeout {
            subject: subject.clone(),
            timeout,
        })?
        .map_err(|source| match source.kind() {
            async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                subject: subject.clone(),
            },
            async_nats::RequestErrorKind::TimedOut => BusError::Timeout {
                subject: subject.clone(),
                timeout,
            },
            _ => BusError::Request {
                subject: subject.clone(),
                source,
            },
        })?;
    Ok(reply.payload)
}

/// Asks `fleet.q.<model>` and returns its typed answer; an error answer is
/// [`BusError::Query`].
pub async fn query<R: DeserializeOwned>(
    client: &async_nats::Client,
    model: &str,
    request_body: &(impl Serialize + ?Sized),
    timeout: Duration,
) -> Result<R, BusError> {
    let payload = request(client, model, request_body, timeout).await?;
    match fleetbus_schemas::decode::<Reply<R>>(&payload) {
        Ok(Reply::Ok(answer)) => Ok(answer),
        Ok(Reply::Error(source)) => Err(BusError::Query {
            model: model.to_owned(),
            source,
        }),
        Err(source) => Err(BusError::Reply {
            subject: fleetbus_schemas::subjects::query(model),
            source,
        }),
    }
}

/// Waits until event `id` is in the log (`fleet.q.committed`), so the next query shows it:
/// read-your-writes. Waits at most `timeout` (less a margin for the reply to travel).
pub async fn wait_committed(
    client: &async_nats::Client,
    id: EventId,
    timeout: Duration,
) -> Result<Committed, BusError> {
    let wait_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .saturating_sub(500)
        .min(COMMITTED_WAIT_MAX_MS);
    let body = CommittedQuery { id, wait_ms };
    query(client, model::COMMITTED, &body, timeout).await
}

/// The command an event answers: its causation, or the command a rejection names.
pub fn answers(env: &Envelope) -> Option<CommandId> {
    match &env.event {
        Event::System(SystemEvent::CommandRejected {
            command: Some(id), ..
        }) => Some(*id),
        _ => env.causation,
    }
}

/// How [`send_command`] waits.
#[derive(Debug, Clone)]
pub struct CommandWait {
    /// How long to wait for the JetStream ack, and for the commit of the answer.
    pub timeout: Duration,
    /// How long to wait for the first answer.
    pub answer: Duration,
    /// After the first answer, keep collecting answers this long (commands that fan out to
    /// several hosts cause several events in quick succession).
    pub settle: Option<Duration>,
    /// Wait for the (last) answer to be committed to the log before returning.
    pub committed: bool,
}

/// What became of a command.
#[derive(Debug)]
pub enum CommandOutcome {
    /// The events it caused (at least one), with their subjects, in the order heard.
    Done {
        /// `(subject, event)` pairs.
        events: Vec<(String, Envelope)>,
        /// The wait for the last event's commit, when asked for (`Some(Err)`: published but
        /// not in the log yet).
        committed: Option<Result<Committed, BusError>>,
    },
    /// A service refused it: the `CommandRejected` event.
    Rejected {
        /// The subject it came on.
        subject: String,
        /// The rejection.
        event: Box<Envelope>,
    },
    /// Nothing answered in time (the command stays queued).
    Pending,
}

/// Where the answers to one command are heard: [`Subscribed`] (core subscriptions), or a
/// service's own event feed (web's hub).
pub trait Answers {
    /// The next event that answers the command, with its subject; `None` when the feed ends.
    fn next_answer(
        &mut self,
    ) -> impl std::future::Future<Output = Option<(String, Envelope)>> + Send;
}

/// Answers heard on core subscriptions, made before the command is published.
pub struct Subscribed {
    heard: futures::stream::SelectAll<async_nats::Subscriber>,
    id: CommandId,
}

impl Subscribed {
    /// Subscribes to `subjects` (events, and secrets for key commands) for answers to `id`.
    pub async fn new(
        client: &async_nats::Client,
        subjects: &[&str],
        id: CommandId,
    ) -> Result<Subscribed, BusError> {
        let mut subs = Vec::with_capacity(subjects.len());
        for subject in subjects {
            subs.push(
                client
                    .subscribe(subject.to_string())
                    .await
                    .map_err(|e| BusError::nats(format!("subscribe {subject}"), e))?,
            );
        }
        // The server has the subscriptions before the command goes out.
        client
            .flush()
            .await
            .map_err(|e| BusError::nats("flush", e))?;
        Ok(Subscribed {
            heard: futures::stream::select_all(subs),
            id,
        })
    }
}

impl Answers for Subscribed {
    async fn next_answer(&mut self) -> Option<(String, Envelope)> {
        while let Some(msg) = self.heard.next().await {
            let Ok(event) = fleetbus_schemas::decode::<Envelope>(&msg.payload) else {
                continue;
            };
            if answers(&event) == Some(self.id) {
                return Some((msg.subject.to_string(), event));
            }
        }
        None
    }
}

/// Publishes `command` into the `COMMANDS` stream and waits for the first event that answers
/// it on `heard` (listening since before the publish, so it cannot slip past), then, if asked,
/// for that event (or the last one heard while settling) to be committed to the log.
pub async fn send_command(
    client: &async_nats::Client,
    js: &jetstream::Context,
    command: &CommandEnvelope,
    wait: &CommandWait,
    heard: &mut impl Answers,
) -> Result<CommandOutcome, BusError> {
    publish_within(js, &Outgoing::command(command)?, wait.timeout).await?;
    tracing::info!(command_id = %command.id, subject = %command.subject(), actor = %command.actor.name, "command published");
    let Ok(Some(first)) = tokio::time::timeout(wait.answer, heard.next_answer()).await else {
        return Ok(CommandOutcome::Pending);
    };
    if matches!(
        first.1.event,
        Event::System(SystemEvent::CommandRejected { .. })
    ) {
        return Ok(CommandOutcome::Rejected {
            subject: first.0,
            event: Box::new(first.1),
        });
    }
    let mut events = vec![first];
    if let Some(settle) = wait.settle {
        let deadline = tokio::time::sleep(settle);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                more = heard.next_answer() => match more {
                    Some(e) => events.push(e),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
    }
    let committed = match events.last() {
        Some((_, last)) if wait.committed => {
            Some(wait_committed(client, last.id, wait.timeout).await)
        }
        _ => None,
    };
    Ok(CommandOutcome::Done { events, committed })
}

/// A job's output from the `OUTPUT` stream, from its first chunk, in order: an ordered
/// consumer filtered on `fleet.out.job.<id>`.
pub struct JobOutput {
    messages: pull::Ordered,
    pending: u64,
}

impl JobOutput {
    /// Opens the job's output.
    pub async fn open(js: &jetstream::Context, job: JobId) -> Result<JobOutput, BusError> {
        let stream = js
            .get_stream(OUTPUT_STREAM)
            .await
            .map_err(|e| BusError::nats("output stream", e))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: job_output(job),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::nats("output consumer", e))?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::nats("output", e))?;
        Ok(JobOutput { messages, pending })
    }

    /// Chunks not yet read that were in the stream when last counted (at open, then after
    /// each chunk): 0 means everything produced so far has been read.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The next chunk, waiting for it to be produced; `None` when the consumer ends.
    /// Undecodable messages are skipped.
    pub async fn next(&mut self) -> Option<OutputChunk> {
        loop {
            let msg = self.messages.next().await?.ok()?;
            self.pending = msg.info().map(|i| i.pending).unwrap_or(0);
            match fleetbus_schemas::decode::<OutputChunk>(&msg.payload) {
                Ok(chunk) => return Some(chunk),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable output chunk skipped")
                }
            }
        }
    }
}
