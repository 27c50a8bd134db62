//! The running service: replays `EVENTS` into the engine, executes decisions that the log does
//! not already record, serves `fleet.cmd.notify.*`, and records every outcome as an event.
//!
//! Exactly-once: a decision's notification id is deterministic, and the `sent` / `failed` /
//! `suppressed` events in `EVENTS` are the record of what was done. At start the whole stream is
//! replayed (up to its last sequence at that moment) before anything is executed; decisions
//! whose id is already recorded are dropped. The only duplicate left is a notification that was
//! delivered but whose `sent` event was not published before a crash: it is delivered again with
//! the same `Idempotency-Key` (and, for email, the same `Message-ID`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use chrono::{DateTime, Utc};
use fleetbus_bus_config::{CommandArea, Retention};
use fleetbus_runtime::bus;
use fleetbus_runtime::reader::StreamReader;
use fleetbus_schemas::commands::NotifyCommand;
use fleetbus_schemas::events::notification::SuppressedBy;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{NotificationEvent, SystemEvent};
use fleetbus_schemas::subjects::{COMMANDS_STREAM, EVENTS_STREAM};
use fleetbus_schemas::{
    Actor, ChannelId, Command, CommandEnvelope, CommandId, Envelope, Event, EventId, RecipientId,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Secrets};
use crate::deliver::{Deliverer, Outcome};
use crate::engine::{
    check_time_zones_mute, check_time_zones_recipient, Catalog, Decision, Engine, Outgoing,
};
use crate::render;
use crate::NotifierError;

/// The component name in events.
pub(crate) const COMPONENT: &str = "notifier";

fn nats_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> NotifierError + '_ {
    move |e| NotifierError::Nats(format!("{what}: {e}"))
}

/// A deterministic event id for a decision event, so that a decision re-made after a restart
/// (the honest window) carries the same id and JetStream / the log drop the copy.
pub(crate) fn decision_event_id(notification: &str, type_name: &str, at: DateTime<Utc>) -> EventId {
    let mut h = Sha256::new();
    h.update(notification.as_bytes());
    h.update(b"|");
    h.update(type_name.as_bytes());
    let d = h.finalize();
    let mut rand = [0u8; 16];
    rand[6..].copy_from_slice(&d[..10]);
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or_default();
    EventId(ulid::Ulid::from_parts(ms, u128::from_be_bytes(rand)))
}

/// The static catalog from the config file.
pub(crate) fn catalog_from(config: &Config) -> Catalog {
    let mut c = Catalog::default();
    for ch in &config.channels {
        c.channels.insert(ch.channel.clone(), ch.clone());
    }
    for r in &config.recipients {
        c.recipients.insert(r.recipient.clone(), r.clone());
    }
    for r in &config.rules {
        c.rules.insert(r.rule.clone(), r.clone());
    }
    for m in &config.mutes {
        c.mutes.insert(m.mute.clone(), m.clone());
    }
    c
}

/// Runs the notifier until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NotifierError> {
    config.validate()?;
    let secrets = match &config.secrets_file {
        Some(p) => Secrets::load(p)?,
        None => Secrets::empty(),
    };
    let client = fleetbus_runtime::nats::connect(&config.nats, &shutdown).await?;
    let js = jetstream::new(client.clone());
    let deliverer = Deliverer::new(Some(client.clone()), secrets, config.retry.clone())?;

    // Recreates its consumer by itself (a gap, a missed 1 s heartbeat, a server restart), so
    // decisions resume within seconds of the bus coming back. One name per process.
    let mut events = StreamReader::new(
        js.clone(),
        EVENTS_STREAM,
        format!("notifier-{}", ulid::Ulid::new()),
        1,
        shutdown.clone(),
    );

    let area = CommandArea::Notify;
    let def = fleetbus_bus_config::definitions(&Retention::default(), 1)
        .consumer(&area.consumer_name())
        .map(|d| d.config.clone())
        .ok_or_else(|| NotifierError::Nats("bus-config has no cmd-notify consumer".into()))?;
    let commands_stream = js
        .get_stream(COMMANDS_STREAM)
        .await
        .map_err(|e| nats_err("get stream COMMANDS")(&e))?;
    let mut commands = commands_stream
        .get_or_create_consumer(&area.consumer_name(), def)
        .await
        .map_err(|e| nats_err("cmd-notify consumer")(&e))?
        .messages()
        .await
        .map_err(|e| nats_err("consume cmd-notify")(&e))?;

    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let catalog = catalog_from(&config);
    let mut d = Dispatcher {
        engine: Engine::new(catalog.clone()),
        shadow: catalog,
        ledger: HashSet::new(),
        in_flight: HashSet::new(),
        replaying: true,
        pending: Vec::new(),
        recent: HashMap::new(),
        digests: HashMap::new(),
        results_tx,
        js: js.clone(),
        deliverer,
        permits: Arc::new(Semaphore::new(config.max_in_flight)),
        tasks: TaskTracker::new(),
        cancel_deliveries: CancellationToken::new(),
        config: config.clone(),
    };
    tracing::info!("notifier replaying the event log");
    d.publish(
        Event::System(SystemEvent::ComponentStarted {
            component: COMPONENT.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        None,
        None,
    );
    // Decisions made while replaying wait until the whole log is folded (see `finish_replay`).
    if events.catch_up(|msg| d.on_message(msg)).await.is_none() {
        // `None` only once shutdown is requested.
        return Ok(());
    }
    d.finish_replay();

    let mut tick = tokio::time::interval(Duration::from_millis(config.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            msg = events.next() => {
                // `None` only once shutdown is requested.
                let Some(msg) = msg else { break };
                d.on_message(&msg);
            }
            msg = commands.next() => {
                let Some(msg) = msg else {
                    return Err(NotifierError::Nats("cmd-notify consumer ended".into()));
                };
                match msg {
                    Ok(m) => {
                        d.on_command(&m.subject, &m.payload).await;
                        if let Err(e) = m.ack().await {
                            tracing::warn!(error = %e, "command ack failed (it will be redelivered)");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cmd-notify consumer error"),
                }
            }
            Some(r) = results_rx.recv() => d.on_result(r),
            _ = tick.tick() => {
                if !d.replaying {
                    let decisions = d.engine.tick(Utc::now());
                    for decision in decisions {
                        d.execute(decision);
                    }
                    d.flush_digests(false);
                }
            }
        }
    }

    tracing::info!(in_flight = d.in_flight.len(), "notifier shutting down");
    // Deliveries interrupted by shutdown record nothing: they are decided again after restart.
    d.cancel_deliveries.cancel();
    d.tasks.close();
    let drain = async {
        while !(d.tasks.is_empty() && results_rx.is_empty()) {
            tokio::select! {
                Some(r) = results_rx.recv() => d.on_result(r),
                () = d.tasks.wait() => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown drain timed out");
    }
    let _ = client.flush().await;
    Ok(())
}

/// The outcome of one delivery (a single notification or a digest).
#[derive(Debug)]
pub(crate) struct DeliveryResult {
    members: Vec<Outgoing>,
    digest: Option<String>,
    outcome: Option<Outcome>,
}

type Key = (RecipientId, ChannelId);

struct Dispatcher {
    engine: Engine,
    shadow: Catalog,
    ledger: HashSet<String>,
    in_flight: HashSet<String>,
    replaying: bool,
    pending: Vec<Decision>,
    recent: HashMap<Key, VecDeque<Instant>>,
    digests: HashMap<Key, (Instant, Vec<Outgoing>)>,
    results_tx: mpsc::UnboundedSender<DeliveryResult>,
    js: Context,
    deliverer: Deliverer,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    cancel_deliveries: CancellationToken,
    config: Config,
}

impl Dispatcher {
    fn on_message(&mut self, msg: &jetstream::Message) {
        match fleetbus_schemas::decode::<Envelope>(&msg.payload) {
            Ok(env) => self.on_event(&env),
            Err(e) => {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
                tracing::warn!(seq, subject = %msg.subject, error = %e, "undecodable event skipped");
            }
        }
    }

    fn on_event(&mut self, env: &Envelope) {
        if let Event::Notification(n) = &env.event {
            if let Some(r) = n.notification() {
                self.ledger.insert(r.id.clone());
            } else {
                self.shadow.apply(n);
            }
        }
        let decisions = self.engine.apply(env);
        if self.replaying {
            self.pending.extend(decisions);
        } else {
            for decision in decisions {
                self.execute(decision);
            }
        }
    }

    fn finish_replay(&mut self) {
        self.replaying = false;
        let pending = std::mem::take(&mut self.pending);
        let total = pending.len();
        let mut executed = 0;
        for decision in pending {
            if !self.ledger.contains(&decision.notification().id) {
                executed += 1;
            }
            self.execute(decision);
        }
        tracing::info!(
            decisions = total,
            unrecorded = executed,
            recorded = self.ledger.len(),
            "replay finished; notifier live"
        );
    }

    fn execute(&mut self, decision: Decision) {
        let id = decision.notification().id.clone();
        if self.ledger.contains(&id) || self.in_flight.contains(&id) {
            return;
        }
        let age = Utc::now() - decision.decided_at();
        let decision = if age.num_seconds() > self.config.catch_up_max_age_s as i64 {
            Decision::Suppress {
                notification: decision.notification().clone(),
                by: SuppressedBy::Stale {
                    age_s: age.num_seconds().max(0) as u64,
                },
                decided_at: decision.decided_at(),
            }
        } else {
            decision
        };
        match decision {
            Decision::Suppress {
                notification,
                by,
                decided_at,
            } => {
                tracing::debug!(notification = %notification.id, by = ?by, "suppressed");
                self.ledger.insert(notification.id.clone());
                self.record(
                    NotificationEvent::Suppressed { notification, by },
                    decided_at,
                );
            }
            Decision::Send(o) => {
                self.in_flight.insert(id);
                self.queue_send(*o);
            }
        }
    }

    fn queue_send(&mut self, o: Outgoing) {
        let threshold = self.config.digest.threshold as usize;
        if threshold == 0 {
            self.spawn_delivery(vec![o]);
            return;
        }
        let key = (o.recipient.recipient.clone(), o.channel.channel.clone());
        if let Some((_, held)) = self.digests.get_mut(&key) {
            held.push(o);
            return;
        }
        let now = Instant::now();
        let window = Duration::from_millis(self.config.digest.window_ms);
        let q = self.recent.entry(key.clone()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        if q.len() >= threshold {
            self.digests.insert(key, (now + window, vec![o]));
            return;
        }
        q.push_back(now);
        self.spawn_delivery(vec![o]);
    }

    fn flush_digests(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .digests
            .iter()
            .filter(|(_, (deadline, _))| all || *deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some((_, members)) = self.digests.remove(&key) {
                self.spawn_delivery(members);
            }
        }
    }

    fn spawn_delivery(&mut self, members: Vec<Outgoing>) {
        let Some(first) = members.first() else {
            return;
        };
        let channel = first.channel.clone();
        let (msg, digest) = if members.len() == 1 {
            (render::render(first), None)
        } else {
            let refs: Vec<&Outgoing> = members.iter().collect();
            let msg = render::render_digest(&refs);
            let id = msg.key.clone();
            (msg, Some(id))
        };
        let deliverer = self.deliverer.clone();
        let permits = self.permits.clone();
        let tx = self.results_tx.clone();
        let cancel = self.cancel_deliveries.clone();
        self.tasks.spawn(async move {
            let outcome = match permits.acquire_owned().await {
                Ok(_permit) => {
                    let o = deliverer.deliver(&channel, &msg, &cancel).await;
                    // An attempt cut short by shutdown is not a decision: record nothing.
                    match &o {
                        Outcome::GaveUp { reason, .. }
                            if cancel.is_cancelled() && reason.contains("shutdown") =>
                        {
                            None
                        }
                        _ => Some(o),
                    }
                }
                Err(_) => None,
            };
            let _ = tx.send(DeliveryResult {
                members,
                digest,
                outcome,
            });
        });
    }

    fn on_result(&mut self, r: DeliveryResult) {
        for o in r.members {
            self.in_flight.remove(&o.notification.id);
            let Some(outcome) = &r.outcome else {
                continue;
            };
            self.ledger.insert(o.notification.id.clone());
            let event = match outcome {
                Outcome::Delivered { attempts } => {
                    tracing::info!(notification = %o.notification.id, channel = %o.channel.channel,
                        recipient = %o.recipient.recipient, attempts, digest = ?r.digest, "notification sent");
                    NotificationEvent::Sent {
                        notification: o.notification,
                        attempts: *attempts,
                        digest: r.digest.clone(),
                    }
                }
                Outcome::GaveUp { attempts, reason } => {
                    tracing::warn!(notification = %o.notification.id, channel = %o.channel.channel,
                        attempts, reason = %reason, "notification failed");
                    NotificationEvent::Failed {
                        notification: o.notification,
                        attempts: *attempts,
                        reason: reason.clone(),
                    }
                }
            };
            self.record(event, o.decided_at);
        }
    }

    fn record(&self, event: NotificationEvent, decided_at: DateTime<Utc>) {
        use fleetbus_schemas::events::DomainEvent;
        let id = event
            .notification()
            .map(|n| decision_event_id(&n.id, event.type_name(), decided_at));
        self.publish(Event::Notification(event), id, None);
    }

    /// Publishes an event with acks kept in flight (a task per publish awaits its ack).
    fn publish(&self, event: Event, id: Option<EventId>, causation: Option<CommandId>) {
        let mut env = Envelope::new(COMPONENT, Actor::service(COMPONENT), causation, event);
        if let Some(id) = id {
            env.id = id;
        }
        let js = self.js.clone();
        self.tasks.spawn(async move {
            if let Err(e) = publish_envelope(&js, &env).await {
                tracing::error!(event_id = %env.id, subject = %env.subject(), error = %e, "event publish failed");
            }
        });
    }

    async fn on_command(&mut self, subject: &str, payload: &[u8]) {
        let cmd = match fleetbus_schemas::decode::<CommandEnvelope>(payload) {
            Ok(c) => c,
            Err(e) => {
                self.reject(
                    None,
                    subject,
                    RejectKind::Malformed,
                    format!("undecodable command: {e}"),
                )
                .await;
                return;
            }
        };
        let Command::Notify(c) = &cmd.command else {
            self.reject(
                Some(&cmd),
                subject,
                RejectKind::Invalid,
                format!("{subject} is not a notify command"),
            )
            .await;
            return;
        };
        if let Err(m) = authorize(&cmd.actor, c) {
            self.reject(Some(&cmd), subject, RejectKind::Forbidden, m)
                .await;
            return;
        }
        match self.validate(c) {
            Ok(event) => {
                self.shadow.apply(&event);
                tracing::info!(command = %cmd.id, verb = %subject, actor = %cmd.actor.name, "notify command accepted");
                let mut env = Envelope::new(
                    COMPONENT,
                    cmd.actor.clone(),
                    Some(cmd.id),
                    Event::Notification(event),
                );
                // One event per command, with the command's id: a redelivered command is deduplicated.
                env.id = EventId(cmd.id.0);
                if let Err(e) = publish_envelope(&self.js, &env).await {
                    tracing::error!(command = %cmd.id, error = %e, "publishing the command's event failed");
                }
            }
            Err((kind, message)) => self.reject(Some(&cmd), subject, kind, message).await,
        }
    }

    fn validate(&self, c: &NotifyCommand) -> Result<NotificationEvent, (RejectKind, String)> {
        let invalid = |m: String| (RejectKind::Invalid, m);
        let used_by = |pred: &dyn Fn(&fleetbus_schemas::commands::notify::RuleSpec) -> bool| {
            self.shadow
                .rules
                .values()
                .filter(|r| pred(r))
                .map(|r| r.rule.to_string())
                .collect::<Vec<_>>()
        };
        Ok(match c.clone() {
            NotifyCommand::SetRule(r) => {
                r.validate().map_err(invalid)?;
                self.shadow
                    .check_rule_refs(&r)
                    .map_err(|m| (RejectKind::NotFound, m))?;
                NotificationEvent::RuleSet(r)
            }
            NotifyCommand::DeleteRule { rule } => {
                if !self.shadow.rules.contains_key(&rule) {
                    return Err((RejectKind::NotFound, format!("rule {rule} does not exist")));
                }
                NotificationEvent::RuleDeleted { rule }
            }
            NotifyCommand::SetRecipient(r) => {
                r.validate()
                    .and_then(|()| check_time_zones_recipient(&r))
                    .map_err(invalid)?;
                NotificationEvent::RecipientSet(r)
            }
            NotifyCommand::DeleteRecipient { recipient } => {
                if !self.shadow.recipients.contains_key(&recipient) {
                    return Err((
                        RejectKind::NotFound,
                        format!("recipient {recipient} does not exist"),
                    ));
                }
                let users = used_by(&|r| r.all_recipients().any(|x| *x == recipient));
                if !users.is_empty() {
                    return Err((
                        RejectKind::Conflict,
                        format!(
                            "recipient {recipient} is used by rules {}; change them first",
                            users.join(", ")
                        ),
                    ));
                }
                NotificationEvent::RecipientDeleted { recipient }
            }
            NotifyCommand::SetChannel(ch) => {
                ch.validate().map_err(invalid)?;
                NotificationEvent::ChannelSet(ch)
            }
            NotifyCommand::DeleteChannel { channel } => {
                if !self.shadow.channels.contains_key(&channel) {
                    return Err((
                        RejectKind::NotFound,
                        format!("channel {channel} does not exist"),
                    ));
                }
                let users = used_by(&|r| r.all_channels().any(|x| *x == channel));
                if !users.is_empty() {
                    return Err((
                        RejectKind::Conflict,
                        format!(
                            "channel {channel} is used by rules {}; change them first",
                            users.join(", ")
                        ),
                    ));
                }
                NotificationEvent::ChannelDeleted { channel }
            }
            NotifyCommand::SetMute(m) => {
                m.validate()
                    .and_then(|()| check_time_zones_mute(&m))
                    .map_err(invalid)?;
                NotificationEvent::MuteSet(m)
            }
            NotifyCommand::DeleteMute { mute } => {
                if !self.shadow.mutes.contains_key(&mute) {
                    return Err((RejectKind::NotFound, format!("mute {mute} does not exist")));
                }
                NotificationEvent::MuteDeleted { mute }
            }
        })
    }

    async fn reject(
        &self,
        cmd: Option<&CommandEnvelope>,
        subject: &str,
        reason: RejectKind,
        message: String,
    ) {
        tracing::warn!(command = ?cmd.map(|c| c.id), subject, reason = ?reason, message = %message, "notify command rejected");
        let mut env = Envelope::new(
            COMPONENT,
            Actor::service(COMPONENT),
            cmd.map(|c| c.id),
            Event::System(SystemEvent::CommandRejected {
                component: COMPONENT.into(),
                command: cmd.map(|c| c.id),
                subject: subject.chars().take(200).collect(),
                reason,
                message,
            }),
        );
        if let Some(c) = cmd {
            env.id = EventId(c.id.0);
        }
        if let Err(e) = publish_envelope(&self.js, &env).await {
            tracing::error!(error = %e, "publishing a rejection failed");
        }
    }
}

/// Mutes are an operator's tool; rules, recipients and channels are an admin's
/// (`fleetbus_runtime::authz`, the one policy).
fn authorize(actor: &Actor, c: &NotifyCommand) -> Result<(), String> {
    fleetbus_runtime::authz::authorize(actor, &Command::Notify(c.clone())).map_err(|e| e.0)
}

/// Publishes one event, retrying (JetStream's duplicate window makes a retry harmless).
async fn publish_envelope(js: &Context, env: &Envelope) -> Result<(), String> {
    let message = bus::Outgoing::event(env).map_err(|e| e.to_string())?;
    let never = CancellationToken::new();
    match bus::publish_retrying(js, vec![message], 5, &never)
        .await
        .failed
        .pop()
    {
        None => Ok(()),
        Some((_, e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::UserRole;

    #[test]
    fn decision_event_ids_are_deterministic_and_keep_the_decision_time() {
        let t = Utc::now();
        let a = decision_event_id("n-1", "sent", t);
        assert_eq!(a, decision_event_id("n-1", "sent", t));
        assert_ne!(a, decision_event_id("n-1", "failed", t));
        assert_ne!(a, decision_event_id("n-2", "sent", t));
        assert_eq!(a.timestamp_ms() as i64, t.timestamp_millis());
    }

    #[test]
    fn operators_may_mute_but_only_admins_change_rules() {
        let mute = NotifyCommand::DeleteMute { mute: "x".into() };
        let rule = NotifyCommand::DeleteRule {
            rule: "r".parse().unwrap(),
        };
        let op = Actor::user("olga", UserRole::Operator);
        assert!(authorize(&op, &mute).is_ok());
        assert!(authorize(&op, &rule).unwrap_err().contains("needs Admin"));
        assert!(authorize(&Actor::user("vic", UserRole::Viewer), &mute).is_err());
        assert!(authorize(&Actor::agent("web-1"), &mute).is_err());
        assert!(authorize(&Actor::user("ada", UserRole::Admin), &rule).is_ok());
    }
}
