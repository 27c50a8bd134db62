//! The notification log: every decision the notifier takes. Owned by the notifier.
//! Entity token: the notification's deterministic id (a valid name).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_ulid, DomainEvent};
use crate::ids::{AlertId, ChannelId, RecipientId, RuleId};

/// Which notification a decision is about. `id` is derived deterministically from
/// (alert, rule, recipient, channel, step), so a restart never sends the same one twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationRef {
    /// Deterministic id, also the `Idempotency-Key` header.
    pub id: String,
    /// The alert it is about.
    pub alert: AlertId,
    /// The rule that matched.
    pub rule: RuleId,
    /// Who.
    pub recipient: RecipientId,
    /// Through which channel.
    pub channel: ChannelId,
    /// Escalation step (0 = first).
    pub step: u32,
}

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SuppressedBy {
    /// A mute or maintenance window.
    Mute {
        /// Its id.
        mute: String,
    },
    /// The cooldown of (rule, alert) had not passed.
    Cooldown {
        /// Seconds left.
        remaining_s: u64,
    },
    /// The host the service runs on is down.
    Dependency {
        /// The host alert that suppresses it.
        host_alert: AlertId,
    },
    /// The agent is blocked.
    Blocked,
    /// Recipient preferences (severity, channel, quiet hours).
    Preference {
        /// Which preference.
        reason: String,
    },
}

/// Notification facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum NotificationEvent {
    /// Delivered (the receiver accepted it).
    Sent {
        /// Which.
        notification: NotificationRef,
        /// Attempts it took.
        attempts: u32,
    },
    /// Gave up after retries.
    Failed {
        /// Which.
        notification: NotificationRef,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// Deliberately not sent.
    Suppressed {
        /// Which.
        notification: NotificationRef,
        /// Why.
        by: SuppressedBy,
    },
}

impl NotificationEvent {
    /// The notification the decision is about.
    pub fn notification(&self) -> &NotificationRef {
        match self {
            Self::Sent { notification, .. }
            | Self::Failed { notification, .. }
            | Self::Suppressed { notification, .. } => notification,
        }
    }
}

impl DomainEvent for NotificationEvent {
    fn entity(&self) -> String {
        self.notification().id.clone()
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::Suppressed { .. } => "suppressed",
        }
    }
    fn samples() -> Vec<Self> {
        let n = NotificationRef {
            id: "n-0123456789abcdef".into(),
            alert: AlertId(sample_ulid(31)),
            rule: id("page-ops"),
            recipient: id("alice"),
            channel: id("ops-webhook"),
            step: 0,
        };
        vec![
            Self::Sent {
                notification: n.clone(),
                attempts: 1,
            },
            Self::Failed {
                notification: n.clone(),
                attempts: 5,
                reason: "HTTP 500".into(),
            },
            Self::Suppressed {
                notification: n,
                by: SuppressedBy::Cooldown { remaining_s: 240 },
            },
        ]
    }
}
