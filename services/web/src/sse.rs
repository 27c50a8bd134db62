//! Server-Sent Events. `/live` (and `/api/events/stream`) carries every event with its EVENTS
//! stream sequence as the SSE id, so `Last-Event-ID` resumes exactly: from memory when the ring
//! buffer reaches back far enough, else replayed from JetStream. `/jobs/{job}/live` carries a
//! job's output chunks (id = chunk sequence) and its state events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fleetbus_runtime::bus::JobOutput;
use fleetbus_schemas::events::job::OutputStream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Principal;
use crate::hub::{replay, LiveEvent};
use crate::pages::jobs::parse_job;
use crate::{Shared, WebError};

/// SSE routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/live", get(live))
        .route("/api/events/stream", get(live))
        .route("/jobs/{job}/live", get(job_live))
}

/// Filters of the live stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LiveQuery {
    /// Only events about this host.
    #[serde(default)]
    pub host: Option<String>,
    /// Only events about this job.
    #[serde(default)]
    pub job: Option<String>,
    /// Resume after this sequence (for clients that cannot set `Last-Event-ID`).
    #[serde(default)]
    pub last_event_id: Option<u64>,
}

fn last_event_id(headers: &HeaderMap, q: &LiveQuery) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.last_event_id)
}

fn wanted(q: &LiveQuery, e: &LiveEvent) -> bool {
    q.host
        .as_deref()
        .is_none_or(|h| e.host.as_deref() == Some(h))
        && q.job.as_deref().is_none_or(|j| e.job.as_deref() == Some(j))
}

fn sse_event(e: &LiveEvent) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event("event")
        .data(e.data.clone())
}

/// The most events one resume replays from JetStream.
const MAX_REPLAY: usize = 50_000;

/// `GET /live`: every event from now on, or from after `Last-Event-ID`.
pub(crate) async fn live(
    State(state): State<Shared>,
    _p: Principal,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    let resume = last_event_id(&headers, &q);
    // Subscribe before reading the backlog so nothing falls between them.
    let mut rx = state.hub.subscribe();
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(512);
    let shutdown = state.shutdown.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let mut sent = resume.unwrap_or_else(|| state.hub.last_seq());
        if resume.is_some() {
            let Ok(()) = send_backlog(&state, &q, &tx, &mut sent).await else {
                return;
            };
        }
        loop {
            let next = tokio::select! {
                e = rx.recv() => e,
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            };
            match next {
                Ok(e) => {
                    if e.seq <= sent {
                        continue;
                    }
                    sent = e.seq;
                    if wanted(&q, &e) && tx.send(Ok(sse_event(&e))).await.is_err() {
                        return;
                    }
                }
                // A slow client fell behind the broadcast: catch up from memory or the stream.
                Err(RecvError::Lagged(_)) => {
                    let Ok(()) = send_backlog(&state, &q, &tx, &mut sent).await else {
                        return;
                    };
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn send_backlog(
    state: &Shared,
    q: &LiveQuery,
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
    sent: &mut u64,
) -> Result<(), ()> {
    let (memory, complete) = state.hub.since(*sent);
    let mut backlog: Vec<Arc<LiveEvent>> = Vec::new();
    if !complete {
        let upto = memory
            .first()
            .map(|e| e.seq - 1)
            .unwrap_or_else(|| state.hub.last_seq());
        let old = replay(state.bus.jetstream(), *sent, upto, MAX_REPLAY).await;
        if old.is_empty() {
            tracing::warn!(
                after = *sent,
                upto,
                "no events replayed for a resuming client"
            );
        }
        backlog.extend(old);
    }
    backlog.extend(memory);
    for e in backlog {
        if e.seq <= *sent {
            continue;
        }
        *sent = e.seq;
        if wanted(q, &e) && tx.send(Ok(sse_event(&e))).await.is_err() {
            return Err(());
        }
    }
    Ok(())
}

/// `GET /jobs/{job}/live`: `chunk` events (`{"stream":"stdout","data":…}`, id = chunk
/// sequence) and `job` events (the job's lifecycle events, same JSON as `/live`).
pub(crate) async fn job_live(
    State(state): State<Shared>,
    _p: Principal,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Result<Response, WebError> {
    let job = parse_job(&job)?;
    if crate::pages::jobs::phase(&state, job).is_none() {
        return Err(WebError::NotFound(format!("unknown job {job}")));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let job_text = job.to_string();
    let mut rx = state.hub.subscribe();
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(512);
    let shutdown = state.shutdown.clone();
    let js = state.bus.jetstream().clone();
    // Output chunks.
    let chunk_tx = tx.clone();
    let chunk_shutdown = shutdown.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let mut output = match JobOutput::open(&js, job).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "cannot read job output");
                return;
            }
        };
        loop {
            let next = tokio::select! {
                c = output.next() => c,
                () = chunk_shutdown.cancelled() => return,
                () = chunk_tx.closed() => return,
            };
            let Some(chunk) = next else { return };
            if chunk.seq <= after {
                continue;
            }
            let data = serde_json::json!({
                "seq": chunk.seq,
                "stream": match chunk.stream { OutputStream::Stdout => "stdout", OutputStream::Stderr => "stderr" },
                "data": chunk.data,
            });
            let event = SseEvent::default()
                .id(chunk.seq.to_string())
                .event("chunk")
                .data(data.to_string());
            if chunk_tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    // Lifecycle events (no id: they do not move the resume point of the output).
    tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                e = rx.recv() => e,
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            };
            match next {
                Ok(e) if e.job.as_deref() == Some(job_text.as_str()) => {
                    let event = SseEvent::default().event("job").data(e.data.clone());
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
