//! Read-model queries: core NATS request/reply on `fleet.q.<model>` (queue group `ingest`).
//! Requests and replies are MessagePack; every reply is a `Reply<T>`.
//!
//! | model | request | answer |
//! |---|---|---|
//! | `overview` | `OverviewQuery` (`as_of` seq or time) | `FleetStatus` |
//! | `host` | `HostQuery` | `HostStatus` (`NotFound` if unknown) |
//! | `history` | `HistoryQuery` | `Vec<HistoryEntry>`, newest first |
//! | `alerts` | `AlertsQuery` | `Vec<Alert>`, newest first |
//! | `events` | `EventsQuery` | `Vec<LogRecord>` (`after_seq`: oldest first; else newest first) |
//! | `log_head` | `LogHeadQuery` | `LogHead` |
//! | `registry` | `RegistryQuery` | `Registry` with key hashes redacted, no password hashes |
//! | `users` | `UsersQuery` | `BTreeMap<UserName, UserRecord>` without password hashes |
//! | `user_credential` | `UserCredentialQuery` | `UserRecord` with the password hash |
//! | `committed` | `CommittedQuery` (waits up to `wait_ms`) | `Committed` (`NotFound` if not by then) |
//!
//! The projections take a group commit's entries just before its fsync, so a query may show an
//! event a few milliseconds before `log_head` counts it. `committed` answers only once the event
//! is durable; after it, every query shows it (read-your-writes after a command).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::DateTime;
use fleetbus_projections::{Alert, FleetStatus, HistoryEntry, HostStatus, Registry, UserRecord};
use fleetbus_schemas::events::{AgentEvent, AlertEvent, Event, UserEvent};
use fleetbus_schemas::queries::{
    model, page_size, AlertsQuery, AsOf, Committed, CommittedQuery, EventsQuery, HistoryQuery,
    HostQuery, LogHead, LogRecord, OverviewQuery, QueryError, QueryErrorKind, Reply,
    UserCredentialQuery, COMMITTED_WAIT_MAX_MS,
};
use fleetbus_schemas::{Envelope, HostId, ServiceName, Severity, UserName};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::writer::Shared;
use crate::IngestError;
use fleetbus_log::{Entry, LogError};
use fleetbus_projections::State;

/// The queue group all ingest instances answer in.
pub const QUEUE_GROUP: &str = "ingest";

/// Most entries one `events` query scans before answering with what it found.
pub const MAX_SCAN: usize = 200_000;

fn error(kind: QueryErrorKind, message: impl Into<String>) -> QueryError {
    QueryError {
        kind,
        message: message.into(),
    }
}

fn bad_request(message: impl Into<String>) -> QueryError {
    error(QueryErrorKind::BadRequest, message)
}

fn unavailable(e: LogError) -> QueryError {
    error(QueryErrorKind::Unavailable, e.to_string())
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, QueryError> {
    fleetbus_schemas::decode(payload)
        .map_err(|e| bad_request(format!("cannot decode request: {e}")))
}

fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    fleetbus_schemas::encode(reply).unwrap_or_else(|e| {
        let err: Reply<()> = Reply::Error(error(
            QueryErrorKind::Unavailable,
            format!("cannot encode reply: {e}"),
        ));
        fleetbus_schemas::encode(&err).unwrap_or_default()
    })
}

fn answer<T: Serialize>(r: Result<T, QueryError>) -> Vec<u8> {
    match r {
        Ok(v) => encode(&Reply::Ok(v)),
        Err(e) => encode::<()>(&Reply::Error(e)),
    }
}

/// Answers one query (blocking: reads redb and folds for time travel).
pub fn answer_query(shared: &Shared, model_name: &str, payload: &[u8]) -> Vec<u8> {
    match model_name {
        model::OVERVIEW => answer(overview(shared, payload)),
        model::HOST => answer(decode::<HostQuery>(payload).and_then(|q| host(shared, &q.host))),
        model::HISTORY => answer(decode::<HistoryQuery>(payload).map(|q| history(shared, &q))),
        model::ALERTS => answer(decode::<AlertsQuery>(payload).map(|q| alerts(shared, &q))),
        model::EVENTS => answer(decode::<EventsQuery>(payload).and_then(|q| events(shared, &q))),
        model::LOG_HEAD => answer(log_head(shared)),
        model::REGISTRY => answer(Ok::<Registry, QueryError>(registry(shared))),
        model::USERS => answer(Ok::<_, QueryError>(users(shared))),
        model::USER_CREDENTIAL => {
            answer(decode::<UserCredentialQuery>(payload).and_then(|q| user_credential(shared, &q.user)))
        }
        fleetbus_schemas::queries::model::CONFIG => crate::fleet::queries::answer(&shared.read_state(), payload),
        other => answer::<()>(Err(bad_request(format!(
            "unknown model '{}'; expected one of overview, host, history, alerts, events, log_head, registry, users, user_credential, committed",
            other.chars().take(64).collect::<String>()
        )))),
    }
}

fn overview(shared: &Shared, payload: &[u8]) -> Result<FleetStatus, QueryError> {
    // An empty payload means "now".
    let q: OverviewQuery = if payload.is_empty() {
        OverviewQuery::default()
    } else {
        decode(payload)?
    };
    let target = match q.as_of {
        None => return Ok(shared.read_state().projections.fleet.clone()),
        Some(AsOf::Seq(seq)) => seq,
        Some(AsOf::Time(t)) => {
            let ms = u64::try_from(t.timestamp_millis())
                .map_err(|_| bad_request("as_of time is before 1970"))?;
            shared.store.seq_at_time(ms).map_err(unavailable)?
        }
    };
    let started = Instant::now();
    let (state, at) = shared
        .store
        .state_at::<State>(target)
        .map_err(unavailable)?;
    tracing::debug!(
        target_seq = target,
        seq = at.seq,
        snapshot = at.snapshot_seq,
        refolded = at.refolded,
        took_us = started.elapsed().as_micros() as u64,
        "time travel"
    );
    Ok(state.projections.fleet)
}

fn host(shared: &Shared, host: &HostId) -> Result<HostStatus, QueryError> {
    shared
        .read_state()
        .projections
        .fleet
        .hosts
        .get(host)
        .cloned()
        .ok_or_else(|| {
            error(
                QueryErrorKind::NotFound,
                format!("host '{host}' is not known"),
            )
        })
}

fn history(shared: &Shared, q: &HistoryQuery) -> Vec<HistoryEntry> {
    shared.read_state().projections.history.page(
        q.host.as_ref(),
        q.service.as_ref(),
        q.before_seq,
        page_size(q.limit),
    )
}

fn alerts(shared: &Shared, q: &AlertsQuery) -> Vec<Alert> {
    let state = shared.read_state();
    state
        .projections
        .alerts
        .alerts
        .values()
        .rev()
        .filter(|a| q.include_resolved || a.resolved_at.is_none())
        .take(page_size(q.limit))
        .cloned()
        .collect()
}

fn log_head(shared: &Shared) -> Result<LogHead, QueryError> {
    let head = *shared.head.borrow();
    Ok(LogHead {
        seq: head.seq,
        hash: hex::encode(head.hash),
        committed_at: (head.commit_ms > 0)
            .then(|| DateTime::from_timestamp_millis(head.commit_ms as i64))
            .flatten(),
    })
}

fn registry(shared: &Shared) -> Registry {
    shared.read_state().projections.registry_redacted()
}

fn users(shared: &Shared) -> BTreeMap<UserName, UserRecord> {
    shared.read_state().projections.registry_redacted().users
}

fn user_credential(shared: &Shared, user: &UserName) -> Result<UserRecord, QueryError> {
    shared
        .read_state()
        .projections
        .registry
        .users
        .get(user)
        .cloned()
        .ok_or_else(|| {
            error(
                QueryErrorKind::NotFound,
                format!("user '{user}' does not exist"),
            )
        })
}

/// The host and service an event is about, its severity (info when it has none).
pub fn event_facets(event: &Event) -> (Option<&HostId>, Option<&ServiceName>, Severity) {
    match event {
        Event::Agent(AgentEvent::Reported(r)) => (Some(&r.host), None, Severity::Info),
        Event::Agent(AgentEvent::Raised(n)) => (Some(&n.host), n.service.as_ref(), n.severity),
        Event::Agent(AgentEvent::KeyIssued { host, .. }) => (Some(host), None, Severity::Info),
        Event::Host(h) => (Some(h.host()), None, Severity::Info),
        Event::Service(s) => match s {
            fleetbus_schemas::events::ServiceEvent::Registered(spec)
            | fleetbus_schemas::events::ServiceEvent::Updated(spec) => {
                (Some(&spec.host), Some(&spec.name), Severity::Info)
            }
            fleetbus_schemas::events::ServiceEvent::Removed { host, name }
            | fleetbus_schemas::events::ServiceEvent::StatusObserved { host, name, .. } => {
                (Some(host), Some(name), Severity::Info)
            }
            #[allow(unreachable_patterns)]
            _ => (None, None, Severity::Info),
        },
        Event::Alert(AlertEvent::Raised {
            host,
            service,
            severity,
            ..
        }) => (host.as_ref(), service.as_ref(), *severity),
        _ => (None, None, Severity::Info),
    }
}

/// Replaces credential material in an envelope (key and password hashes).
pub fn redact(mut envelope: Envelope) -> Envelope {
    const REDACTED: &str = "redacted";
    match &mut envelope.event {
        Event::Agent(AgentEvent::KeyIssued { key_hash, .. }) => *key_hash = REDACTED.into(),
        Event::Config(fleetbus_schemas::events::ConfigEvent::PassphraseSet {
            passphrase_hash,
            ..
        }) => *passphrase_hash = REDACTED.into(),
        Event::User(UserEvent::Added { password_hash, .. })
        | Event::User(UserEvent::PasswordChanged { password_hash, .. }) => {
            *password_hash = REDACTED.into()
        }
        _ => {}
    }
    envelope
}

fn matches(q: &EventsQuery, env: &Envelope) -> bool {
    let (host, service, severity) = event_facets(&env.event);
    if q.host.as_ref().is_some_and(|h| Some(h) != host) {
        return false;
    }
    if q.service.as_ref().is_some_and(|s| Some(s) != service) {
        return false;
    }
    if q.domain.as_deref().is_some_and(|d| d != env.event.domain()) {
        return false;
    }
    if q.type_name
        .as_deref()
        .is_some_and(|t| t != env.event.type_name())
    {
        return false;
    }
    if q.min_severity.is_some_and(|m| severity < m) {
        return false;
    }
    if q.since.is_some_and(|t| env.time < t) {
        return false;
    }
    if q.until.is_some_and(|t| env.time >= t) {
        return false;
    }
    true
}

fn events(shared: &Shared, q: &EventsQuery) -> Result<Vec<LogRecord>, QueryError> {
    let limit = page_size(q.limit);
    let iter = match (q.after_seq, q.before_seq) {
        (Some(after), _) => shared.store.export(after.saturating_add(1)),
        (None, Some(before)) => shared.store.export_before(before),
        (None, None) => shared.store.export_before(u64::MAX),
    }
    .map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in iter.take(MAX_SCAN) {
        let entry: Entry = entry.map_err(unavailable)?;
        let envelope = entry.envelope().map_err(unavailable)?;
        if !matches(q, &envelope) {
            continue;
        }
        out.push(LogRecord {
            seq: entry.seq,
            subject: entry.subject,
            hash: hex::encode(entry.hash),
            envelope: redact(envelope),
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// `committed` queries waiting at once; more are answered `Unavailable`.
const COMMITTED_WAITERS: usize = 1024;

/// Answers a [`CommittedQuery`]: looks the id up in the log's dedup index (a read transaction
/// sees only committed entries) and again after every commit, until it is there or the wait is
/// over.
async fn committed(shared: &Shared, payload: &[u8]) -> Vec<u8> {
    let q: CommittedQuery = match decode(payload) {
        Ok(q) => q,
        Err(e) => return answer::<()>(Err(e)),
    };
    let wait = std::time::Duration::from_millis(q.wait_ms.min(COMMITTED_WAIT_MAX_MS).into());
    let deadline = tokio::time::Instant::now() + wait;
    let mut head = shared.head.clone();
    loop {
        // Marked seen before the lookup: a commit after it wakes the wait below.
        head.borrow_and_update();
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || store.lookup(q.id)).await {
            Ok(Ok(Some(seq))) => return answer(Ok::<_, QueryError>(Committed { seq })),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return answer::<()>(Err(unavailable(e))),
            Err(e) => {
                return answer::<()>(Err(error(
                    QueryErrorKind::Unavailable,
                    format!("lookup failed: {e}"),
                )))
            }
        }
        let changed = tokio::time::timeout_at(deadline, head.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return answer::<()>(Err(error(
                QueryErrorKind::NotFound,
                format!(
                    "event {} is not in the log (waited {} ms)",
                    q.id,
                    wait.as_millis()
                ),
            )));
        }
    }
}

/// Sends a query's answer and counts it.
async fn reply(
    client: &async_nats::Client,
    shared: &Shared,
    reply_to: async_nats::Subject,
    model: &str,
    bytes: Vec<u8>,
) {
    Metrics::inc(&shared.metrics.queries);
    if let Err(e) = client.publish(reply_to, bytes.into()).await {
        tracing::warn!(model, error = %e, "cannot send query reply");
    }
}

/// Answers `fleet.q.>` until shutdown; at most 4 queries run at once (they are blocking work).
/// `committed` queries only wait for commits and run beside them (at most
/// [`COMMITTED_WAITERS`]).
pub async fn serve(
    client: async_nats::Client,
    shared: Shared,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let mut sub = client
        .queue_subscribe(
            fleetbus_schemas::subjects::QUERIES_ALL.to_owned(),
            QUEUE_GROUP.to_owned(),
        )
        .await
        .map_err(|e| IngestError::Bus {
            what: "subscribe to queries",
            source: Box::new(e),
        })?;
    let permits = Arc::new(Semaphore::new(4));
    let waiters = Arc::new(Semaphore::new(COMMITTED_WAITERS));
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            () = shutdown.cancelled() => break,
        };
        let Some(msg) = msg else { break };
        let Some(reply_to) = msg.reply.clone() else {
            tracing::debug!(subject = %msg.subject, "query without reply subject ignored");
            continue;
        };
        if msg.subject.as_str() == fleetbus_schemas::subjects::query(model::COMMITTED) {
            let (shared, client) = (shared.clone(), client.clone());
            let waiter = waiters.clone().try_acquire_owned();
            tokio::spawn(async move {
                let bytes = match waiter {
                    Ok(_waiter) => committed(&shared, &msg.payload).await,
                    Err(_) => answer::<()>(Err(error(
                        QueryErrorKind::Unavailable,
                        format!("more than {COMMITTED_WAITERS} committed queries are waiting"),
                    ))),
                };
                reply(&client, &shared, reply_to, model::COMMITTED, bytes).await;
            });
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let model_name = msg
                .subject
                .as_str()
                .strip_prefix("fleet.q.")
                .unwrap_or_default()
                .to_owned();
            let payload = msg.payload.clone();
            let s2 = shared.clone();
            let m2 = model_name.clone();
            let bytes = tokio::task::spawn_blocking(move || answer_query(&s2, &m2, &payload))
                .await
                .unwrap_or_else(|e| {
                    answer::<()>(Err(error(
                        QueryErrorKind::Unavailable,
                        format!("query failed: {e}"),
                    )))
                });
            reply(&client, &shared, reply_to, &model_name, bytes).await;
            drop(permit);
        });
    }
    Ok(())
}
