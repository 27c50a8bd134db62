//! The JSON bodies the agent sends to ingest's HTTP API.
//!
//! Every report and notice gets its event id when it is created, here on the host. Ingest uses
//! that id as the event id (and JetStream `Nats-Msg-Id`), so a report sent again after a
//! timeout, a crash or a long outage is recognised and stored once.

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::{AgentNotice, AgentReport};
use fleetbus_schemas::EventId;
use serde::{Deserialize, Serialize};

/// `POST /v1/agents/{agent}/report` — one [`ReportPush`].
pub const REPORT_PATH: &str = "report";
/// `POST /v1/agents/{agent}/reports` — a [`ReportBatch`] (ingest takes at most 500).
pub const BATCH_PATH: &str = "reports";
/// `POST /v1/agents/{agent}/events` — a [`NoticeBatch`].
pub const EVENTS_PATH: &str = "events";

/// What ingest answers with `202 Accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// Events newly stored.
    pub accepted: usize,
    /// Events already in the log (resends).
    pub duplicates: usize,
    /// The highest log sequence of the request's events.
    pub seq: u64,
    /// The agent is blocked: reports are stored but raise no notifications.
    #[serde(default)]
    pub blocked: bool,
}

/// One report with the id and time it got when it was taken. On the wire the report's fields
/// sit next to `id` and `time` (ingest's `ReportBody`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPush {
    /// The event id ingest stores it under.
    pub id: EventId,
    /// When the report was taken.
    pub time: DateTime<Utc>,
    /// The report.
    #[serde(flatten)]
    pub report: AgentReport,
}

/// Several reports, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// The reports.
    pub reports: Vec<ReportPush>,
}

/// One notice (agent event) with its id and time, fields flattened (ingest's `NoticeBody`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticePush {
    /// The event id ingest stores it under.
    pub id: EventId,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The notice.
    #[serde(flatten)]
    pub notice: AgentNotice,
}

/// Several notices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeBatch {
    /// The notices.
    pub events: Vec<NoticePush>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::events::agent::Resources;

    #[test]
    fn report_fields_sit_beside_id_and_time() {
        let push = ReportPush {
            id: EventId::new(),
            time: Utc::now(),
            report: AgentReport {
                agent: "a1".parse().unwrap(),
                host: "h1".parse().unwrap(),
                agent_version: "0.1.0".into(),
                resources: Resources::default(),
                services: vec![],
                config_version: None,
                config_hash: None,
            },
        };
        let v = serde_json::to_value(&push).unwrap();
        assert_eq!(v["agent"], "a1");
        assert_eq!(v["resources"]["mem_total_kb"], 0);
        assert!(v.get("report").is_none());
        let back: ReportPush = serde_json::from_value(v).unwrap();
        assert_eq!(back, push);
    }
}
