//! The JSON bodies the agent sends to ingest's HTTP API.
//!
//! Every report and notice gets its event id when it is created, here on the host. Ingest uses
//! that id as the event id (and JetStream `Nats-Msg-Id`), so a report sent again after a
//! timeout, a crash or a long outage is recognised and stored once.

use chrono::{DateTime, Utc};
use fleetbus_schemas::events::agent::{AgentNotice, AgentReport};
use fleetbus_schemas::EventId;
use serde::{Deserialize, Serialize};

/// `POST /v1/agents/{agent}/reports`.
pub const REPORTS_PATH: &str = "reports";
/// `POST /v1/agents/{agent}/reports/batch`.
pub const BATCH_PATH: &str = "reports/batch";
/// `POST /v1/agents/{agent}/events`.
pub const EVENTS_PATH: &str = "events";

/// One report with the id and time it got when it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPush {
    /// The event id ingest stores it under.
    pub id: EventId,
    /// When the report was taken.
    pub time: DateTime<Utc>,
    /// The report.
    pub report: AgentReport,
}

/// Several reports, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// The reports.
    pub reports: Vec<ReportPush>,
}

/// One notice (agent event) with its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticePush {
    /// The event id ingest stores it under.
    pub id: EventId,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The notice.
    pub notice: AgentNotice,
}
