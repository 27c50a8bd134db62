//! Per-host counts of agent-raised events by hour, for the overview's 24-hour badges.
//!
//! The fold keeps hourly buckets (event time) and drops those more than 48 hours older than the
//! newest event it has seen; "the last 24 hours" is computed at query time from a given `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::{AgentEvent, Event, Severity};
use fleetbus_schemas::{Envelope, HostId};
use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const KEEP_HOURS: i64 = 48;

/// Counts in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// All agent-raised events.
    pub total: u32,
    /// Those of severity error or critical.
    pub errors: u32,
}

/// Hourly buckets per host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    /// host → hour (ms since epoch / 3,600,000) → counts.
    pub hosts: BTreeMap<HostId, BTreeMap<i64, Bucket>>,
    /// Newest hour seen.
    pub newest_hour: i64,
}

impl EventCounts {
    /// Folds one event.
    pub fn apply(&mut self, env: &Envelope) {
        let Event::Agent(AgentEvent::Raised(notice)) = &env.event else {
            return;
        };
        let hour = env.time.timestamp_millis().div_euclid(HOUR_MS);
        let buckets = self.hosts.entry(notice.host.clone()).or_default();
        let bucket = buckets.entry(hour).or_default();
        bucket.total += 1;
        if notice.severity >= Severity::Error {
            bucket.errors += 1;
        }
        if hour > self.newest_hour {
            self.newest_hour = hour;
            let oldest = hour - KEEP_HOURS;
            for buckets in self.hosts.values_mut() {
                buckets.retain(|h, _| *h >= oldest);
            }
        }
    }

    /// Counts for a host over the 24 hours up to `now`.
    pub fn last_24h(&self, host: &HostId, now: DateTime<Utc>) -> Bucket {
        let now_hour = now.timestamp_millis().div_euclid(HOUR_MS);
        self.hosts
            .get(host)
            .map(|buckets| {
                buckets
                    .range(now_hour - 23..=now_hour)
                    .fold(Bucket::default(), |acc, (_, b)| Bucket {
                        total: acc.total + b.total,
                        errors: acc.errors + b.errors,
                    })
            })
            .unwrap_or_default()
    }
}
