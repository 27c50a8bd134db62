//! Publishing events to JetStream (with `Nats-Msg-Id` = event id), reading the `EVENTS` and
//! `SECRETS` streams into the writer, and pulling durable command consumers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use fleetbus_runtime::bus::{self, Outgoing};
use fleetbus_runtime::reader::StreamReader;
use fleetbus_schemas::Envelope;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::writer::Pending;
use crate::IngestError;
use fleetbus_log::NewEntry;

/// The outcome of publishing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// JetStream recognised the id as a duplicate within its window.
    pub duplicate: bool,
}

/// Publishes envelopes and waits for every JetStream ack, keeping all of them in flight.
pub(crate) async fn publish_all(
    js: &jetstream::Context,
    envelopes: &[Envelope],
) -> Result<Vec<Published>, IngestError> {
    let messages = envelopes
        .iter()
        .map(Outgoing::event)
        .collect::<Result<Vec<_>, _>>()?;
    bus::publish_all(js, &messages)
        .await
        .into_iter()
        .map(|ack| {
            Ok(Published {
                duplicate: ack?.duplicate,
            })
        })
        .collect()
}

/// The messages of one durable pull consumer, across restarts: a missing consumer is retried
/// with backoff (it appears after `fleetctl bus apply`) and a pull that ends is reopened.
pub(crate) struct Pull<'a> {
    js: &'a jetstream::Context,
    stream: &'a str,
    durable: &'a str,
    batch: usize,
    shutdown: &'a CancellationToken,
    messages: Option<jetstream::consumer::pull::Stream>,
}

impl<'a> Pull<'a> {
    /// Pulls `durable` on `stream`, `batch` messages per request, until `shutdown`.
    pub(crate) fn new(
        js: &'a jetstream::Context,
        stream: &'a str,
        durable: &'a str,
        batch: usize,
        shutdown: &'a CancellationToken,
    ) -> Self {
        Pull {
            js,
            stream,
            durable,
            batch,
            shutdown,
            messages: None,
        }
    }

    /// The next message; `None` once shutdown is requested.
    pub(crate) async fn next(&mut self) -> Option<jetstream::Message> {
        let (stream, durable) = (self.stream, self.durable);
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.messages = Some(self.open().await?);
                continue;
            };
            let next = tokio::select! {
                n = messages.next() => n,
                () = self.shutdown.cancelled() => return None,
            };
            match next {
                Some(Ok(m)) => return Some(m),
                Some(Err(e)) => tracing::warn!(stream, durable, error = %e, "consumer error"),
                None => self.messages = None,
            }
        }
    }

    async fn open(&self) -> Option<jetstream::consumer::pull::Stream> {
        let (stream, durable) = (self.stream, self.durable);
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = async {
                let s = self
                    .js
                    .get_stream(stream)
                    .await
                    .map_err(|e| e.to_string())?;
                let c = s
                    .get_consumer::<jetstream::consumer::pull::Config>(durable)
                    .await
                    .map_err(|e| e.to_string())?;
                c.stream()
                    .max_messages_per_batch(self.batch)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())
            };
            let reason = tokio::select! {
                r = opened => match r {
                    Ok(m) => {
                        tracing::info!(stream, durable, "consuming");
                        return Some(m);
                    }
                    Err(reason) => reason,
                },
                () = self.shutdown.cancelled() => return None,
            };
            tracing::warn!(stream, durable, %reason, "cannot consume (run `fleetctl bus apply`?); retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Reads `stream` in order from `from_seq` into the writer until shutdown (see
/// [`StreamReader`]: no acks; the writer records each message's stream sequence with its
/// commit, and the next start resumes right after the last one recorded). Malformed messages
/// are never stored, only counted; they are met again after a restart and skipped again.
pub(crate) async fn consume_events(
    reader: StreamReader,
    stream: &'static str,
    tx: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
) -> Result<(), IngestError> {
    let mut reader = reader;
    while let Some(message) = reader.next().await {
        let subject = message.subject.to_string();
        // `next` only returns messages whose metadata it has checked.
        let seq = reader.next_seq() - 1;
        match decode_event(&subject, &message.payload) {
            Ok(envelope) => {
                let pending = Pending {
                    entry: NewEntry {
                        subject,
                        bytes: message.payload.clone(),
                        envelope,
                    },
                    position: Some((stream, seq)),
                };
                if tx.send(pending).await.is_err() {
                    // The writer stopped; what it did not commit is read again next start.
                    break;
                }
            }
            Err(reason) => {
                Metrics::inc(&metrics.malformed_events);
                tracing::warn!(stream, seq, %subject, %reason, "malformed event skipped, not stored");
            }
        }
    }
    Ok(())
}

/// Decodes an event and checks that it arrived on its own subject.
pub(crate) fn decode_event(subject: &str, payload: &[u8]) -> Result<Envelope, String> {
    let envelope: Envelope = fleetbus_schemas::decode(payload).map_err(|e| e.to_string())?;
    let expected = envelope.subject();
    if expected != subject {
        return Err(format!("event {} belongs on {expected}", envelope.id));
    }
    Ok(envelope)
}
