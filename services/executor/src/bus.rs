//! Publishing to the bus: events (JetStream `EVENTS`, `Nats-Msg-Id` = event id, ack awaited) and
//! live output chunks (JetStream `OUTPUT`, `Nats-Msg-Id` = `<job>.<seq>`).

use async_nats::jetstream;
use async_nats::HeaderMap;
use fleetbus_schemas::events::job::OutputChunk;
use fleetbus_schemas::{encode, subjects, Actor, CommandId, Envelope, Event};

use crate::error::ExecError;

/// The component name in envelopes and rejections.
pub(crate) const SOURCE: &str = "executor";

/// A publisher. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Bus {
    js: jetstream::Context,
}

impl Bus {
    /// Wraps a JetStream context.
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Bus { js }
    }

    /// Publishes an event and waits for the stream's ack.
    pub(crate) async fn event(
        &self,
        actor: &Actor,
        causation: Option<CommandId>,
        event: Event,
    ) -> Result<Envelope, ExecError> {
        let env = Envelope::new(SOURCE, actor.clone(), causation, event);
        let payload = encode(&env).map_err(|e| ExecError::Bus(format!("encoding event: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.to_string().as_str());
        let subject = env.subject();
        self.js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|e| ExecError::Bus(format!("publishing {subject}: {e}")))?
            .await
            .map_err(|e| ExecError::Bus(format!("no ack for {subject}: {e}")))?;
        Ok(env)
    }

    /// Publishes one output chunk and waits for the ack.
    pub(crate) async fn output(&self, chunk: &OutputChunk) -> Result<(), ExecError> {
        let payload = encode(chunk).map_err(|e| ExecError::Bus(format!("encoding output: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}.{}", chunk.job, chunk.seq).as_str(),
        );
        let subject = subjects::job_output(chunk.job);
        self.js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|e| ExecError::Bus(format!("publishing {subject}: {e}")))?
            .await
            .map_err(|e| ExecError::Bus(format!("no ack for {subject}: {e}")))?;
        Ok(())
    }
}
