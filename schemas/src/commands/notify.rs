//! Notification rules, recipients, channels and mutes (`fleet.cmd.notify.<verb>`).
//! Owned by the notifier.
//!
//! The same spec types are the payload of the notifier's `*_set` events and of its TOML config.
//! Secrets (HMAC keys, SMTP passwords, Slack URLs, ntfy tokens) never travel on the bus: a spec
//! names a secret, and the notifier looks the name up in its own 0600 secrets file.

use chrono::{DateTime, NaiveTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AreaCommand;
use crate::events::{id, Severity};
use crate::ids::{validate_name, ChannelId, HostId, RecipientId, RuleId, ServiceName};

/// Which alerts a rule matches. Every non-empty list must match (and within a list, any entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertMatch {
    /// Alert kinds (`service_down`, `agent_down`, `disk_full`, …); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Lowest severity that matches.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Only these hosts (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostId>,
    /// Only these services (empty = any, including host-level alerts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceName>,
    /// Only hosts carrying any of these tags (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only hosts having any of these roles (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

fn default_min_severity() -> Severity {
    Severity::Error
}

impl Default for AlertMatch {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            min_severity: default_min_severity(),
            hosts: Vec::new(),
            services: Vec::new(),
            tags: Vec::new(),
            roles: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A later step of a rule: if the alert is still open and unacknowledged `after_s` seconds after
/// it opened, these recipients are told through these channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Seconds after the alert opened.
    pub after_s: u64,
    /// Who is told at this step.
    pub recipients: Vec<RecipientId>,
    /// Through which channels.
    pub channels: Vec<ChannelId>,
}

/// A routing rule: which alerts go to whom through which channels (step 0), then escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Its id.
    pub rule: RuleId,
    /// What it matches.
    #[serde(default)]
    pub matches: AlertMatch,
    /// Who is told first.
    pub recipients: Vec<RecipientId>,
    /// Through which channels.
    pub channels: Vec<ChannelId>,
    /// Minimum seconds between two firing notifications of this rule for the same alert
    /// condition (a flapping service opens a new alert each time; the condition stays the same).
    #[serde(default)]
    pub cooldown_s: u64,
    /// Later steps for alerts nobody acknowledges, in increasing `after_s`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<EscalationStep>,
    /// Tell the same people when the alert resolves.
    #[serde(default = "yes")]
    pub notify_resolved: bool,
}

/// Operators see everything they are routed; customers only alerts about the host groups they own,
/// worded for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// Runs the fleet.
    #[default]
    Operator,
    /// Owns a group of hosts (a tag).
    Customer,
}

/// A daily time range in a time zone, e.g. 22:00–07:00 Europe/Berlin. `start > end` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DailyWindow {
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive.
    pub end: String,
    /// IANA time zone name.
    pub time_zone: String,
    /// Days it applies on (`mon` … `sun`); empty = every day. For a window wrapping midnight, the
    /// day it starts on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

/// Quiet hours: nothing below `breakthrough` severity is delivered in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// When.
    pub window: DailyWindow,
    /// Alerts at or above this severity are delivered anyway (default: critical).
    #[serde(default = "critical")]
    pub breakthrough: Severity,
}

fn critical() -> Severity {
    Severity::Critical
}

/// A person or team that receives notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    /// Its id.
    pub recipient: RecipientId,
    /// Name shown in messages.
    #[serde(default)]
    pub display_name: String,
    /// Operator or customer.
    #[serde(default)]
    pub kind: RecipientKind,
    /// For customers: the host groups (tags) they own; they hear only about those hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owns: Vec<String>,
    /// Address for email channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Lowest severity this recipient wants.
    #[serde(default = "info")]
    pub min_severity: Severity,
    /// Channels this recipient accepts (empty = any the rule names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelId>,
    /// Quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

fn info() -> Severity {
    Severity::Info
}

/// How a channel delivers. Fields ending in `_secret` name an entry of the notifier's secrets
/// file; the value itself is never on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelKind {
    /// POST of a JSON body, signed `X-Fleetbus-Signature: sha256=<hex HMAC-SHA256>` when a secret
    /// is named, with `Idempotency-Key` = the notification id.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Secret holding the HMAC key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac_secret: Option<String>,
    },
    /// Slack-compatible incoming webhook (`{"text": …}`); the URL is a secret.
    Slack {
        /// Secret holding the webhook URL.
        url_secret: String,
    },
    /// ntfy: POST of the text to `<server>/<topic>` with Title/Priority/Tags headers.
    Ntfy {
        /// Base URL of the ntfy server.
        server: String,
        /// Topic.
        topic: String,
        /// Secret holding a bearer token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_secret: Option<String>,
    },
    /// Email over SMTP to the recipient's address (text + HTML).
    Email {
        /// SMTP server host.
        smtp_host: String,
        /// SMTP port.
        smtp_port: u16,
        /// Upgrade with STARTTLS (required when true).
        #[serde(default)]
        starttls: bool,
        /// From address.
        from: String,
        /// SMTP user name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// Secret holding the SMTP password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_secret: Option<String>,
    },
    /// Publish the JSON notification on the core NATS subject `fleet.notify.<channel>`.
    Nats,
}

impl ChannelKind {
    /// The kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Ntfy { .. } => "ntfy",
            Self::Email { .. } => "email",
            Self::Nats => "nats",
        }
    }

    /// The secret names this channel needs.
    pub fn secret_names(&self) -> Vec<&str> {
        match self {
            Self::Webhook { hmac_secret, .. } => hmac_secret.iter().map(String::as_str).collect(),
            Self::Slack { url_secret } => vec![url_secret.as_str()],
            Self::Ntfy { token_secret, .. } => token_secret.iter().map(String::as_str).collect(),
            Self::Email {
                password_secret, ..
            } => password_secret.iter().map(String::as_str).collect(),
            Self::Nats => vec![],
        }
    }
}

/// A delivery channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// Its id.
    pub channel: ChannelId,
    /// How it delivers.
    pub kind: ChannelKind,
    /// Per-attempt timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before giving up with a `failed` event.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_attempts() -> u32 {
    5
}

/// When a mute applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MuteWindow {
    /// From now (or `from`) until `until`.
    AdHoc {
        /// Start; none = immediately.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<DateTime<Utc>>,
        /// End.
        until: DateTime<Utc>,
    },
    /// Every week on the window's days and hours (a maintenance window).
    Scheduled(DailyWindow),
}

/// A mute or maintenance window: matching alerts are not notified (a `suppressed` event names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteSpec {
    /// Its id (a name).
    pub mute: String,
    /// Hosts (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostId>,
    /// Services (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceName>,
    /// Hosts with any of these tags (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When.
    pub window: MuteWindow,
    /// Why (shown in the log and UI).
    #[serde(default)]
    pub reason: String,
}

/// Parses `HH:MM`.
pub fn parse_hhmm(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("{s:?} is not a time, expected HH:MM"))
}

/// Weekday tokens accepted in windows.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn check_tag(what: &str, t: &str) -> Result<(), String> {
    validate_name("tag", t).map_err(|e| format!("{what}: {e}"))
}

impl DailyWindow {
    /// Checks the times and days (the time zone is checked by the notifier, which has the tz db).
    pub fn validate(&self) -> Result<(), String> {
        parse_hhmm(&self.start).map_err(|e| format!("start: {e}"))?;
        parse_hhmm(&self.end).map_err(|e| format!("end: {e}"))?;
        if self.start == self.end {
            return Err("start and end are equal: the window would be empty".into());
        }
        if self.time_zone.is_empty() {
            return Err("time_zone is empty, expected an IANA name like Europe/Berlin".into());
        }
        for d in &self.days {
            if !WEEKDAYS.contains(&d.as_str()) {
                return Err(format!("unknown day {d:?}, expected one of {WEEKDAYS:?}"));
            }
        }
        Ok(())
    }
}

impl RuleSpec {
    /// Structural checks; the notifier also checks that recipients and channels exist.
    pub fn validate(&self) -> Result<(), String> {
        if self.recipients.is_empty() {
            return Err(format!(
                "rule {}: recipients is empty, expected at least one",
                self.rule
            ));
        }
        if self.channels.is_empty() {
            return Err(format!(
                "rule {}: channels is empty, expected at least one",
                self.rule
            ));
        }
        for k in &self.matches.kinds {
            validate_name("alert kind", k).map_err(|e| format!("rule {}: {e}", self.rule))?;
        }
        for t in self.matches.tags.iter().chain(&self.matches.roles) {
            check_tag(&format!("rule {}", self.rule), t)?;
        }
        let mut last = 0;
        for (i, step) in self.escalation.iter().enumerate() {
            if step.after_s == 0 || step.after_s <= last {
                return Err(format!(
                    "rule {}: escalation[{i}].after_s = {} must be > 0 and greater than the previous step's",
                    self.rule, step.after_s
                ));
            }
            if step.recipients.is_empty() || step.channels.is_empty() {
                return Err(format!(
                    "rule {}: escalation[{i}] needs at least one recipient and one channel",
                    self.rule
                ));
            }
            last = step.after_s;
        }
        Ok(())
    }

    /// Every recipient the rule may notify (all steps).
    pub fn all_recipients(&self) -> impl Iterator<Item = &RecipientId> {
        self.recipients
            .iter()
            .chain(self.escalation.iter().flat_map(|s| s.recipients.iter()))
    }

    /// Every channel the rule may use (all steps).
    pub fn all_channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.channels
            .iter()
            .chain(self.escalation.iter().flat_map(|s| s.channels.iter()))
    }
}

impl RecipientSpec {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("recipient {}", self.recipient);
        if self.kind == RecipientKind::Customer && self.owns.is_empty() {
            return Err(format!(
                "{who}: a customer must own at least one host group (owns = [\"<tag>\"])"
            ));
        }
        for t in &self.owns {
            check_tag(&who, t)?;
        }
        if let Some(email) = &self.email {
            let ok = email.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !email.contains(char::is_whitespace)
            });
            if !ok {
                return Err(format!(
                    "{who}: email {email:?} is not an address like ops@example.com"
                ));
            }
        }
        if let Some(q) = &self.quiet_hours {
            q.window
                .validate()
                .map_err(|e| format!("{who}: quiet_hours: {e}"))?;
        }
        Ok(())
    }
}

impl ChannelSpec {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("channel {}", self.channel);
        let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        match &self.kind {
            ChannelKind::Webhook { url, .. } if !url_ok(url) => {
                return Err(format!(
                    "{what}: url {url:?} must start with http:// or https://"
                ));
            }
            ChannelKind::Ntfy { server, topic, .. } => {
                if !url_ok(server) {
                    return Err(format!(
                        "{what}: server {server:?} must start with http:// or https://"
                    ));
                }
                validate_name("ntfy topic", topic).map_err(|e| format!("{what}: {e}"))?;
            }
            ChannelKind::Email {
                smtp_host, from, ..
            } => {
                if smtp_host.is_empty() {
                    return Err(format!("{what}: smtp_host is empty"));
                }
                if !from.contains('@') {
                    return Err(format!("{what}: from {from:?} is not an email address"));
                }
            }
            _ => {}
        }
        for s in self.kind.secret_names() {
            validate_name("secret name", s).map_err(|e| format!("{what}: {e}"))?;
        }
        if self.timeout_ms == 0 || self.timeout_ms > 120_000 {
            return Err(format!(
                "{what}: timeout_ms = {} must be between 1 and 120000",
                self.timeout_ms
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 20 {
            return Err(format!(
                "{what}: max_attempts = {} must be between 1 and 20",
                self.max_attempts
            ));
        }
        Ok(())
    }
}

impl MuteSpec {
    /// Structural checks.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("mute id", &self.mute).map_err(|e| e.to_string())?;
        let what = format!("mute {}", self.mute);
        for t in &self.tags {
            check_tag(&what, t)?;
        }
        match &self.window {
            MuteWindow::AdHoc { from, until } => {
                if from.is_some_and(|f| f >= *until) {
                    return Err(format!("{what}: from must be before until"));
                }
            }
            MuteWindow::Scheduled(w) => w.validate().map_err(|e| format!("{what}: {e}"))?,
        }
        Ok(())
    }
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
    /// Create or replace a recipient.
    SetRecipient(RecipientSpec),
    /// Delete a recipient (rules naming it are rejected until changed).
    DeleteRecipient {
        /// The recipient.
        recipient: RecipientId,
    },
    /// Create or replace a channel.
    SetChannel(ChannelSpec),
    /// Delete a channel.
    DeleteChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// Create or replace a mute or maintenance window.
    SetMute(MuteSpec),
    /// End a mute.
    DeleteMute {
        /// The mute.
        mute: String,
    },
}

impl AreaCommand for NotifyCommand {
    fn verb(&self) -> &'static str {
        match self {
            Self::SetRule(_) => "set_rule",
            Self::DeleteRule { .. } => "delete_rule",
            Self::SetRecipient(_) => "set_recipient",
            Self::DeleteRecipient { .. } => "delete_recipient",
            Self::SetChannel(_) => "set_channel",
            Self::DeleteChannel { .. } => "delete_channel",
            Self::SetMute(_) => "set_mute",
            Self::DeleteMute { .. } => "delete_mute",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::SetRule(sample_rule()),
            Self::DeleteRule {
                rule: id("page-ops"),
            },
            Self::SetRecipient(sample_recipient()),
            Self::DeleteRecipient {
                recipient: id("alice"),
            },
            Self::SetChannel(sample_channel()),
            Self::DeleteChannel {
                channel: id("ops-webhook"),
            },
            Self::SetMute(sample_mute()),
            Self::DeleteMute {
                mute: "db-maintenance".into(),
            },
        ]
    }
}

pub(crate) fn sample_rule() -> RuleSpec {
    RuleSpec {
        rule: id("page-ops"),
        matches: AlertMatch {
            kinds: vec!["service_down".into()],
            min_severity: Severity::Error,
            tags: vec!["web".into()],
            ..AlertMatch::default()
        },
        recipients: vec![id("alice")],
        channels: vec![id("ops-webhook")],
        cooldown_s: 300,
        escalation: vec![EscalationStep {
            after_s: 900,
            recipients: vec![id("bob")],
            channels: vec![id("ops-mail")],
        }],
        notify_resolved: true,
    }
}

pub(crate) fn sample_recipient() -> RecipientSpec {
    RecipientSpec {
        recipient: id("alice"),
        display_name: "Alice".into(),
        kind: RecipientKind::Operator,
        owns: vec![],
        email: Some("alice@example.com".into()),
        min_severity: Severity::Warn,
        channels: vec![],
        quiet_hours: Some(QuietHours {
            window: DailyWindow {
                start: "22:00".into(),
                end: "07:00".into(),
                time_zone: "Europe/Berlin".into(),
                days: vec![],
            },
            breakthrough: Severity::Critical,
        }),
    }
}

pub(crate) fn sample_channel() -> ChannelSpec {
    ChannelSpec {
        channel: id("ops-webhook"),
        kind: ChannelKind::Webhook {
            url: "https://hooks.example.com/fleet".into(),
            hmac_secret: Some("ops-hmac".into()),
        },
        timeout_ms: 5_000,
        max_attempts: 5,
    }
}

pub(crate) fn sample_mute() -> MuteSpec {
    MuteSpec {
        mute: "db-maintenance".into(),
        hosts: vec![id("db-1")],
        services: vec![],
        tags: vec![],
        window: MuteWindow::Scheduled(DailyWindow {
            start: "02:00".into(),
            end: "04:00".into(),
            time_zone: "UTC".into(),
            days: vec!["sun".into()],
        }),
        reason: "weekly vacuum".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_valid() {
        sample_rule().validate().unwrap();
        sample_recipient().validate().unwrap();
        sample_channel().validate().unwrap();
        sample_mute().validate().unwrap();
    }

    #[test]
    fn malformed_specs_are_rejected_with_the_reason() {
        let mut r = sample_rule();
        r.recipients.clear();
        assert!(r.validate().unwrap_err().contains("recipients is empty"));
        let mut r = sample_rule();
        r.escalation[0].after_s = 0;
        assert!(r.validate().unwrap_err().contains("escalation[0].after_s"));
        let mut c = sample_channel();
        c.kind = ChannelKind::Webhook {
            url: "ftp://x".into(),
            hmac_secret: None,
        };
        assert!(c.validate().unwrap_err().contains("http://"));
        let mut p = sample_recipient();
        p.quiet_hours.as_mut().unwrap().window.start = "25:00".into();
        assert!(p.validate().unwrap_err().contains("quiet_hours"));
        let mut m = sample_mute();
        m.mute = "Bad Name".into();
        assert!(m.validate().is_err());
    }
}
