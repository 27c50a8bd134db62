//! The scheduler's config file (`scheduler.toml`), with `FLEETBUS_SCHEDULER__*` overrides.

use fleetbus_runtime::nats::NatsConfig;
use serde::Deserialize;

use crate::core::CoreConfig;
use crate::slots::SlotSchedule;
use crate::SchedulerError;

/// The only config version this build reads.
pub(crate) const CONFIG_VERSION: u32 = 1;

/// The scheduler's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version (1).
    #[serde(default = "version")]
    pub version: u32,
    /// How to reach the bus (user `scheduler`).
    #[serde(default = "nats")]
    pub nats: NatsConfig,
    /// Agent staleness thresholds.
    #[serde(default)]
    pub liveness: LivenessConfig,
    /// Slot firing.
    #[serde(default)]
    pub firing: FiringConfig,
    /// The daily retention pass.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Time warp, for tests and demos only (absent: the system clock).
    #[serde(default)]
    pub warp: Option<WarpConfig>,
}

/// Run the clock faster than real time: `now = anchor + (real_now - anchor) * speed`.
/// Several processes with the same anchor and speed agree on the time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarpConfig {
    /// RFC 3339 instant at which virtual time equals real time.
    pub anchor: String,
    /// How many virtual seconds pass per real second (≥ 1).
    pub speed: f64,
}

fn version() -> u32 {
    CONFIG_VERSION
}

fn nats() -> NatsConfig {
    NatsConfig::for_role("scheduler")
}

/// Agent staleness thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// Seconds without a report before an agent is stale.
    pub stale_after_s: u64,
    /// Seconds without a report before an agent is down.
    pub down_after_s: u64,
    /// How often agents and checks are looked at, in milliseconds.
    pub sweep_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            stale_after_s: 90,
            down_after_s: 300,
            sweep_ms: 1_000,
        }
    }
}

/// Slot firing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiringConfig {
    /// A slot looked at more than this many seconds after its time counts as missed (the
    /// scheduler was down) and follows the schedule's missed-slot policy; later slots fire.
    pub missed_after_s: u64,
}

impl Default for FiringConfig {
    fn default() -> Self {
        FiringConfig { missed_after_s: 30 }
    }
}

/// The daily retention pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Run it at all.
    pub enabled: bool,
    /// When (cron with seconds).
    pub cron: String,
    /// In which zone.
    pub time_zone: String,
    /// Live output of jobs that ended longer ago than this is purged from `OUTPUT`.
    pub output_max_age_s: u64,
    /// History projections keep this many seconds (told to ingest as a `retention_applied` fact).
    pub history_max_age_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            cron: "0 30 3 * * *".into(),
            time_zone: "UTC".into(),
            output_max_age_s: 7 * 86_400,
            history_max_age_s: 90 * 86_400,
        }
    }
}

fn secs(what: &str, s: u64) -> Result<chrono::Duration, SchedulerError> {
    i64::try_from(s)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| SchedulerError::Config(format!("{what}: {s} seconds is too large")))
}

impl Config {
    /// The clock this config asks for: the system clock, or a warped one.
    pub fn clock(&self) -> Result<std::sync::Arc<dyn crate::Clock>, SchedulerError> {
        match &self.warp {
            None => Ok(std::sync::Arc::new(crate::SystemClock)),
            Some(w) => {
                let anchor: chrono::DateTime<chrono::Utc> = w.anchor.parse().map_err(|e| {
                    SchedulerError::Config(format!(
                        "warp.anchor: {:?} is not RFC 3339: {e}",
                        w.anchor
                    ))
                })?;
                if !(w.speed.is_finite() && w.speed >= 1.0) {
                    return Err(SchedulerError::Config(format!(
                        "warp.speed: expected a number ≥ 1, found {}",
                        w.speed
                    )));
                }
                Ok(std::sync::Arc::new(crate::clock::WarpClock::new(
                    anchor, w.speed,
                )))
            }
        }
    }

    /// Checks the values and derives what the core decides with.
    pub fn core(&self) -> Result<CoreConfig, SchedulerError> {
        if self.version != CONFIG_VERSION {
            return Err(SchedulerError::Config(format!(
                "version: expected {CONFIG_VERSION}, found {}",
                self.version
            )));
        }
        let l = &self.liveness;
        if l.stale_after_s == 0 || l.down_after_s <= l.stale_after_s {
            return Err(SchedulerError::Config(format!(
                "liveness: expected 0 < stale_after_s < down_after_s, found {} and {}",
                l.stale_after_s, l.down_after_s
            )));
        }
        if l.sweep_ms == 0 {
            return Err(SchedulerError::Config(
                "liveness.sweep_ms: must be at least 1".into(),
            ));
        }
        let r = &self.retention;
        let retention = if r.enabled {
            Some(
                SlotSchedule::parse(&r.cron, &r.time_zone)
                    .map_err(|e| SchedulerError::Config(format!("retention: {e}")))?,
            )
        } else {
            None
        };
        Ok(CoreConfig {
            stale_after: secs("liveness.stale_after_s", l.stale_after_s)?,
            down_after: secs("liveness.down_after_s", l.down_after_s)?,
            missed_after: secs("firing.missed_after_s", self.firing.missed_after_s)?,
            retention,
            output_max_age: secs("retention.output_max_age_s", r.output_max_age_s)?,
            history_max_age: secs("retention.history_max_age_s", r.history_max_age_s)?,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            nats: nats(),
            liveness: LivenessConfig::default(),
            firing: FiringConfig::default(),
            retention: RetentionConfig::default(),
            warp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert!(Config::default().core().is_ok());
        let mut c = Config::default();
        c.liveness.down_after_s = 10;
        let err = c.core().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("stale_after_s < down_after_s"), "{err}");
        let mut c = Config::default();
        c.retention.time_zone = "Nowhere/Land".into();
        let err = c.core().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("retention") && err.contains("Nowhere/Land"),
            "{err}"
        );
    }
}
