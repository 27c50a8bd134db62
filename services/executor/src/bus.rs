//! Publishing to the bus through [`fleetbus_runtime::bus`]: events (JetStream `EVENTS`,
//! `Nats-Msg-Id` = event id, ack awaited) and live output chunks (JetStream `OUTPUT`,
//! `Nats-Msg-Id` = `<job>.<seq>`).

use async_nats::jetstream;
use fleetbus_runtime::bus::{publish, Outgoing};
use fleetbus_schemas::events::job::OutputChunk;
use fleetbus_schemas::{Actor, CommandId, Envelope, Event};

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
        publish(&self.js, &Outgoing::event(&env)?).await?;
        Ok(env)
    }

    /// Publishes one output chunk and waits for the ack.
    pub(crate) async fn output(&self, chunk: &OutputChunk) -> Result<(), ExecError> {
        publish(&self.js, &Outgoing::output(chunk)?).await?;
        Ok(())
    }
}
