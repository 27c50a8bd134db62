//! fleetbus ingest: the agent HTTP front door and the keeper of the event log.
//!
//! Ingest is the only writer of the hash-chained redb log (`fleetbus-log`) and of the projections
//! folded from it ([`State`], from `fleetbus-projections`). It reads `EVENTS` and `SECRETS` in order from the positions the
//! log records with every commit ([`bus::consume_events`]), appends in group-committed durable
//! transactions ([`writer`]); answers agents over HTTP only after their events are committed ([`api`]); turns
//! host/agent/user/alert/config commands into events ([`commands`]); and answers `fleet.q.*`
//! read-model queries ([`queries`]).

pub(crate) mod anchor;
pub mod api;
pub(crate) mod bus;
pub(crate) mod commands;
pub(crate) mod commit;
pub mod config;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod hub;
pub(crate) mod metrics;
pub mod queries;
pub(crate) mod writer;

use std::sync::{Arc, RwLock};

use fleetbus_bus_config::streams;
use fleetbus_log as log;
use fleetbus_runtime::reader::StreamReader;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use fleetbus_projections::State;

/// Everything that stops ingest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The config is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The state directory could not be created.
    #[error("config: state_dir: cannot create {dir}: {source}")]
    StateDir {
        /// The directory.
        dir: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Fleet management could not start (its snapshot key, its settings).
    #[error("config: {0}")]
    Fleet(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The log could not be opened, read or written.
    #[error(transparent)]
    Log(#[from] log::LogError),
    /// NATS connect failed.
    #[error(transparent)]
    Runtime(#[from] fleetbus_runtime::RuntimeError),
    /// A bus operation failed.
    #[error("bus: {what}: {source}")]
    Bus {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Publishing or asking on the bus failed.
    #[error("bus: {0}")]
    BusIo(#[from] fleetbus_runtime::bus::BusError),
    /// The agent API could not listen.
    #[error("http listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A task or thread died.
    #[error("internal: {0}")]
    Internal(String),
    /// A blocking or spawned task failed (panicked or was cancelled).
    #[error("internal: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The log writer thread could not be started.
    #[error("internal: cannot start the writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
}

/// Runs ingest until `shutdown` is cancelled (or the log fails), then drains: the HTTP server
/// finishes its requests, consumers stop, the writer commits what it holds, and a projection
/// snapshot is saved at the head.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestError> {
    config.validate().map_err(IngestError::Config)?;
    let (store, state, head) = open_log(&config).await?;
    let client = fleetbus_runtime::nats::connect(&config.nats, &shutdown).await?;
    let js = async_nats::jetstream::new(client.clone());
    let state = Arc::new(RwLock::new(state));
    let (shared, writer, log_tx) = start_writer(&config, &store, &state, head)?;

    // Two stop signals: HTTP stops first (finishing requests, which need the consumers), then
    // the bus side.
    let http_stop = CancellationToken::new();
    let bus_stop = CancellationToken::new();
    let writer_failed = CancellationToken::new();
    let writer_join = watch_writer(writer, writer_failed.clone());
    let (bus_tasks, readers) = spawn_bus_tasks(&config, &client, &js, &shared, log_tx, &bus_stop)?;
    let http = serve_http(
        &config,
        &client,
        &js,
        &shared,
        readers,
        &writer_failed,
        &http_stop,
    )
    .await?;

    tokio::select! {
        () = shutdown.cancelled() => tracing::info!("draining"),
        () = writer_failed.cancelled() => tracing::error!("the log writer failed; stopping"),
    }
    drain(http, http_stop, bus_tasks, bus_stop, writer_join).await?;
    save_final_snapshot(store, state, &shared.metrics).await
}

/// Opens the log and verifies what the service relies on before serving; a log that does not
/// verify is refused (naming the entry or snapshot) unless `--repair` was asked for.
async fn open_log(config: &Config) -> Result<(log::LogStore, State, log::Head), IngestError> {
    let path = config.log_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| IngestError::StateDir {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    let repair = config.log.repair;
    let opened =
        tokio::task::spawn_blocking(move || log::open_verified::<State>(&path, repair)).await??;
    if let Some(r) = &opened.repaired {
        tracing::warn!(nothing_done = r.nothing_done(), backup = ?r.backup, truncated_after = ?r.truncated_after,
            entries_removed = r.entries_removed, snapshots_dropped = r.snapshots_dropped,
            dedup_rebuilt = r.dedup_rebuilt, "log repaired");
    }
    let log::Opened {
        store, state, at, ..
    } = opened;
    let head = store.head()?;
    tracing::info!(path = %store.path().display(), head = head.seq, snapshot = at.snapshot_seq,
        refolded = at.refolded, verified_entries = opened.verified.entries,
        verified_snapshots = opened.verified.snapshots, anchors = opened.verified.anchors,
        bound_legacy_snapshots = opened.bound, proved_snapshots = opened.proved,
        proof_refolded = opened.proof_refolded, verify_s = opened.verify_seconds, "log opened and verified");
    Ok((store, state, head))
}

/// The writer thread that group-commits to the log, what readers share with it, and the queue
/// that feeds it.
type WriterThread = std::thread::JoinHandle<Result<(), log::LogError>>;

fn start_writer(
    config: &Config,
    store: &log::LogStore,
    state: &Arc<RwLock<State>>,
    head: log::Head,
) -> Result<(writer::Shared, WriterThread, mpsc::Sender<writer::Pending>), IngestError> {
    let hub = Arc::new(hub::Hub::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let (head_tx, head_rx) = watch::channel(head);
    let (tx, rx) = mpsc::channel(config.log.queue);
    let writer = writer::spawn(
        store.clone(),
        state.clone(),
        hub.clone(),
        metrics.clone(),
        head_tx,
        rx,
        writer::WriterConfig {
            max_batch: config.log.max_batch,
            snapshot_every: config.log.snapshot_every,
            linger: std::time::Duration::from_millis(config.log.linger_ms),
        },
    )
    .map_err(IngestError::WriterThread)?;
    let shared = writer::Shared {
        store: store.clone(),
        state: state.clone(),
        hub,
        head: head_rx,
        metrics,
    };
    Ok((shared, writer, tx))
}

/// Joins the writer thread off the runtime; `failed` is cancelled if it ends with an error.
fn watch_writer(
    writer: WriterThread,
    failed: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), log::LogError>> {
    tokio::task::spawn_blocking(move || {
        let r = writer
            .join()
            .unwrap_or_else(|_| Err(log::LogError::Storage("the writer thread panicked".into())));
        if r.is_err() {
            failed.cancel();
        }
        r
    })
}

type StreamReaders = Vec<(
    &'static str,
    watch::Receiver<fleetbus_runtime::reader::ReaderStatus>,
)>;

/// The bus side: the stream readers feeding the writer, the command consumers, anchors and
/// `fleet.q.*` queries.
fn spawn_bus_tasks(
    config: &Config,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    shared: &writer::Shared,
    tx: mpsc::Sender<writer::Pending>,
    bus_stop: &CancellationToken,
) -> Result<(JoinSet<Result<(), IngestError>>, StreamReaders), IngestError> {
    let mut bus_tasks: JoinSet<Result<(), IngestError>> = JoinSet::new();
    let mut readers = Vec::new();
    for (stream, consumer) in [
        (streams::EVENTS_STREAM, streams::INGEST_EVENTS),
        (streams::SECRETS_STREAM, streams::INGEST_SECRETS),
    ] {
        // Resume right after the last message the log took in, whatever happened to the
        // process that read it before.
        let position = shared.store.position(stream)?;
        tracing::info!(
            stream,
            position,
            "resuming the stream after the log's position"
        );
        let reader =
            StreamReader::new(js.clone(), stream, consumer, position + 1, bus_stop.clone());
        readers.push((stream, reader.status()));
        bus_tasks.spawn(bus::consume_events(
            reader,
            stream,
            tx.clone(),
            shared.metrics.clone(),
        ));
    }
    drop(tx);
    for area in commands::AREAS {
        bus_tasks.spawn(commands::consume_area(
            js.clone(),
            shared.clone(),
            area,
            bus_stop.clone(),
        ));
    }
    bus_tasks.spawn(anchor::publish_anchors(
        js.clone(),
        shared.store.clone(),
        anchor::AnchorSettings {
            every: std::time::Duration::from_secs(config.log.anchor_every_s),
            every_entries: config.log.anchor_every_entries,
        },
        bus_stop.clone(),
    ));
    bus_tasks.spawn(queries::serve(
        client.clone(),
        shared.clone(),
        bus_stop.clone(),
    ));
    Ok((bus_tasks, readers))
}

/// Binds the HTTP address and serves the agent API, health and the fleet routes until
/// `http_stop`.
async fn serve_http(
    config: &Config,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    shared: &writer::Shared,
    readers: StreamReaders,
    writer_failed: &CancellationToken,
    http_stop: &CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), IngestError>>, IngestError> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| IngestError::Listen {
            addr: config.http_addr.to_string(),
            source,
        })?;
    tracing::info!(addr = %config.http_addr, "agent api listening");
    let app = api::app(Arc::new(api::ApiState::new(
        shared.clone(),
        js.clone(),
        config.limits.clone(),
    )));
    let app = app.merge(health::router(Arc::new(health::Health {
        client: client.clone(),
        js: js.clone(),
        store: shared.store.clone(),
        readers,
        head: shared.head.clone(),
        writer_failed: writer_failed.clone(),
    })));
    let app = app.merge(
        fleet::router(
            shared.clone(),
            js.clone(),
            fleet::Settings::new(&config.state_dir),
        )
        .map_err(|e| IngestError::Fleet(Box::new(e)))?,
    );
    let stop = http_stop.clone();
    let limits = config.limits.http.clone();
    Ok(tokio::spawn(async move {
        fleetbus_runtime::http::serve(listener, app, limits, stop).await;
        Ok::<(), IngestError>(())
    }))
}

/// The staged drain: HTTP first, then the bus tasks, then the writer commits what it holds.
async fn drain(
    http: tokio::task::JoinHandle<Result<(), IngestError>>,
    http_stop: CancellationToken,
    mut bus_tasks: JoinSet<Result<(), IngestError>>,
    bus_stop: CancellationToken,
    writer_join: tokio::task::JoinHandle<Result<(), log::LogError>>,
) -> Result<(), IngestError> {
    http_stop.cancel();
    match http.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "http server"),
        Err(e) => tracing::warn!(error = %e, "http task"),
        Ok(Ok(())) => {}
    }
    bus_stop.cancel();
    while let Some(r) = bus_tasks.join_next().await {
        match r {
            Ok(Err(e)) => tracing::warn!(error = %e, "bus task ended with an error"),
            Err(e) => tracing::warn!(error = %e, "bus task panicked"),
            Ok(Ok(())) => {}
        }
    }
    writer_join.await??;
    Ok(())
}

/// A projection snapshot at the head, so the next start folds nothing.
async fn save_final_snapshot(
    store: log::LogStore,
    state: Arc<RwLock<State>>,
    metrics: &metrics::Metrics,
) -> Result<(), IngestError> {
    let snap = tokio::task::spawn_blocking(move || {
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        store.save_snapshot(&*guard)
    })
    .await??;
    tracing::info!(
        snapshot_seq = snap,
        appended = metrics::Metrics::get(&metrics.appended),
        duplicates = metrics::Metrics::get(&metrics.duplicates),
        "ingest stopped"
    );
    Ok(())
}
