//! Ingest's config file (TOML, `deny_unknown_fields`), loaded with `FLEETBUS_INGEST__*`
//! environment overrides by `fleetbus_runtime::config::load`.

use std::net::SocketAddr;
use std::path::PathBuf;

use fleetbus_runtime::http::HttpLimits;
use fleetbus_runtime::nats::NatsConfig;
use serde::{Deserialize, Serialize};

/// The default agent API address (loopback only).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8470";

/// The service config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Config format version; must be 1.
    pub version: u32,
    /// State directory; the log is `<state_dir>/ingest/log.redb`. Default: `FLEETBUS_STATE` or
    /// `./state`.
    pub state_dir: PathBuf,
    /// Agent HTTP API listen address.
    pub http_addr: SocketAddr,
    /// NATS connection (user `ingest`).
    pub nats: NatsConfig,
    /// Request limits of the agent API.
    pub limits: Limits,
    /// Log tuning.
    pub log: LogTuning,
}

/// Request limits of the agent API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest body of a single report or ping (bytes).
    pub single_body_bytes: usize,
    /// Largest body of a batch (bytes).
    pub batch_body_bytes: usize,
    /// Most reports or events in one batch.
    pub batch_max_items: usize,
    /// Sustained requests per second per agent (token bucket refill rate).
    pub agent_requests_per_s: u32,
    /// Burst of requests per agent (token bucket size).
    pub agent_burst: u32,
    /// How long a request waits for its events to be committed before answering 503.
    pub commit_timeout_ms: u64,
    /// Event times more than this far ahead of ingest's clock are refused (422 naming the
    /// field): a host clock that is off, or a forged date.
    pub max_future_skew_s: u64,
    /// Event times more than this far behind ingest's clock are refused (422 naming the field).
    /// Agents buffer while ingest is unreachable, so this is generous.
    pub max_past_skew_s: u64,
    /// The HTTP server: connection limit, header/body/request timeouts (`[limits.http]`).
    pub http: HttpLimits,
}

/// Log tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogTuning {
    /// Most events per write transaction.
    pub max_batch: usize,
    /// Snapshot the projections every this many entries (0: only at shutdown).
    pub snapshot_every: u64,
    /// Capacity of the queue in front of the writer.
    pub queue: usize,
    /// Under sustained load (the previous group held at least [`crate::writer::LINGER_FROM`]
    /// events) the writer waits up to this long for a group to fill before committing it:
    /// fewer, larger commits. A trickle is committed at once. 0 turns it off.
    pub linger_ms: u64,
    /// Publish a head anchor (`system.head_anchored`: committed seq, hash and checkpoint digest)
    /// at least this often while the head moves (seconds; 0: not by time).
    pub anchor_every_s: u64,
    /// Also publish one whenever the head has moved this many entries past the last anchor
    /// (0: not by count).
    pub anchor_every_entries: u64,
    /// Repair a log that does not verify before serving it (`fleetbus-ingest --repair`; never
    /// read from a file or the environment).
    #[serde(skip)]
    pub repair: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 1,
            state_dir: fleetbus_runtime::state_dir(),
            http_addr: DEFAULT_HTTP_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8470))),
            nats: NatsConfig::for_role("ingest"),
            limits: Limits::default(),
            log: LogTuning::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            single_body_bytes: 256 * 1024,
            batch_body_bytes: 4 * 1024 * 1024,
            batch_max_items: 500,
            agent_requests_per_s: 20,
            agent_burst: 100,
            commit_timeout_ms: 10_000,
            max_future_skew_s: 24 * 3600,
            max_past_skew_s: 365 * 24 * 3600,
            http: HttpLimits::default(),
        }
    }
}

impl Default for LogTuning {
    fn default() -> Self {
        LogTuning {
            max_batch: 5000,
            snapshot_every: 10_000,
            queue: 20_000,
            linger_ms: 5,
            anchor_every_s: 60,
            anchor_every_entries: 100_000,
            repair: false,
        }
    }
}

impl Config {
    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("ingest").join("log.redb")
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "key 'version': {} is not supported, expected 1",
                self.version
            ));
        }
        if self.nats.user != "ingest" {
            return Err(format!(
                "key 'nats.user': '{}' — ingest must connect as 'ingest'",
                self.nats.user
            ));
        }
        if self.limits.batch_max_items == 0
            || self.limits.agent_requests_per_s == 0
            || self.limits.agent_burst == 0
        {
            return Err("keys 'limits.batch_max_items', 'limits.agent_requests_per_s', 'limits.agent_burst' must be at least 1".into());
        }
        self.limits.http.validate("limits.http")?;
        if self.limits.http.request_timeout_ms <= self.limits.commit_timeout_ms {
            return Err(format!(
                "key 'limits.http.request_timeout_ms': {} must be longer than 'limits.commit_timeout_ms' ({}), or agents get 408 instead of 503 while a commit is slow",
                self.limits.http.request_timeout_ms, self.limits.commit_timeout_ms
            ));
        }
        // chrono durations hold ±2^63 ms; far beyond any sensible skew, but refuse absurd ones.
        for (key, value) in [
            ("limits.max_future_skew_s", self.limits.max_future_skew_s),
            ("limits.max_past_skew_s", self.limits.max_past_skew_s),
        ] {
            if value > 100 * 365 * 24 * 3600 {
                return Err(format!("key '{key}': {value} is more than 100 years"));
            }
        }
        if self.log.max_batch == 0 || self.log.queue == 0 {
            return Err("keys 'log.max_batch' and 'log.queue' must be at least 1".into());
        }
        if self.log.linger_ms > 1000 {
            return Err(format!(
                "key 'log.linger_ms': {} is too long; at most 1000 (agents wait for the commit)",
                self.log.linger_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut Config)) -> Result<(), String> {
        let mut c = Config::default();
        edit(&mut c);
        c.validate()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(with(|_| {}), Ok(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        type Edit = fn(&mut Config);
        let cases: [(&str, Edit); 8] = [
            ("version", |c| c.version = 2),
            ("nats.user", |c| c.nats.user = "admin".into()),
            ("log.max_batch", |c| c.log.max_batch = 0),
            ("log.linger_ms", |c| c.log.linger_ms = 60_000),
            ("limits.agent_burst", |c| c.limits.agent_burst = 0),
            ("limits.http.max_connections", |c| {
                c.limits.http.max_connections = 0
            }),
            ("limits.http.request_timeout_ms", |c| {
                c.limits.http.request_timeout_ms = 5_000
            }),
            ("limits.max_past_skew_s", |c| {
                c.limits.max_past_skew_s = u64::MAX
            }),
        ];
        for (key, edit) in cases {
            let err = with(edit).expect_err(key);
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn toml_with_an_unknown_log_key_is_refused() {
        let err = toml::from_str::<LogTuning>("linger = 5").expect_err("unknown key");
        assert!(err.to_string().contains("linger"), "{err}");
    }
}
