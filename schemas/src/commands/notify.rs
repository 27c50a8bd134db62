//! Notification rules, recipients, channels and mutes (`fleet.cmd.notify.<verb>`).
//! Owned by the notifier.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AreaCommand;
use crate::events::{id, Severity};
use crate::ids::{ChannelId, RecipientId, RuleId};

/// A routing rule: which alerts go to whom through which channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleSpec {
    /// Its id.
    pub rule: RuleId,
    /// Lowest severity that matches.
    pub min_severity: Severity,
    /// Only these hosts (empty = any).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only hosts with any of these tags (empty = any).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who is told.
    pub recipients: Vec<RecipientId>,
    /// Through which channels, in escalation order.
    pub channels: Vec<ChannelId>,
    /// Minimum seconds between notifications for the same alert.
    #[serde(default)]
    pub cooldown_s: u64,
}

/// Notifier commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum NotifyCommand {
    /// Create or replace a rule.
    SetRule(RuleSpec),
    /// Delete a rule.
    DeleteRule {
        /// The rule.
        rule: RuleId,
    },
}

impl AreaCommand for NotifyCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::SetRule(_) => "set_rule",
            Self::DeleteRule { .. } => "delete_rule",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::SetRule(RuleSpec {
                rule: id("page-ops"),
                min_severity: Severity::Error,
                hosts: vec![],
                tags: vec!["web".into()],
                recipients: vec![id("alice")],
                channels: vec![id("ops-webhook")],
                cooldown_s: 300,
            }),
            Self::DeleteRule {
                rule: id("page-ops"),
            },
        ]
    }
}
