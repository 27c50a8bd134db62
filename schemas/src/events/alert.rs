//! Operator actions on alerts, and alerts raised explicitly.
//!
//! Most alerts are opened and resolved by the alerts projection from other facts (an error event,
//! a service going down, a key mismatch, an agent or check going down). These events are the rest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_ulid, DomainEvent, Severity};
use crate::ids::{AlertId, HostId, ServiceName};

/// Alert facts. Entity token: the alert id, or for `raised` the alert key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AlertEvent {
    /// Someone raised an alert explicitly (e.g. a missed deadline). Resolved by `cleared` with
    /// the same key.
    Raised {
        /// Stable key of the condition (a valid name, e.g. `deadline-backup-db-1`).
        key: String,
        /// How bad.
        severity: Severity,
        /// The host it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<HostId>,
        /// The service it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceName>,
        /// What is wrong.
        message: String,
    },
    /// The condition behind an explicitly raised alert is gone.
    Cleared {
        /// The key it was raised with.
        key: String,
    },
    /// An operator acknowledged an alert.
    Acknowledged {
        /// The alert.
        alert: AlertId,
        /// Optional note.
        #[serde(default)]
        note: String,
    },
    /// An operator resolved an alert by hand.
    Resolved {
        /// The alert.
        alert: AlertId,
        /// Optional note.
        #[serde(default)]
        note: String,
    },
}

impl DomainEvent for AlertEvent {
    fn entity(&self) -> String {
        match self {
            Self::Raised { key, .. } | Self::Cleared { key } => key.clone(),
            Self::Acknowledged { alert, .. } | Self::Resolved { alert, .. } => alert.to_string(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Raised { .. } => "raised",
            Self::Cleared { .. } => "cleared",
            Self::Acknowledged { .. } => "acknowledged",
            Self::Resolved { .. } => "resolved",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::Raised {
                key: "deadline-backup".into(),
                severity: Severity::Error,
                host: Some(id("db-1")),
                service: None,
                message: "backup did not report by 05:00".into(),
            },
            Self::Cleared {
                key: "deadline-backup".into(),
            },
            Self::Acknowledged {
                alert: AlertId(sample_ulid(7)),
                note: "looking".into(),
            },
            Self::Resolved {
                alert: AlertId(sample_ulid(7)),
                note: String::new(),
            },
        ]
    }
}
