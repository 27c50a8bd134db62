//! The event hub: one in-order reader of the EVENTS stream ([`StreamReader`]) feeds
//! - the live stream (SSE) with a ring buffer for `Last-Event-ID` resume,
//! - waiters for the outcome of commands this service published (matched by causation id),
//! - a private, rebuildable fold of what no query model answers (jobs, tasks, schedules,
//!   notifications).
//!
//! The SSE id of an event is its EVENTS stream sequence, so a reconnect resumes exactly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fleetbus_runtime::reader::{ReaderStatus, StreamReader};
use fleetbus_schemas::subjects::EVENTS_STREAM;
use fleetbus_schemas::{CommandId, Envelope, Event};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::fold::WebFold;

/// The answers to one command as the hub hears them (see [`Hub::wait_for`]).
pub struct Waiter<'a> {
    hub: &'a Hub,
    id: CommandId,
    rx: mpsc::UnboundedReceiver<Arc<LiveEvent>>,
}

impl fleetbus_runtime::bus::Answers for Waiter<'_> {
    async fn next_answer(&mut self) -> Option<(String, Envelope)> {
        let event = self.rx.recv().await?;
        Some((event.env.subject(), event.env.clone()))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.hub.forget(self.id);
    }
}

/// One event as the web service passes it on.
#[derive(Debug)]
pub struct LiveEvent {
    /// EVENTS stream sequence (= the log order ingest commits in).
    pub seq: u64,
    /// The event.
    pub env: Envelope,
    /// The JSON sent to SSE clients.
    pub data: String,
    /// The host it is about, if any (for filtering).
    pub host: Option<String>,
    /// The job it is about, if any.
    pub job: Option<String>,
}

impl LiveEvent {
    /// Builds the SSE payload once.
    pub fn new(seq: u64, env: Envelope) -> LiveEvent {
        Self::with_host(seq, env, None)
    }

    /// Like [`LiveEvent::new`], with the host taken from elsewhere when the event does not
    /// name one (job events after `scheduled` name only the job).
    pub fn with_host(seq: u64, env: Envelope, hint: Option<String>) -> LiveEvent {
        let body = serde_json::to_value(&env.event).unwrap_or(Value::Null);
        let data_field = &body["body"]["data"];
        let host = find_str(data_field, &["host"]).or(hint).or_else(|| {
            // Service keys are `host:service` in entity tokens.
            (env.event.domain() == "service")
                .then(|| env.event.entity().split(':').next().map(str::to_owned))
                .flatten()
        });
        let service = find_str(data_field, &["service", "name"])
            .filter(|_| matches!(env.event.domain(), "service" | "agent" | "alert" | "job"));
        let job = match &env.event {
            Event::Job(j) => j.job().map(|j| j.to_string()),
            _ => None,
        };
        let severity = find_str(data_field, &["severity"]);
        let summary = summarize(&env, data_field);
        let data = json!({
            "seq": seq,
            "id": env.id.to_string(),
            "time": env.time.to_rfc3339(),
            "subject": env.subject(),
            "domain": env.event.domain(),
            "type": env.event.type_name(),
            "entity": env.event.entity(),
            "actor": env.actor.name,
            "causation": env.causation.map(|c| c.to_string()),
            "host": host,
            "service": service,
            "job": job,
            "severity": severity,
            "summary": summary,
            // Job consoles need the step numbers and the outcome.
            "data": if env.event.domain() == "job" { data_field.clone() } else { Value::Null },
        })
        .to_string();
        LiveEvent {
            seq,
            env,
            data,
            host,
            job,
        }
    }
}

fn find_str(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match v.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    })
}

/// A one-line description from whatever human text the event carries.
pub(crate) fn summarize(env: &Envelope, data: &Value) -> String {
    let mut text = format!(
        "{}.{} {}",
        env.event.domain(),
        env.event.type_name(),
        env.event.entity()
    );
    if let Some(extra) = find_str(data, &["summary", "message", "reason", "kind"]) {
        text.push_str(" — ");
        text.extend(extra.chars().take(300));
    } else if let Some(Value::String(state)) = data.get("status").and_then(|s| s.get("state")) {
        text.push_str(" — ");
        text.push_str(state);
    }
    text
}

/// The hub. Cheap to share (`Arc`).
pub struct Hub {
    ring: RwLock<VecDeque<Arc<LiveEvent>>>,
    capacity: usize,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    waiters: Mutex<HashMap<CommandId, mpsc::UnboundedSender<Arc<LiveEvent>>>>,
    fold: RwLock<WebFold>,
    last_seq: AtomicU64,
    caught_up: AtomicBool,
    consuming: AtomicBool,
}

impl Hub {
    /// An empty hub keeping `capacity` recent events.
    pub fn new(capacity: usize) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(4096);
        Arc::new(Hub {
            ring: RwLock::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity,
            tx,
            waiters: Mutex::new(HashMap::new()),
            fold: RwLock::new(WebFold::default()),
            last_seq: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
        })
    }

    /// Sequence of the last event seen.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// True once the consumer has read everything that was in the stream at start.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// True while the consumer is attached to the stream.
    pub fn consuming(&self) -> bool {
        self.consuming.load(Ordering::Acquire)
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Events with a sequence above `after` still in memory, and whether memory reaches back
    /// that far (if not, the caller replays the gap from JetStream).
    pub fn since(&self, after: u64) -> (Vec<Arc<LiveEvent>>, bool) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let complete = match ring.front() {
            Some(first) => first.seq <= after + 1,
            None => after >= self.last_seq(),
        };
        let events = ring.iter().filter(|e| e.seq > after).cloned().collect();
        (events, complete)
    }

    /// Reads the private fold.
    pub fn read_fold<T>(&self, f: impl FnOnce(&WebFold) -> T) -> T {
        let fold = self.fold.read().unwrap_or_else(|e| e.into_inner());
        f(&fold)
    }

    /// Registers interest in the events caused by a command (before publishing it); dropping
    /// the waiter drops the interest.
    pub fn wait_for(&self, id: CommandId) -> Waiter<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        Waiter { hub: self, id, rx }
    }

    /// Drops interest in a command.
    fn forget(&self, id: CommandId) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Feeds one event (from the consumer, or from tests).
    pub fn push(&self, seq: u64, env: Envelope) {
        if seq <= self.last_seq() {
            return;
        }
        let event = {
            let mut fold = self.fold.write().unwrap_or_else(|e| e.into_inner());
            fold.apply(seq, &env);
            let hint = match &env.event {
                Event::Job(j) => j
                    .job()
                    .and_then(|id| fold.jobs().get(&id))
                    .map(|r| r.host.to_string()),
                _ => None,
            };
            Arc::new(LiveEvent::with_host(seq, env, hint))
        };
        {
            let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
            if ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        self.last_seq.store(seq, Ordering::Release);
        if let Some(id) = fleetbus_runtime::bus::answers(&event.env) {
            let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = waiters.get(&id) {
                let _ = tx.send(event.clone());
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(event);
    }

    /// Reads the EVENTS stream from the start until shutdown. The reader recreates its
    /// consumer by itself (a gap, a missed 1 s heartbeat, a server restart) from the last event
    /// pushed, so the live feed is back within seconds of the bus.
    pub async fn run(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        shutdown: CancellationToken,
    ) {
        // One name per process: replicas of web never delete each other's reader.
        let name = format!("web-live-{}", ulid::Ulid::new());
        let mut reader = StreamReader::new(
            js.clone(),
            EVENTS_STREAM,
            name,
            self.last_seq() + 1,
            shutdown.clone(),
        );
        let mut status = reader.status();
        let hub = self.clone();
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let consuming = *status.borrow_and_update() == ReaderStatus::Consuming;
                hub.consuming.store(consuming, Ordering::Release);
            }
        });
        // An empty stream has nothing to catch up with.
        if let Ok(mut stream) = js.get_stream(EVENTS_STREAM).await {
            if stream
                .info()
                .await
                .is_ok_and(|i| i.state.last_sequence < self.last_seq() + 1)
            {
                self.caught_up.store(true, Ordering::Release);
            }
        }
        while let Some(message) = reader.next().await {
            let Ok(info) = message.info() else {
                continue;
            };
            let (seq, pending) = (info.stream_sequence, info.pending);
            match fleetbus_schemas::decode::<Envelope>(&message.payload) {
                Ok(env) => self.push(seq, env),
                Err(e) => {
                    tracing::warn!(seq, subject = %message.subject, error = %e, "skipping undecodable event");
                    self.last_seq.fetch_max(seq, Ordering::AcqRel);
                }
            }
            if pending == 0 {
                self.caught_up.store(true, Ordering::Release);
            }
        }
    }
}

/// Reads events `after < seq <= upto` straight from the stream (for resumes older than the
/// ring buffer), at most `limit` of them, through a [`StreamReader`] (waiting at most 5 s for
/// each; a stream that cannot be read gives fewer).
pub(crate) async fn replay(
    js: &async_nats::jetstream::Context,
    after: u64,
    upto: u64,
    limit: usize,
) -> Vec<Arc<LiveEvent>> {
    let mut out = Vec::new();
    if upto <= after {
        return out;
    }
    let stop = CancellationToken::new();
    let mut reader = StreamReader::new(
        js.clone(),
        EVENTS_STREAM,
        format!("web-replay-{}", ulid::Ulid::new()),
        after + 1,
        stop.clone(),
    );
    while out.len() < limit {
        let next = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        let Ok(Some(message)) = next else { break };
        let seq = reader.next_seq() - 1;
        if seq > upto {
            break;
        }
        if let Ok(env) = fleetbus_schemas::decode::<Envelope>(&message.payload) {
            out.push(Arc::new(LiveEvent::new(seq, env)));
        }
        if seq == upto {
            break;
        }
    }
    stop.cancel();
    out
}
