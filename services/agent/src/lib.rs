//! fleetbus-agent: a small program for a host. It reads resource usage from `/proc`, the state
//! of configured services from systemd or runit, and pushes an `AgentReport` to ingest's HTTP
//! API every interval. Each report gets its event id when it is taken; while ingest is
//! unreachable (or answers 5xx/429) reports wait in a bounded on-disk buffer and are sent later
//! in batches with their original ids, so ingest stores each exactly once.

pub(crate) mod buffer;
pub(crate) mod client;
pub(crate) mod config;
pub mod managed;
pub(crate) mod proc;
pub(crate) mod services;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use fleetbus_schemas::events::agent::{AgentEventKind, AgentNotice, AgentReport};
use fleetbus_schemas::{EventId, ServiceName, Severity};
use tokio_util::sync::CancellationToken;

pub use buffer::Buffer;
pub use client::{Delivery, IngestClient};
pub use config::AgentConfig;
use proc::CpuSample;
pub use wire::{NoticePush, ReportPush};

/// The version sent in every report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long a standalone CPU reading (first report, `once`) samples `/proc/stat`.
const CPU_SAMPLE_WINDOW: Duration = Duration::from_millis(200);

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The config could not be loaded.
    #[error(transparent)]
    ConfigLoad(#[from] fleetbus_runtime::ConfigError),
    /// A config value is invalid.
    #[error("config key '{key}': {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The key file is unusable (the key itself is never included).
    #[error("agent key file {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A system reading could not be parsed.
    #[error("{what}: {reason}")]
    Parse {
        /// Which source (`/proc/stat`, `df -Pk`, …).
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The on-disk buffer could not be used.
    #[error("report buffer {}: {reason}", path.display())]
    Buffer {
        /// The file or directory.
        path: PathBuf,
        /// The OS error or encoding problem.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
    /// Invalid input on the command line.
    #[error("{0}")]
    Usage(String),
    /// Ingest refused a request for good (4xx).
    #[error("ingest rejected the {what} with HTTP {status}: {reason}")]
    Rejected {
        /// Report or notice.
        what: &'static str,
        /// Status code.
        status: u16,
        /// Ingest's explanation.
        reason: String,
    },
    /// Ingest could not be reached or answered 5xx.
    #[error("ingest unavailable: {0}")]
    Unavailable(String),
}

/// What happened to the reports of one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Reports ingest accepted in this round (including buffered ones).
    pub delivered: usize,
    /// Reports ingest refused for good (logged and removed).
    pub rejected: usize,
    /// Reports still waiting in the buffer.
    pub buffered: usize,
    /// Why delivery stopped, if it did.
    pub last_error: Option<String>,
    /// The status and reason of the last rejection, if any.
    pub rejection: Option<(u16, String)>,
}

/// One agent: config, HTTP client, buffer and the previous CPU sample.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    client: IngestClient,
    buffer: Buffer,
    cpu: Option<CpuSample>,
}

impl Agent {
    /// Reads the key, opens the buffer.
    pub async fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        let key = config.read_key()?;
        let client = IngestClient::new(
            &config.ingest_url,
            config.agent.clone(),
            key,
            config.request_timeout(),
        )?;
        let buffer = Buffer::open(&config.buffer_dir, config.buffer_max_bytes).await?;
        if !buffer.is_empty() {
            tracing::info!(
                buffered = buffer.len(),
                bytes = buffer.bytes(),
                "reports waiting from an earlier run"
            );
        }
        Ok(Agent {
            config,
            client,
            buffer,
            cpu: None,
        })
    }

    /// The buffer (for tests and status output).
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Takes a report now. The first call samples the CPU over a short window; later calls
    /// use the sample of the previous call.
    pub async fn collect(&mut self) -> Result<ReportPush, AgentError> {
        let proc_root = &self.config.proc_root;
        let earlier = match self.cpu {
            Some(s) => s,
            None => {
                let s = proc::cpu_sample(proc_root).await?;
                tokio::time::sleep(CPU_SAMPLE_WINDOW).await;
                s
            }
        };
        let (managed_version, managed_hash) = managed::report_fields(&self.config).await;
        let now = proc::cpu_sample(proc_root).await?;
        self.cpu = Some(now);
        let resources = proc::read_resources(
            proc_root,
            &self.config.disk_path,
            now.busy_pct_since(&earlier),
        )
        .await?;
        let timeout = self.config.request_timeout();
        let watches = self.config.services.clone();
        let services = join_all(
            watches
                .into_iter()
                .map(|w| async move { services::observe(&w, timeout).await }),
        )
        .await;
        Ok(ReportPush {
            id: EventId::new(),
            time: Utc::now(),
            report: AgentReport {
                agent: self.config.agent.clone(),
                host: self.config.host.clone(),
                agent_version: VERSION.to_owned(),
                resources,
                services,
                config_version: managed_version,
                config_hash: managed_hash,
            },
        })
    }

    /// Delivers a fresh report: straight away when nothing is waiting, otherwise behind the
    /// buffered ones (order is kept). Whatever cannot be delivered stays buffered.
    pub async fn submit(&mut self, report: ReportPush) -> Result<RoundOutcome, AgentError> {
        let mut outcome = RoundOutcome::default();
        if self.buffer.is_empty() {
            match self.client.send_report(&report).await {
                Delivery::Accepted(_) => {
                    tracing::debug!(report_id = %report.id, "report delivered");
                    outcome.delivered = 1;
                    return Ok(outcome);
                }
                Delivery::Rejected { status, reason } => {
                    tracing::error!(report_id = %report.id, status, %reason, "ingest rejected the report; not retrying");
                    outcome.rejected = 1;
                    outcome.rejection = Some((status, reason));
                    return Ok(outcome);
                }
                Delivery::Retry(reason) => {
                    tracing::warn!(report_id = %report.id, %reason, "ingest unavailable, buffering the report");
                    self.buffer.push(&report).await?;
                    outcome.buffered = self.buffer.len();
                    outcome.last_error = Some(reason);
                    return Ok(outcome);
                }
            }
        }
        self.buffer.push(&report).await?;
        self.flush_into(&mut outcome).await?;
        Ok(outcome)
    }

    /// Sends buffered reports, oldest first, in batches, until the buffer is empty or ingest
    /// stops accepting.
    pub async fn flush(&mut self) -> Result<RoundOutcome, AgentError> {
        let mut outcome = RoundOutcome::default();
        self.flush_into(&mut outcome).await?;
        Ok(outcome)
    }

    async fn flush_into(&mut self, outcome: &mut RoundOutcome) -> Result<(), AgentError> {
        while !self.buffer.is_empty() {
            let batch = self.buffer.peek(self.config.batch_max).await?;
            if batch.is_empty() {
                continue; // every peeked file was unreadable and has been dropped
            }
            let ids: Vec<EventId> = batch.iter().map(|r| r.id).collect();
            match self.client.send_batch(&batch).await {
                Delivery::Accepted(_) => {
                    self.buffer.remove(&ids).await?;
                    outcome.delivered += ids.len();
                    tracing::info!(
                        sent = ids.len(),
                        waiting = self.buffer.len(),
                        "buffered reports delivered"
                    );
                }
                Delivery::Rejected { status, reason } => {
                    self.buffer.remove(&ids).await?;
                    outcome.rejected += ids.len();
                    tracing::error!(count = ids.len(), status, %reason, "ingest rejected buffered reports; not retrying");
                    outcome.rejection = Some((status, reason));
                }
                Delivery::Retry(reason) => {
                    tracing::warn!(waiting = self.buffer.len(), %reason, "ingest unavailable, keeping reports buffered");
                    outcome.last_error = Some(reason);
                    break;
                }
            }
        }
        outcome.buffered = self.buffer.len();
        Ok(())
    }
}

// A tiny join_all without pulling in `futures`: service probes run concurrently.
async fn join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Runs the agent until `shutdown`: a report every interval, buffered while ingest is away.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let mut agent = Agent::new(config).await?;
    let interval = agent.config.interval();
    tracing::info!(agent = %agent.config.agent, host = %agent.config.host, url = %agent.config.ingest_url,
        interval_s = interval.as_secs(), services = agent.config.services.len(), "agent started");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let round = async {
            managed_round(&agent).await;
            let report = agent.collect().await?;
            agent.submit(report).await
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            r = round => r,
        };
        match result {
            Ok(o) if o.buffered > 0 => {
                tracing::info!(
                    buffered = o.buffered,
                    dropped_total = agent.buffer.dropped(),
                    "reports waiting for ingest"
                )
            }
            Ok(_) => {}
            // A failed reading or a full disk must not stop the agent; the next round retries.
            Err(e) => tracing::error!(error = %e, "report round failed"),
        }
    }
    tracing::info!(buffered = agent.buffer.len(), "agent stopped");
    Ok(())
}

/// The managed-config step of a round; its failures are logged, never stop the report.
async fn managed_round(agent: &Agent) {
    if agent.config.managed.is_none() {
        return;
    }
    let result = match managed::ManagedClient::new(&agent.config, true) {
        Ok(client) => managed::sync(&agent.config, &client).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(o) if o.applied.is_some() || o.acked > 0 || o.live_sent => {
            tracing::info!(applied = ?o.applied, acked = o.acked, live_sent = o.live_sent, "managed config synced")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "managed config sync failed; retrying next round"),
    }
}

/// Takes and pushes one report (after any buffered ones). Fails when the report could not be
/// delivered; it then stays buffered for the next run.
pub async fn once(config: AgentConfig) -> Result<RoundOutcome, AgentError> {
    let mut agent = Agent::new(config).await?;
    managed_round(&agent).await;
    let report = agent.collect().await?;
    let outcome = agent.submit(report).await?;
    if let Some((status, reason)) = outcome.rejection.clone() {
        return Err(AgentError::Rejected {
            what: "report",
            status,
            reason,
        });
    }
    if outcome.buffered > 0 {
        return Err(AgentError::Unavailable(format!(
            "{} (report buffered in {}, {} waiting)",
            outcome.last_error.unwrap_or_default(),
            agent.config.buffer_dir.display(),
            outcome.buffered
        )));
    }
    Ok(outcome)
}

/// A notice to push with `fleetbus-agent event`.
#[derive(Debug, Clone)]
pub struct NoticeArgs {
    /// What happened.
    pub kind: AgentEventKind,
    /// How bad.
    pub severity: Severity,
    /// A message for people.
    pub message: String,
    /// The service it is about.
    pub service: Option<ServiceName>,
    /// Extra fields.
    pub fields: BTreeMap<String, String>,
}

/// Pushes one agent notice. Notices are not buffered: the caller (a script, cron) sees the
/// failure in the exit code and decides.
pub async fn raise(config: AgentConfig, args: NoticeArgs) -> Result<EventId, AgentError> {
    let key = config.read_key()?;
    let client = IngestClient::new(
        &config.ingest_url,
        config.agent.clone(),
        key,
        config.request_timeout(),
    )?;
    let push = NoticePush {
        id: EventId::new(),
        time: Utc::now(),
        notice: AgentNotice {
            agent: config.agent.clone(),
            host: config.host.clone(),
            kind: args.kind,
            severity: args.severity,
            message: args.message,
            service: args.service,
            fields: args.fields,
        },
    };
    match client.send_notice(&push).await {
        Delivery::Accepted(_) => Ok(push.id),
        Delivery::Rejected { status, reason } => Err(AgentError::Rejected {
            what: "event",
            status,
            reason,
        }),
        Delivery::Retry(reason) => Err(AgentError::Unavailable(reason)),
    }
}
