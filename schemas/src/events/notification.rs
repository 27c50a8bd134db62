//! The notification log: every decision the notifier takes, and its configuration changes.
//! Owned by the notifier.
//!
//! Entity token: the notification's deterministic id for `sent` / `failed` / `suppressed`; the
//! rule, recipient, channel or mute id for configuration facts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, sample_ulid, DomainEvent, Severity};
use crate::commands::notify::{
    sample_channel, sample_mute, sample_recipient, sample_rule, ChannelSpec, MuteSpec,
    RecipientSpec, RuleSpec,
};
use crate::ids::{AlertId, ChannelId, HostId, RecipientId, RuleId, ServiceName};

/// Whether a notification tells that an alert fires or that it resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The alert opened (step 0) or is escalated (step ≥ 1).
    #[default]
    Firing,
    /// The alert resolved.
    Resolved,
}

/// Which notification a decision is about. `id` is derived deterministically from
/// (alert, rule, recipient, channel, step, phase), so a restart never sends the same one twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationRef {
    /// Deterministic id (`n-<32 hex>`), also the `Idempotency-Key` header.
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
    /// Firing or resolved.
    #[serde(default)]
    pub phase: Phase,
    /// The alert's severity (for filtering the log).
    pub severity: Severity,
    /// The host the alert is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// The service the alert is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
}

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SuppressedBy {
    /// A mute or maintenance window.
    Mute {
        /// Its id.
        mute: String,
        /// Its reason.
        #[serde(default)]
        reason: String,
    },
    /// The cooldown of (rule, alert condition) had not passed.
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
    /// Recipient preferences (severity, channel, quiet hours, host groups).
    Preference {
        /// Which preference.
        reason: String,
    },
    /// The notifier learned of the alert too late (it was down): older than its catch-up limit.
    Stale {
        /// Age of the alert transition when the notifier saw it, in seconds.
        age_s: u64,
    },
    /// The rule names a recipient or channel that does not exist (any more), or the channel
    /// cannot reach this recipient (email without an address, missing secret).
    Unroutable {
        /// What is missing.
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
        /// When it went out grouped with others: the digest's id (its `Idempotency-Key`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
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
    /// A rule was created or replaced.
    RuleSet(RuleSpec),
    /// A rule was deleted.
    RuleDeleted {
        /// The rule.
        rule: RuleId,
    },
    /// A recipient was created or replaced.
    RecipientSet(RecipientSpec),
    /// A recipient was deleted.
    RecipientDeleted {
        /// The recipient.
        recipient: RecipientId,
    },
    /// A channel was created or replaced (secrets are referenced by name only).
    ChannelSet(ChannelSpec),
    /// A channel was deleted.
    ChannelDeleted {
        /// The channel.
        channel: ChannelId,
    },
    /// A mute or maintenance window was created or replaced.
    MuteSet(MuteSpec),
    /// A mute was ended.
    MuteDeleted {
        /// The mute.
        mute: String,
    },
}

impl NotificationEvent {
    /// The notification a delivery decision is about (`None` for configuration facts).
    pub fn notification(&self) -> Option<&NotificationRef> {
        match self {
            Self::Sent { notification, .. }
            | Self::Failed { notification, .. }
            | Self::Suppressed { notification, .. } => Some(notification),
            _ => None,
        }
    }
}

impl DomainEvent for NotificationEvent {
    fn entity(&self) -> String {
        match self {
            Self::Sent { notification, .. }
            | Self::Failed { notification, .. }
            | Self::Suppressed { notification, .. } => notification.id.clone(),
            Self::RuleSet(r) => r.rule.to_string(),
            Self::RuleDeleted { rule } => rule.to_string(),
            Self::RecipientSet(r) => r.recipient.to_string(),
            Self::RecipientDeleted { recipient } => recipient.to_string(),
            Self::ChannelSet(c) => c.channel.to_string(),
            Self::ChannelDeleted { channel } => channel.to_string(),
            Self::MuteSet(m) => m.mute.clone(),
            Self::MuteDeleted { mute } => mute.clone(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::Suppressed { .. } => "suppressed",
            Self::RuleSet(_) => "rule_set",
            Self::RuleDeleted { .. } => "rule_deleted",
            Self::RecipientSet(_) => "recipient_set",
            Self::RecipientDeleted { .. } => "recipient_deleted",
            Self::ChannelSet(_) => "channel_set",
            Self::ChannelDeleted { .. } => "channel_deleted",
            Self::MuteSet(_) => "mute_set",
            Self::MuteDeleted { .. } => "mute_deleted",
        }
    }
    fn samples() -> Vec<Self> {
        let n = NotificationRef {
            id: "n-0123456789abcdef0123456789abcdef".into(),
            alert: AlertId(sample_ulid(31)),
            rule: id("page-ops"),
            recipient: id("alice"),
            channel: id("ops-webhook"),
            step: 0,
            phase: Phase::Firing,
            severity: Severity::Error,
            host: Some(id("web-1")),
            service: Some(id("nginx")),
        };
        vec![
            Self::Sent {
                notification: n.clone(),
                attempts: 1,
                digest: None,
            },
            Self::Sent {
                notification: NotificationRef {
                    phase: Phase::Resolved,
                    ..n.clone()
                },
                attempts: 2,
                digest: Some("d-0123456789abcdef0123456789abcdef".into()),
            },
            Self::Failed {
                notification: n.clone(),
                attempts: 5,
                reason: "HTTP 500".into(),
            },
            Self::Suppressed {
                notification: n.clone(),
                by: SuppressedBy::Cooldown { remaining_s: 240 },
            },
            Self::Suppressed {
                notification: n.clone(),
                by: SuppressedBy::Mute {
                    mute: "db-maintenance".into(),
                    reason: "weekly vacuum".into(),
                },
            },
            Self::Suppressed {
                notification: n,
                by: SuppressedBy::Dependency {
                    host_alert: AlertId(sample_ulid(30)),
                },
            },
            Self::RuleSet(sample_rule()),
            Self::RuleDeleted {
                rule: id("page-ops"),
            },
            Self::RecipientSet(sample_recipient()),
            Self::RecipientDeleted {
                recipient: id("alice"),
            },
            Self::ChannelSet(sample_channel()),
            Self::ChannelDeleted {
                channel: id("ops-webhook"),
            },
            Self::MuteSet(sample_mute()),
            Self::MuteDeleted {
                mute: "db-maintenance".into(),
            },
        ]
    }
}
