//! The scheduler on the bus: replay the log, then fold new events, take commands and publish
//! decisions, all from one task so the state never needs a lock.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use fleetbus_runtime::bus::{publish_retrying, BusError, Outgoing};
use fleetbus_runtime::reader::StreamReader;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::subjects::{COMMANDS_STREAM, EVENTS_STREAM, OUTPUT_STREAM};
use fleetbus_schemas::{decode, Actor, CommandEnvelope, Envelope};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::core::{rejection, Core, CoreConfig, Outputs};
use crate::SchedulerError;

/// Durable consumers of the scheduler's command areas (defined in bus-config).
pub const COMMAND_CONSUMERS: [&str; 2] = [
    fleetbus_schemas::subjects::SCHEDULE_COMMANDS_CONSUMER,
    fleetbus_schemas::subjects::CHECK_COMMANDS_CONSUMER,
];

/// Attempts per publish before giving up on it (JetStream dedup makes retries harmless).
const PUBLISH_ATTEMPTS: u32 = 5;

/// The messages that could be encoded; the others are logged and dropped.
fn encode_all(messages: impl Iterator<Item = Result<Outgoing, BusError>>) -> Vec<Outgoing> {
    messages
        .filter_map(|m| {
            m.map_err(|error| tracing::error!(%error, "cannot encode; dropped"))
                .ok()
        })
        .collect()
}

/// One scheduler process on the bus.
pub struct Scheduler {
    js: jetstream::Context,
    clock: Arc<dyn Clock>,
    core: Core,
    sweep: Duration,
    /// Test failpoint: abort after this many batches of fired commands, before their events.
    abort_after: Option<u64>,
}

/// Environment variable of the crash failpoint used by the kill-mid-slot test: the process
/// aborts (like `kill -9`) right after publishing the N-th batch of fired commands, before
/// the batch's `fired` events.
pub const ABORT_AFTER_COMMANDS_ENV: &str = "FLEETBUS_SCHEDULER_TEST_ABORT_AFTER_COMMANDS";

impl Scheduler {
    /// A scheduler on `client`, deciding with `core_config` at `clock`'s instants.
    pub fn new(
        client: async_nats::Client,
        clock: Arc<dyn Clock>,
        core_config: CoreConfig,
        sweep: Duration,
    ) -> Scheduler {
        let js = jetstream::new(client.clone());
        let core = Core::new(core_config, clock.now());
        let abort_after = std::env::var(ABORT_AFTER_COMMANDS_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        Scheduler {
            js,
            clock,
            core,
            sweep,
            abort_after,
        }
    }

    /// Replays the log, then runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        // Recreates its consumer by itself (a gap, a missed 1 s heartbeat, a server restart)
        // from the last event it returned. One name per process.
        let mut events = StreamReader::new(
            self.js.clone(),
            EVENTS_STREAM,
            format!("scheduler-{}", ulid::Ulid::new()),
            1,
            shutdown.clone(),
        );

        // Catch up with the log before deciding anything: the state is a fold of it.
        let started = std::time::Instant::now();
        let Some(replayed) = events
            .catch_up(|msg| {
                self.fold(&msg.payload);
            })
            .await
        else {
            // `None` only once shutdown is requested.
            return Ok(());
        };
        tracing::info!(
            events = replayed,
            schedules = self.core.schedule_count(),
            ms = started.elapsed().as_millis() as u64,
            "log replayed"
        );

        let commands = self
            .js
            .get_stream(COMMANDS_STREAM)
            .await
            .map_err(|e| SchedulerError::js("get stream COMMANDS", e))?;
        let mut command_streams = Vec::new();
        for name in COMMAND_CONSUMERS {
            let c: consumer::PullConsumer = commands
                .get_consumer(name)
                .await
                .map_err(|e| SchedulerError::js(format!("get consumer COMMANDS/{name}"), e))?;
            command_streams.push(
                c.messages()
                    .await
                    .map_err(|e| SchedulerError::js(format!("consume COMMANDS/{name}"), e))?,
            );
        }
        let mut commands_in = futures::stream::select_all(command_streams);

        let sweep = chrono::Duration::from_std(self.sweep).unwrap_or(chrono::Duration::seconds(1));
        let mut next_sweep = self.clock.now();
        loop {
            let now = self.clock.now();
            if now >= next_sweep {
                let out = self.core.sweep(now);
                self.publish(out, &shutdown).await;
                next_sweep = now + sweep;
            }
            let out = self.core.fire_due(now);
            self.publish(out, &shutdown).await;

            let wake = self
                .core
                .next_wake()
                .map_or(next_sweep, |t| t.min(next_sweep));
            let clock = Arc::clone(&self.clock);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = clock.sleep_until(wake) => {}
                msg = events.next() => match msg {
                    // A ping or a stale agent's report is judged at once, not at the next sweep.
                    Some(msg) => {
                        if self.fold(&msg.payload) {
                            next_sweep = self.clock.now();
                        }
                    }
                    None => break,
                },
                msg = commands_in.next() => match msg {
                    Some(Ok(msg)) => self.command(msg, &shutdown).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "command stream hiccup"),
                    None => return Err(SchedulerError::js("read COMMANDS", "stream ended")),
                },
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Folds one event from the log; true when it should be judged at once.
    fn fold(&mut self, payload: &[u8]) -> bool {
        match decode::<Envelope>(payload) {
            Ok(env) => self.core.apply_from_log(&env),
            // Not ours to reject: ingest answers for the log. Skip what we cannot read.
            Err(e) => {
                tracing::warn!(error = %e, "undecodable event skipped");
                false
            }
        }
    }

    async fn command(&mut self, msg: jetstream::Message, shutdown: &CancellationToken) {
        let now = self.clock.now();
        let subject = msg.subject.to_string();
        let out = match decode::<CommandEnvelope>(&msg.payload) {
            Ok(cmd) if cmd.subject() != subject => {
                let mut out = Outputs::default();
                out.events.push(rejection(
                    now,
                    &subject,
                    Some(cmd.id),
                    &cmd.actor,
                    RejectKind::Malformed,
                    format!(
                        "command arrived on {subject} but its payload is a {} command",
                        cmd.subject()
                    ),
                ));
                out
            }
            Ok(cmd) => {
                tracing::info!(command = %cmd.id, subject = %subject, actor = %cmd.actor.name, "command");
                self.core.handle_command(now, &subject, &cmd)
            }
            Err(e) => {
                let mut out = Outputs::default();
                out.events.push(rejection(
                    now,
                    &subject,
                    None,
                    &Actor::service("unknown"),
                    RejectKind::Malformed,
                    format!("cannot decode a command envelope: {e}"),
                ));
                out
            }
        };
        self.publish(out, shutdown).await;
        if let Err(e) = msg.ack().await {
            tracing::warn!(subject = %subject, error = %e, "command ack failed; it will be redelivered");
        }
    }

    /// Publishes commands (all acked first), purges output, then publishes events.
    async fn publish(&mut self, out: Outputs, shutdown: &CancellationToken) {
        if out.is_empty() {
            return;
        }
        let commands = encode_all(out.commands.iter().map(Outgoing::command));
        let had_commands = !commands.is_empty();
        self.publish_all(commands, shutdown).await;
        if had_commands {
            self.crash_point();
        }
        if !out.purge_jobs.is_empty() {
            self.purge_output(&out.purge_jobs).await;
        }
        let events = encode_all(out.events.iter().map(Outgoing::event));
        self.publish_all(events, shutdown).await;
    }

    fn crash_point(&mut self) {
        if let Some(n) = self.abort_after.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tracing::warn!("test failpoint: aborting between a slot's commands and its events");
                std::process::abort();
            }
        }
    }

    /// Publishes with `Nats-Msg-Id`, keeping every ack in flight, retrying failures.
    async fn publish_all(&self, messages: Vec<Outgoing>, shutdown: &CancellationToken) {
        if messages.is_empty() {
            return;
        }
        let done = publish_retrying(&self.js, messages, PUBLISH_ATTEMPTS, shutdown).await;
        for (subject, id) in done.duplicates {
            tracing::debug!(%subject, %id, "duplicate suppressed by jetstream");
        }
        for (message, error) in done.failed {
            tracing::error!(subject = %message.subject, id = %message.id, %error, "publish gave up");
        }
    }

    async fn purge_output(&self, jobs: &[fleetbus_schemas::JobId]) {
        let stream = match self.js.get_stream(OUTPUT_STREAM).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot open OUTPUT");
                return;
            }
        };
        let mut purged: u64 = 0;
        for job in jobs {
            let subject = fleetbus_schemas::subjects::job_output(*job);
            match stream.purge().filter(subject.as_str()).await {
                Ok(r) => purged += r.purged,
                Err(e) => tracing::warn!(job = %job, error = %e, "retention: purge failed"),
            }
        }
        tracing::info!(
            jobs = jobs.len(),
            messages = purged,
            "retention: output purged"
        );
    }
}
