//! `GET /healthz`: what ingest depends on, as it is right now — the NATS connection, each
//! stream reader (and how far the log trails its stream), the log writer. `200` only when all
//! of them work; `503` with the same body otherwise, so a probe and a person see the same truth.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State as Connection;
use async_nats::jetstream;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetbus_runtime::reader::ReaderStatus;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use fleetbus_log::{Head, LogStore};

/// How long the health check waits for the server's view of a stream.
const STREAM_INFO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the health check looks at.
pub(crate) struct Health {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream on it (stream heads, for the lag).
    pub js: jetstream::Context,
    /// The log (its stream positions).
    pub store: LogStore,
    /// Each stream reader's state.
    pub readers: Vec<(&'static str, watch::Receiver<ReaderStatus>)>,
    /// The committed head.
    pub head: watch::Receiver<Head>,
    /// Cancelled when the log writer failed.
    pub writer_failed: CancellationToken,
}

#[derive(Serialize)]
struct Body {
    status: &'static str,
    nats: &'static str,
    writer: &'static str,
    head_seq: u64,
    streams: Vec<StreamHealth>,
}

#[derive(Serialize)]
struct StreamHealth {
    stream: &'static str,
    reader: String,
    /// The last stream sequence the log has taken in.
    position: Option<u64>,
    /// The stream's last sequence, when the server answered.
    last_seq: Option<u64>,
    /// How many messages the log trails the stream by.
    lag: Option<u64>,
}

/// The `/healthz` route.
pub(crate) fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(health)
}

async fn healthz(AxState(h): AxState<Arc<Health>>) -> Response {
    let connected = h.client.connection_state() == Connection::Connected;
    let writer_ok = !h.writer_failed.is_cancelled();
    let mut streams = Vec::with_capacity(h.readers.len());
    let mut readers_ok = true;
    for (stream, status) in &h.readers {
        let status = status.borrow().clone();
        readers_ok &= status == ReaderStatus::Consuming;
        let reader = match status {
            ReaderStatus::Starting => "starting".to_owned(),
            ReaderStatus::Consuming => "consuming".to_owned(),
            ReaderStatus::Recovering(why) => format!("recovering: {why}"),
        };
        let position = h.store.position(stream).ok();
        let last_seq = if connected {
            stream_last_seq(&h.js, stream).await
        } else {
            None
        };
        let lag = position.zip(last_seq).map(|(p, l)| l.saturating_sub(p));
        streams.push(StreamHealth {
            stream,
            reader,
            position,
            last_seq,
            lag,
        });
    }
    let healthy = connected && writer_ok && readers_ok;
    let body = Body {
        status: if healthy { "ok" } else { "unavailable" },
        nats: if connected {
            "connected"
        } else {
            "disconnected"
        },
        writer: if writer_ok { "ok" } else { "failed" },
        head_seq: h.head.borrow().seq,
        streams,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn stream_last_seq(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let info = async {
        let mut s = js.get_stream(stream).await.ok()?;
        s.info().await.ok().map(|i| i.state.last_sequence)
    };
    tokio::time::timeout(STREAM_INFO_TIMEOUT, info)
        .await
        .ok()
        .flatten()
}
