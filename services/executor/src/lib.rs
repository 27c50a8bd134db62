//! fleetbus executor: turns `fleet.cmd.job.*` commands into work on remote hosts over SSH
//! (russh), and tells what happened only through events.
//!
//! - [`ssh`]: the connection pool, host key policy and command execution with cancel.
//! - [`templates`], [`tasks`], [`batch`], [`verbs`]: everything that may reach a remote shell, built
//!   from allowlisted templates and typed, quoted values ([`quote`]); [`sudoers`] prints the
//!   exact sudoers lines those need.
//! - [`jobs`]: the job lifecycle (queue, limits, duplicates, cancel, output, crash recovery).
//! - [`run`]: the service — consumes the `cmd-job` work queue and follows registry events.

pub(crate) mod batch;
pub(crate) mod bus;
pub mod config;
pub(crate) mod error;
pub(crate) mod inventory;
pub(crate) mod jobs;
pub(crate) mod journal;
pub(crate) mod resources;
pub mod ssh;
pub mod status;
pub mod verbs;

pub use fleetbus_remote::sudoers;
pub(crate) use fleetbus_remote::{quote, tasks, templates};

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use fleetbus_runtime::reader::StreamReader;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::{subjects, Actor, Envelope, Event};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use error::{ExecError, Rejection};

use crate::inventory::Inventory;
use crate::jobs::Engine;
use crate::ssh::known_hosts::KnownHosts;
use crate::ssh::{KeyNotice, SshPool, SshSettings};

/// The work-queue consumer of job commands (created by bus-config's `ensure`).
pub const CONSUMER: &str = fleetbus_schemas::subjects::JOB_COMMANDS_CONSUMER;

/// Event subjects the executor follows (registry, keys, task definitions).
pub const FOLLOWED: [&str; 6] = fleetbus_schemas::subjects::EXECUTOR_EVENT_FILTERS;

fn bus_err(e: impl std::error::Error + Send + Sync + 'static) -> ExecError {
    ExecError::Nats {
        context: String::new(),
        source: Box::new(e),
        hint: "",
    }
}

/// The inventory cache: what the last run folded from the log (the replay brings it up to date).
fn cached_inventory(cache: &std::path::Path) -> Inventory {
    std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Runs the executor until `shutdown` is cancelled, then drains running jobs (up to 10 s, then
/// cancels them) and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ExecError> {
    config.validate()?;
    let state = config.state_dir();
    std::fs::create_dir_all(&state)
        .map_err(ExecError::io(format!("creating {}", state.display())))?;
    let known = Arc::new(KnownHosts::open(&state.join("known_hosts.json"))?);
    let (notice_tx, mut notices) = mpsc::unbounded_channel();
    let mut settings = SshSettings::new(config.key_path());
    settings.passwords = config.passwords()?;
    settings.connect_timeout = Duration::from_secs(config.ssh.connect_timeout_secs.max(1));
    settings.keepalive = Duration::from_secs(config.ssh.keepalive_secs.max(1));
    settings.kill_grace = Duration::from_secs(config.ssh.kill_grace_secs);
    settings.pool = config.ssh.pool;
    settings.coalesce_window = Duration::from_millis(config.ssh.coalesce_window_ms);
    settings.coalesce_max_parts = config.ssh.coalesce_max_parts;
    settings.coalesce_shell = config.ssh.coalesce_shell;
    let pool = SshPool::new(settings, known, notice_tx)?;

    let client = fleetbus_runtime::nats::connect(&config.nats, &shutdown)
        .await
        .map_err(bus_err)?;
    let js = jetstream::new(client.clone());
    let bus = bus::Bus::new(js.clone());

    // One in-order reader of the followed subjects: it replays them from the start of EVENTS,
    // then follows. One name per process, so replicas never delete each other's reader.
    let mut followed = StreamReader::new(
        js.clone(),
        subjects::EVENTS_STREAM,
        format!("executor-{}", ulid::Ulid::new()),
        1,
        shutdown.clone(),
    )
    .filter_subjects(FOLLOWED);

    let cache = state.join("inventory.json");
    let inventory = cached_inventory(&cache);
    let cache_path = cache.clone();
    let save: Box<dyn Fn(&Inventory) + Send + Sync> = Box::new(move |inv: &Inventory| {
        let inv = inv.clone();
        let path = cache_path.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("json.tmp");
            let ok = serde_json::to_vec(&inv)
                .ok()
                .map(|b| std::fs::write(&tmp, b).and_then(|_| std::fs::rename(&tmp, &path)));
            if !matches!(ok, Some(Ok(()))) {
                warn!(path = %path.display(), "cannot write the inventory cache");
            }
        });
    });
    let journal_path = state.join("jobs.jsonl");
    let unfinished = journal::recover(&journal_path)?;
    let journal = journal::Journal::open(journal_path)?;
    let engine = Engine::new(
        pool,
        bus.clone(),
        journal,
        config.limits.clone(),
        config.command_timeout(),
        config.verbs.clone(),
        inventory,
        save,
    );
    // Replay what the log holds (the reader keeps its place if this takes too long or EVENTS
    // is not there yet: whatever is left arrives below like any new event).
    let mut replayed = Vec::new();
    let caught_up = tokio::time::timeout(
        Duration::from_secs(3),
        followed.catch_up(|m| match fleetbus_schemas::decode::<Envelope>(&m.payload) {
            Ok(env) => replayed.push(env),
            Err(e) => warn!(subject = %m.subject, error = %e, "ignoring undecodable event"),
        }),
    )
    .await;
    match caught_up {
        Ok(_) => info!(events = replayed.len(), "inventory replayed from EVENTS"),
        Err(_) => info!(
            events = replayed.len(),
            "EVENTS replay unfinished after 3 s; starting from the cached inventory and following"
        ),
    }
    for env in &replayed {
        engine.apply_event(&env.event).await;
    }
    let me = Actor::service(bus::SOURCE);
    bus.event(
        &me,
        None,
        Event::System(SystemEvent::ComponentStarted {
            component: bus::SOURCE.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
    )
    .await?;
    engine.recover(unfinished).await?;

    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(subjects::COMMANDS_STREAM)
        .await
        .map_err(|e| ExecError::Nats {
            context: format!("stream {}: ", subjects::COMMANDS_STREAM),
            source: e.into(),
            hint: "",
        })?
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| ExecError::Nats {
            context: format!("consumer {CONSUMER}: "),
            source: e,
            hint: " (run bus-config ensure)",
        })?;
    let mut messages = consumer.messages().await.map_err(bus_err)?;
    info!(consumer = CONSUMER, "executor ready");

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(n) = notices.recv() => {
                let event = match n {
                    KeyNotice::Pinned { host, key } => HostEvent::KeyPinned { host, algorithm: key.algorithm, fingerprint: key.fingerprint },
                    KeyNotice::Mismatch { host, expected, presented } => HostEvent::KeyMismatch { host, expected, presented },
                };
                if let Err(e) = bus.event(&me, None, Event::Host(event)).await {
                    warn!(error = %e, "cannot publish host key event");
                }
            }
            msg = followed.next() => {
                // `None` only once shutdown is requested.
                let Some(msg) = msg else { break };
                match fleetbus_schemas::decode::<Envelope>(&msg.payload) {
                    Ok(env) => engine.apply_event(&env.event).await,
                    Err(e) => warn!(subject = %msg.subject, error = %e, "ignoring undecodable event"),
                }
            }
            next = messages.next() => {
                match next {
                    Some(Ok(msg)) => {
                        let subject = msg.subject.to_string();
                        match engine.handle(&subject, &msg.payload).await {
                            Ok(()) => {
                                if let Err(e) = msg.ack().await {
                                    warn!(subject, error = %e, "cannot ack command");
                                }
                            }
                            // Not acked: JetStream redelivers it after the ack wait.
                            Err(e) => warn!(subject, error = %e, "command not handled; will be redelivered"),
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "command stream error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => {
                        warn!("command stream ended");
                        break;
                    }
                }
            }
        }
    }
    info!("draining running jobs");
    let tracker = engine.tracker().clone();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        engine.cancel_all();
        let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    }
    Ok(())
}

/// `fleetbus-executor sudoers --host H`: the sudoers lines `host` needs for its services and
/// the configured verbs, from the executor's inventory cache (its fold of the log).
pub fn sudoers_from_inventory(config: &Config, host: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    // Hosts come from the log only: the executor's inventory cache is its fold of it.
    let cache = config.state_dir().join("inventory.json");
    let inventory: inventory::Inventory = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| {
            format!(
                "no inventory at {}: the executor learns hosts from the log (`fleetctl host import`); start it once",
                cache.display()
            )
        })?;
    let host: fleetbus_schemas::HostId = host.parse().context("--host")?;
    let spec = inventory.hosts.get(&host).with_context(|| {
        format!(
            "no host {host} in the executor's inventory ({}); register it with `fleetctl host add` or `host import`",
            cache.display()
        )
    })?;
    let services: Vec<_> = inventory
        .services
        .get(&host)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let tasks: Vec<_> = config.verbs.values().cloned().collect();
    Ok(sudoers::for_host(
        spec.host.as_str(),
        &spec.user,
        &services,
        &tasks,
    )?)
}
