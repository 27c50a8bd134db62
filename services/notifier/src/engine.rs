//! The decision engine: a pure fold of the event log into notification decisions.
//!
//! `Engine::apply` takes one event and returns what should happen (send, or suppress and why).
//! It does no I/O and reads no clock: the time of a decision is the time of the event that caused
//! it (or the tick time for escalations), so replaying the log after a restart makes the same
//! decisions with the same deterministic notification ids. What was actually done is told by the
//! `sent` / `failed` / `suppressed` events, which the dispatcher checks before acting.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use fleetbus_schemas::commands::notify::{
    parse_hhmm, AlertMatch, ChannelKind, ChannelSpec, DailyWindow, MuteSpec, MuteWindow,
    RecipientKind, RecipientSpec, RuleSpec, WEEKDAYS,
};
use fleetbus_schemas::events::notification::{NotificationRef, Phase, SuppressedBy};
use fleetbus_schemas::events::NotificationEvent;
use fleetbus_schemas::{AlertId, ChannelId, Envelope, Event, RecipientId, RuleId};
use sha2::{Digest, Sha256};

use crate::alerts::{AlertBook, AlertInfo, HostInfo, Transition, TransitionKind};

/// The deterministic id of a notification: `n-` + 32 hex digits of
/// SHA-256(alert | rule | recipient | channel | step | phase).
pub fn notification_id(
    alert: AlertId,
    rule: &RuleId,
    recipient: &RecipientId,
    channel: &ChannelId,
    step: u32,
    phase: Phase,
) -> String {
    let phase = match phase {
        Phase::Firing => "firing",
        Phase::Resolved => "resolved",
    };
    let mut h = Sha256::new();
    h.update(format!("{alert}|{rule}|{recipient}|{channel}|{step}|{phase}").as_bytes());
    format!("n-{}", hex::encode(&h.finalize()[..16]))
}

/// Rules, recipients, channels and mutes in force.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Rules by id.
    pub rules: BTreeMap<RuleId, RuleSpec>,
    /// Recipients by id.
    pub recipients: BTreeMap<RecipientId, RecipientSpec>,
    /// Channels by id.
    pub channels: BTreeMap<ChannelId, ChannelSpec>,
    /// Mutes by id.
    pub mutes: BTreeMap<String, MuteSpec>,
}

impl Catalog {
    /// Applies a configuration fact; returns true if it was one.
    pub fn apply(&mut self, e: &NotificationEvent) -> bool {
        match e {
            NotificationEvent::RuleSet(r) => {
                self.rules.insert(r.rule.clone(), r.clone());
            }
            NotificationEvent::RuleDeleted { rule } => {
                self.rules.remove(rule);
            }
            NotificationEvent::RecipientSet(r) => {
                self.recipients.insert(r.recipient.clone(), r.clone());
            }
            NotificationEvent::RecipientDeleted { recipient } => {
                self.recipients.remove(recipient);
            }
            NotificationEvent::ChannelSet(c) => {
                self.channels.insert(c.channel.clone(), c.clone());
            }
            NotificationEvent::ChannelDeleted { channel } => {
                self.channels.remove(channel);
            }
            NotificationEvent::MuteSet(m) => {
                self.mutes.insert(m.mute.clone(), m.clone());
            }
            NotificationEvent::MuteDeleted { mute } => {
                self.mutes.remove(mute);
            }
            NotificationEvent::Sent { .. }
            | NotificationEvent::Failed { .. }
            | NotificationEvent::Suppressed { .. } => return false,
        }
        true
    }

    /// Checks that a rule names existing recipients and channels.
    pub fn check_rule_refs(&self, rule: &RuleSpec) -> Result<(), String> {
        for r in rule.all_recipients() {
            if !self.recipients.contains_key(r) {
                return Err(format!(
                    "rule {}: recipient {r} does not exist (known: {})",
                    rule.rule,
                    join(self.recipients.keys())
                ));
            }
        }
        for c in rule.all_channels() {
            if !self.channels.contains_key(c) {
                return Err(format!(
                    "rule {}: channel {c} does not exist (known: {})",
                    rule.rule,
                    join(self.channels.keys())
                ));
            }
        }
        Ok(())
    }
}

fn join<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = it.map(|x| x.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Checks the time zone names of a recipient's quiet hours.
pub fn check_time_zones_recipient(r: &RecipientSpec) -> Result<(), String> {
    match &r.quiet_hours {
        Some(q) => check_tz(&q.window).map_err(|e| format!("quiet_hours: {e}")),
        None => Ok(()),
    }
}

/// Checks the time zone name of a scheduled mute.
pub fn check_time_zones_mute(m: &MuteSpec) -> Result<(), String> {
    match &m.window {
        MuteWindow::Scheduled(w) => check_tz(w),
        MuteWindow::AdHoc { .. } => Ok(()),
    }
}

fn check_tz(w: &DailyWindow) -> Result<(), String> {
    chrono_tz::Tz::from_str(&w.time_zone)
        .map(|_| ())
        .map_err(|_| {
            format!(
                "unknown time zone {:?}, expected an IANA name like Europe/Berlin",
                w.time_zone
            )
        })
}

/// True when `t` falls in the daily window (in its time zone). Invalid windows never match.
pub fn window_contains(w: &DailyWindow, t: DateTime<Utc>) -> bool {
    let (Ok(tz), Ok(start), Ok(end)) = (
        chrono_tz::Tz::from_str(&w.time_zone),
        parse_hhmm(&w.start),
        parse_hhmm(&w.end),
    ) else {
        return false;
    };
    let local = t.with_timezone(&tz);
    let time = local.time();
    let day = local.weekday().num_days_from_monday() as usize;
    let on = |d: usize| w.days.is_empty() || w.days.iter().any(|x| x == WEEKDAYS[d % 7]);
    if start < end {
        start <= time && time < end && on(day)
    } else {
        (time >= start && on(day)) || (time < end && on(day + 6))
    }
}

fn mute_active(m: &MuteSpec, t: DateTime<Utc>) -> bool {
    match &m.window {
        MuteWindow::AdHoc { from, until } => from.is_none_or(|f| f <= t) && t < *until,
        MuteWindow::Scheduled(w) => window_contains(w, t),
    }
}

fn mute_matches(m: &MuteSpec, a: &AlertInfo, host: Option<&HostInfo>) -> bool {
    (m.hosts.is_empty() || a.host.as_ref().is_some_and(|h| m.hosts.contains(h)))
        && (m.services.is_empty() || a.service.as_ref().is_some_and(|s| m.services.contains(s)))
        && (m.tags.is_empty() || host.is_some_and(|h| h.tags.iter().any(|t| m.tags.contains(t))))
}

/// True when the rule's match selects the alert.
pub fn rule_matches(m: &AlertMatch, a: &AlertInfo, host: Option<&HostInfo>) -> bool {
    a.severity >= m.min_severity
        && (m.kinds.is_empty()
            || m.kinds.contains(&a.kind)
            || a.subkind.as_ref().is_some_and(|k| m.kinds.contains(k)))
        && (m.hosts.is_empty() || a.host.as_ref().is_some_and(|h| m.hosts.contains(h)))
        && (m.services.is_empty() || a.service.as_ref().is_some_and(|s| m.services.contains(s)))
        && (m.tags.is_empty() || host.is_some_and(|h| h.tags.iter().any(|t| m.tags.contains(t))))
        && (m.roles.is_empty() || host.is_some_and(|h| h.roles.iter().any(|r| m.roles.contains(r))))
}

/// A notification to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Which.
    pub notification: NotificationRef,
    /// The alert, as it was when decided.
    pub alert: AlertInfo,
    /// To whom.
    pub recipient: RecipientSpec,
    /// Through what.
    pub channel: ChannelSpec,
    /// When it was decided (event or tick time).
    pub decided_at: DateTime<Utc>,
}

/// What the engine decided.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Deliver it.
    Send(Box<Outgoing>),
    /// Do not deliver it, and record why.
    Suppress {
        /// Which.
        notification: NotificationRef,
        /// Why.
        by: SuppressedBy,
        /// When it was decided.
        decided_at: DateTime<Utc>,
    },
}

impl Decision {
    /// The notification decided on.
    pub fn notification(&self) -> &NotificationRef {
        match self {
            Decision::Send(o) => &o.notification,
            Decision::Suppress { notification, .. } => notification,
        }
    }
    /// When it was decided.
    pub fn decided_at(&self) -> DateTime<Utc> {
        match self {
            Decision::Send(o) => o.decided_at,
            Decision::Suppress { decided_at, .. } => *decided_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    rule: RuleId,
    recipient: RecipientId,
    channel: ChannelId,
    step: u32,
}

/// Rules indexed by their most selective dimension (host, else kind, else none), so 1,000
/// rules are not each looked at for every alert. Candidates are then fully matched.
#[derive(Debug, Default)]
struct RuleIndex {
    rules: Vec<std::sync::Arc<RuleSpec>>,
    by_host: HashMap<String, Vec<usize>>,
    by_kind: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
}

impl RuleIndex {
    fn build(rules: &BTreeMap<RuleId, RuleSpec>) -> Self {
        let mut idx = RuleIndex::default();
        for (i, r) in rules.values().enumerate() {
            idx.rules.push(std::sync::Arc::new(r.clone()));
            if !r.matches.hosts.is_empty() {
                for h in &r.matches.hosts {
                    idx.by_host.entry(h.to_string()).or_default().push(i);
                }
            } else if !r.matches.kinds.is_empty() {
                for k in &r.matches.kinds {
                    idx.by_kind.entry(k.clone()).or_default().push(i);
                }
            } else {
                idx.any.push(i);
            }
        }
        idx
    }

    /// Rules that match the alert, in rule id order.
    fn matching(
        &self,
        alert: &AlertInfo,
        host: Option<&HostInfo>,
    ) -> Vec<std::sync::Arc<RuleSpec>> {
        let mut v: Vec<usize> = Vec::new();
        if let Some(h) = alert
            .host
            .as_ref()
            .and_then(|h| self.by_host.get(h.as_str()))
        {
            v.extend(h);
        }
        if let Some(k) = self.by_kind.get(&alert.kind) {
            v.extend(k);
        }
        if let Some(k) = alert.subkind.as_ref().and_then(|k| self.by_kind.get(k)) {
            v.extend(k);
        }
        v.extend(&self.any);
        v.sort_unstable();
        v.dedup();
        v.into_iter()
            .map(|i| &self.rules[i])
            .filter(|r| rule_matches(&r.matches, alert, host))
            .cloned()
            .collect()
    }
}

/// The whole decision state: catalog, alerts, cooldowns, pending escalations, who was told.
#[derive(Debug, Default)]
pub struct Engine {
    /// Rules, recipients, channels, mutes.
    pub catalog: Catalog,
    /// Alerts and fleet facts.
    pub book: AlertBook,
    index: Option<RuleIndex>,
    cooldown: HashMap<(RuleId, String), DateTime<Utc>>,
    /// alert → (rule → next escalation step, 1-based)
    escalation: BTreeMap<AlertId, BTreeMap<RuleId, u32>>,
    notified: HashMap<AlertId, Vec<Target>>,
}

impl Engine {
    /// An engine with a static catalog (from the config file).
    pub fn new(catalog: Catalog) -> Self {
        Engine {
            catalog,
            ..Engine::default()
        }
    }

    /// Folds one event; returns the decisions it (and escalations due by its time) cause.
    pub fn apply(&mut self, env: &Envelope) -> Vec<Decision> {
        let mut out = self.tick(env.time);
        if let Event::Notification(n) = &env.event {
            if self.catalog.apply(n) {
                self.index = None;
            }
            return out;
        }
        for t in self.book.apply(env) {
            self.on_transition(&t, &mut out);
        }
        out
    }

    /// Escalations due at `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut advanced: Vec<(AlertId, RuleId, u32)> = Vec::new();
        for (alert_id, rules) in &self.escalation {
            let Some(alert) = self.book.get(alert_id) else {
                continue;
            };
            if alert.acknowledged {
                continue;
            }
            for (rule_id, next) in rules {
                let Some(rule) = self.catalog.rules.get(rule_id) else {
                    continue;
                };
                let mut step = *next;
                while let Some(s) = rule.escalation.get(step as usize - 1) {
                    let due = alert.opened_at + chrono::Duration::seconds(s.after_s as i64);
                    if due > now {
                        break;
                    }
                    advanced.push((*alert_id, rule_id.clone(), step));
                    step += 1;
                }
            }
        }
        for (alert_id, rule_id, step) in advanced {
            let (Some(alert), Some(rule)) = (
                self.book.get(&alert_id).cloned(),
                self.catalog.rules.get(&rule_id).cloned(),
            ) else {
                continue;
            };
            if let Some(next) = self
                .escalation
                .get_mut(&alert_id)
                .and_then(|m| m.get_mut(&rule_id))
            {
                *next = step + 1;
            }
            let Some(s) = rule.escalation.get(step as usize - 1) else {
                continue;
            };
            let at = alert.opened_at + chrono::Duration::seconds(s.after_s as i64);
            if let Some(by) = self.rule_level_suppression(&alert, None, at) {
                self.suppress_all(
                    &rule.rule,
                    &s.recipients,
                    &s.channels,
                    step,
                    &alert,
                    by,
                    at,
                    &mut out,
                );
                continue;
            }
            self.route(
                &rule,
                &s.recipients,
                &s.channels,
                step,
                &alert,
                Phase::Firing,
                at,
                &mut out,
            );
        }
        out
    }

    fn on_transition(&mut self, t: &Transition, out: &mut Vec<Decision>) {
        let alert = &t.alert;
        match t.kind {
            TransitionKind::Opened => {
                if self.index.is_none() {
                    self.index = Some(RuleIndex::build(&self.catalog.rules));
                }
                let host = alert.host.as_ref().and_then(|h| self.book.host(h));
                let rules = self
                    .index
                    .as_ref()
                    .map(|i| i.matching(alert, host.as_ref()))
                    .unwrap_or_default();
                for rule in rules {
                    if let Some(by) = self.rule_level_suppression(alert, Some(&rule), t.at) {
                        self.suppress_all(
                            &rule.rule,
                            &rule.recipients,
                            &rule.channels,
                            0,
                            alert,
                            by,
                            t.at,
                            out,
                        );
                        continue;
                    }
                    let sent = self.route(
                        &rule,
                        &rule.recipients,
                        &rule.channels,
                        0,
                        alert,
                        Phase::Firing,
                        t.at,
                        out,
                    );
                    if sent > 0 && rule.cooldown_s > 0 {
                        self.cooldown
                            .insert((rule.rule.clone(), alert.key.clone()), t.at);
                    }
                    if !rule.escalation.is_empty() {
                        self.escalation
                            .entry(alert.id)
                            .or_default()
                            .insert(rule.rule.clone(), 1);
                    }
                }
            }
            TransitionKind::Acknowledged => {
                self.escalation.remove(&alert.id);
            }
            TransitionKind::Resolved => {
                self.escalation.remove(&alert.id);
                let targets = self.notified.remove(&alert.id).unwrap_or_default();
                for target in targets {
                    let Some(rule) = self.catalog.rules.get(&target.rule).cloned() else {
                        continue;
                    };
                    if !rule.notify_resolved {
                        continue;
                    }
                    self.route(
                        &rule,
                        std::slice::from_ref(&target.recipient),
                        std::slice::from_ref(&target.channel),
                        target.step,
                        alert,
                        Phase::Resolved,
                        t.at,
                        out,
                    );
                }
            }
        }
    }

    /// Blocked agent, mute, host-down dependency, cooldown — in that order.
    fn rule_level_suppression(
        &self,
        alert: &AlertInfo,
        rule_for_cooldown: Option<&RuleSpec>,
        at: DateTime<Utc>,
    ) -> Option<SuppressedBy> {
        if alert
            .host
            .as_ref()
            .is_some_and(|h| self.book.host_blocked(h))
        {
            return Some(SuppressedBy::Blocked);
        }
        let host = alert.host.as_ref().and_then(|h| self.book.host(h));
        if let Some(m) = self
            .catalog
            .mutes
            .values()
            .find(|m| mute_active(m, at) && mute_matches(m, alert, host.as_ref()))
        {
            return Some(SuppressedBy::Mute {
                mute: m.mute.clone(),
                reason: m.reason.clone(),
            });
        }
        if alert.service.is_some() {
            if let Some(h) = alert
                .host
                .as_ref()
                .and_then(|h| self.book.host_down_alert(h))
                .filter(|h| h.id != alert.id)
            {
                return Some(SuppressedBy::Dependency { host_alert: h.id });
            }
        }
        if let Some(rule) = rule_for_cooldown {
            if let Some(last) = self.cooldown.get(&(rule.rule.clone(), alert.key.clone())) {
                let until = *last + chrono::Duration::seconds(rule.cooldown_s as i64);
                if at < until {
                    return Some(SuppressedBy::Cooldown {
                        remaining_s: (until - at).num_seconds().max(1) as u64,
                    });
                }
            }
        }
        None
    }

    fn reference(
        alert: &AlertInfo,
        rule: &RuleId,
        recipient: &RecipientId,
        channel: &ChannelId,
        step: u32,
        phase: Phase,
    ) -> NotificationRef {
        NotificationRef {
            id: notification_id(alert.id, rule, recipient, channel, step, phase),
            alert: alert.id,
            rule: rule.clone(),
            recipient: recipient.clone(),
            channel: channel.clone(),
            step,
            phase,
            severity: alert.severity,
            host: alert.host.clone(),
            service: alert.service.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn suppress_all(
        &self,
        rule: &RuleId,
        recipients: &[RecipientId],
        channels: &[ChannelId],
        step: u32,
        alert: &AlertInfo,
        by: SuppressedBy,
        at: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) {
        for r in recipients {
            for c in channels {
                if !self.in_scope(r, c, alert) {
                    continue;
                }
                out.push(Decision::Suppress {
                    notification: Self::reference(alert, rule, r, c, step, Phase::Firing),
                    by: by.clone(),
                    decided_at: at,
                });
            }
        }
    }

    /// Customers hear only about their host groups, and a recipient who lists channels only
    /// through those: out-of-scope pairs are not notifications at all (no event).
    fn in_scope(&self, r: &RecipientId, c: &ChannelId, alert: &AlertInfo) -> bool {
        let Some(spec) = self.catalog.recipients.get(r) else {
            return true;
        };
        if !spec.channels.is_empty() && !spec.channels.contains(c) {
            return false;
        }
        if spec.kind == RecipientKind::Customer {
            let host = alert.host.as_ref().and_then(|h| self.book.host(h));
            return host.is_some_and(|h| h.tags.iter().any(|t| spec.owns.contains(t)));
        }
        true
    }

    /// Per-recipient decisions; returns how many were sends.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        rule: &RuleSpec,
        recipients: &[RecipientId],
        channels: &[ChannelId],
        step: u32,
        alert: &AlertInfo,
        phase: Phase,
        at: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) -> usize {
        let mut sent = 0;
        for r in recipients {
            for c in channels {
                if !self.in_scope(r, c, alert) {
                    continue;
                }
                let notification = Self::reference(alert, &rule.rule, r, c, step, phase);
                let suppress = |by| Decision::Suppress {
                    notification: notification.clone(),
                    by,
                    decided_at: at,
                };
                let (Some(recipient), Some(channel)) =
                    (self.catalog.recipients.get(r), self.catalog.channels.get(c))
                else {
                    let missing = if self.catalog.recipients.contains_key(r) {
                        format!("channel {c} does not exist")
                    } else {
                        format!("recipient {r} does not exist")
                    };
                    out.push(suppress(SuppressedBy::Unroutable { reason: missing }));
                    continue;
                };
                if matches!(channel.kind, ChannelKind::Email { .. }) && recipient.email.is_none() {
                    out.push(suppress(SuppressedBy::Unroutable {
                        reason: format!("recipient {r} has no email address"),
                    }));
                    continue;
                }
                if alert.severity < recipient.min_severity {
                    out.push(suppress(SuppressedBy::Preference {
                        reason: format!(
                            "severity {} is below {r}'s minimum {}",
                            alert.severity.as_str(),
                            recipient.min_severity.as_str()
                        ),
                    }));
                    continue;
                }
                if let Some(q) = &recipient.quiet_hours {
                    if alert.severity < q.breakthrough && window_contains(&q.window, at) {
                        out.push(suppress(SuppressedBy::Preference {
                            reason: format!(
                                "quiet hours {}–{} {}",
                                q.window.start, q.window.end, q.window.time_zone
                            ),
                        }));
                        continue;
                    }
                }
                if phase == Phase::Firing {
                    self.notified.entry(alert.id).or_default().push(Target {
                        rule: rule.rule.clone(),
                        recipient: r.clone(),
                        channel: c.clone(),
                        step,
                    });
                }
                out.push(Decision::Send(Box::new(Outgoing {
                    notification,
                    alert: alert.clone(),
                    recipient: recipient.clone(),
                    channel: channel.clone(),
                    decided_at: at,
                })));
                sent += 1;
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::commands::notify::{EscalationStep, QuietHours};
    use fleetbus_schemas::events::agent::ServiceState;
    use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
    use fleetbus_schemas::events::service::ServiceStatus;
    use fleetbus_schemas::events::{AgentEvent, AlertEvent, HostEvent, ServiceEvent};
    use fleetbus_schemas::{Actor, EventId, Severity, SCHEMA_VERSION};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn at(time: &str, event: Event) -> Envelope {
        Envelope {
            id: EventId::new(),
            time: t(time),
            source: "test".into(),
            actor: Actor::service("test"),
            causation: None,
            schema: SCHEMA_VERSION,
            event,
        }
    }

    fn svc(time: &str, host: &str, name: &str, state: ServiceState) -> Envelope {
        at(
            time,
            Event::Service(ServiceEvent::StatusObserved {
                host: host.parse().unwrap(),
                name: name.parse().unwrap(),
                status: ServiceStatus {
                    state,
                    sub_state: state.as_str().into(),
                    main_pid: None,
                    since: None,
                },
            }),
        )
    }

    fn host(time: &str, name: &str, tags: &[&str]) -> Envelope {
        at(
            time,
            Event::Host(HostEvent::Registered(HostSpec {
                host: name.parse().unwrap(),
                address: "127.0.0.2".into(),
                port: 22,
                user: "fleet".into(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                roles: vec![],
                host_key_policy: HostKeyPolicy::AcceptNew,
                allow_adhoc: false,
                disabled: false,
            })),
        )
    }

    fn recipient(id: &str) -> RecipientSpec {
        RecipientSpec {
            recipient: id.parse().unwrap(),
            display_name: id.into(),
            kind: RecipientKind::Operator,
            owns: vec![],
            email: Some(format!("{id}@example.com")),
            min_severity: Severity::Info,
            channels: vec![],
            quiet_hours: None,
        }
    }

    fn channel(id: &str) -> ChannelSpec {
        ChannelSpec {
            channel: id.parse().unwrap(),
            kind: ChannelKind::Nats,
            timeout_ms: 1000,
            max_attempts: 3,
        }
    }

    fn rule(id: &str, recipients: &[&str], channels: &[&str]) -> RuleSpec {
        RuleSpec {
            rule: id.parse().unwrap(),
            matches: AlertMatch::default(),
            recipients: recipients.iter().map(|s| s.parse().unwrap()).collect(),
            channels: channels.iter().map(|s| s.parse().unwrap()).collect(),
            cooldown_s: 0,
            escalation: vec![],
            notify_resolved: true,
        }
    }

    fn engine(rules: Vec<RuleSpec>) -> Engine {
        let mut c = Catalog::default();
        for r in ["alice", "bob"] {
            c.recipients.insert(r.parse().unwrap(), recipient(r));
        }
        for ch in ["hook", "pager"] {
            c.channels.insert(ch.parse().unwrap(), channel(ch));
        }
        for r in rules {
            c.rules.insert(r.rule.clone(), r);
        }
        Engine::new(c)
    }

    fn sends(d: &[Decision]) -> Vec<&NotificationRef> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Send(o) => Some(&o.notification),
                _ => None,
            })
            .collect()
    }

    fn suppressions(d: &[Decision]) -> Vec<&SuppressedBy> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Suppress { by, .. } => Some(by),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ids_are_deterministic_and_distinct_per_component() {
        let a = AlertId(EventId::new().0);
        let (r, p, c) = (
            "r".parse().unwrap(),
            "p".parse().unwrap(),
            "c".parse().unwrap(),
        );
        let id = notification_id(a, &r, &p, &c, 0, Phase::Firing);
        assert_eq!(id, notification_id(a, &r, &p, &c, 0, Phase::Firing));
        assert_eq!(id.len(), 34);
        assert_ne!(id, notification_id(a, &r, &p, &c, 1, Phase::Firing));
        assert_ne!(id, notification_id(a, &r, &p, &c, 0, Phase::Resolved));
        fleetbus_schemas::ids::validate_name("notification id", &id).unwrap();
    }

    #[test]
    fn given_a_rule_when_a_service_goes_down_and_up_then_firing_and_resolved_are_sent() {
        let mut e = engine(vec![rule("r1", &["alice"], &["hook"])]);
        let d = e.apply(&svc(
            "2026-01-05T10:00:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        let s = sends(&d);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].phase, Phase::Firing);
        let d = e.apply(&svc(
            "2026-01-05T10:01:00Z",
            "web-1",
            "nginx",
            ServiceState::Running,
        ));
        let s = sends(&d);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].phase, Phase::Resolved);
    }

    #[test]
    fn severity_kind_host_and_tag_filters_select_rules() {
        let mut r = rule("web-only", &["alice"], &["hook"]);
        r.matches.tags = vec!["web".into()];
        r.matches.kinds = vec!["service_down".into()];
        let mut crit = rule("crit-only", &["bob"], &["hook"]);
        crit.matches.min_severity = Severity::Critical;
        let mut e = engine(vec![r, crit]);
        e.apply(&host("2026-01-05T09:00:00Z", "web-1", &["web"]));
        e.apply(&host("2026-01-05T09:00:00Z", "db-1", &["db"]));
        let d = e.apply(&svc(
            "2026-01-05T10:00:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        let s = sends(&d);
        assert_eq!(
            s.len(),
            1,
            "error-level service_down on a web host: only web-only"
        );
        assert_eq!(s[0].rule.as_str(), "web-only");
        let d = e.apply(&svc(
            "2026-01-05T10:00:00Z",
            "db-1",
            "pg",
            ServiceState::Failed,
        ));
        assert!(d.is_empty(), "db host matches neither rule: {d:?}");
    }

    #[test]
    fn cooldown_per_rule_and_condition_suppresses_a_flapping_service() {
        let mut r = rule("r1", &["alice"], &["hook"]);
        r.cooldown_s = 600;
        let mut e = engine(vec![r]);
        e.apply(&svc(
            "2026-01-05T10:00:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        e.apply(&svc(
            "2026-01-05T10:01:00Z",
            "web-1",
            "nginx",
            ServiceState::Running,
        ));
        let d = e.apply(&svc(
            "2026-01-05T10:02:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        assert_eq!(
            suppressions(&d),
            vec![&SuppressedBy::Cooldown { remaining_s: 480 }]
        );
        // A suppressed firing means no resolved notification either.
        let d = e.apply(&svc(
            "2026-01-05T10:03:00Z",
            "web-1",
            "nginx",
            ServiceState::Running,
        ));
        assert!(d.is_empty(), "{d:?}");
        let d = e.apply(&svc(
            "2026-01-05T10:20:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        assert_eq!(sends(&d).len(), 1, "after the cooldown it pages again");
    }

    #[test]
    fn mutes_and_maintenance_windows_suppress_with_their_id() {
        let mut e = engine(vec![rule("r1", &["alice"], &["hook"])]);
        e.catalog.mutes.insert(
            "sunday".into(),
            MuteSpec {
                mute: "sunday".into(),
                hosts: vec!["db-1".parse().unwrap()],
                services: vec![],
                tags: vec![],
                window: MuteWindow::Scheduled(DailyWindow {
                    start: "02:00".into(),
                    end: "04:00".into(),
                    time_zone: "Europe/Berlin".into(),
                    days: vec!["sun".into()],
                }),
                reason: "vacuum".into(),
            },
        );
        // Sunday 2026-01-04 02:30 Berlin = 01:30 UTC.
        let d = e.apply(&svc(
            "2026-01-04T01:30:00Z",
            "db-1",
            "pg",
            ServiceState::Failed,
        ));
        assert_eq!(
            suppressions(&d),
            vec![&SuppressedBy::Mute {
                mute: "sunday".into(),
                reason: "vacuum".into()
            }]
        );
        // Same time on a Monday: not in the window.
        let d = e.apply(&svc(
            "2026-01-05T01:30:00Z",
            "db-1",
            "redis",
            ServiceState::Failed,
        ));
        assert_eq!(sends(&d).len(), 1);
        // Ad hoc mute of a web host.
        e.catalog.mutes.insert(
            "deploy".into(),
            MuteSpec {
                mute: "deploy".into(),
                hosts: vec!["web-1".parse().unwrap()],
                services: vec![],
                tags: vec![],
                window: MuteWindow::AdHoc {
                    from: None,
                    until: t("2026-01-05T12:00:00Z"),
                },
                reason: String::new(),
            },
        );
        let d = e.apply(&svc(
            "2026-01-05T11:00:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        assert!(matches!(suppressions(&d)[0], SuppressedBy::Mute { mute, .. } if mute == "deploy"));
    }

    #[test]
    fn a_down_host_suppresses_its_services_alerts_and_blocked_agents_are_suppressed() {
        let mut e = engine(vec![rule("r1", &["alice"], &["hook"])]);
        e.apply(&at(
            "2026-01-05T09:59:00Z",
            crate::alerts::tests::report("web-1"),
        ));
        let down = at(
            "2026-01-05T10:00:00Z",
            Event::Agent(AgentEvent::WentDown {
                agent: "web-1".parse().unwrap(),
                last_seen: t("2026-01-05T09:58:00Z"),
            }),
        );
        let d = e.apply(&down);
        assert_eq!(sends(&d).len(), 1, "the host-down alert itself is sent");
        let d = e.apply(&svc(
            "2026-01-05T10:00:05Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        assert_eq!(
            suppressions(&d),
            vec![&SuppressedBy::Dependency {
                host_alert: AlertId(down.id.0)
            }]
        );
        e.apply(&at(
            "2026-01-05T10:01:00Z",
            Event::Agent(AgentEvent::Blocked {
                agent: "db-1".parse().unwrap(),
                reason: "decommissioned".into(),
            }),
        ));
        let d = e.apply(&svc(
            "2026-01-05T10:02:00Z",
            "db-1",
            "pg",
            ServiceState::Failed,
        ));
        assert_eq!(suppressions(&d), vec![&SuppressedBy::Blocked]);
    }

    #[test]
    fn unacknowledged_alerts_escalate_and_acknowledge_stops_escalation() {
        let mut r = rule("r1", &["alice"], &["hook"]);
        r.escalation = vec![
            EscalationStep {
                after_s: 300,
                recipients: vec!["bob".parse().unwrap()],
                channels: vec!["pager".parse().unwrap()],
            },
            EscalationStep {
                after_s: 900,
                recipients: vec!["bob".parse().unwrap()],
                channels: vec!["hook".parse().unwrap()],
            },
        ];
        let mut e = engine(vec![r]);
        let open = svc(
            "2026-01-05T10:00:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        );
        e.apply(&open);
        assert!(e.tick(t("2026-01-05T10:04:59Z")).is_empty());
        let d = e.tick(t("2026-01-05T10:05:00Z"));
        let s = sends(&d);
        assert_eq!((s.len(), s[0].step, s[0].recipient.as_str()), (1, 1, "bob"));
        assert!(
            e.tick(t("2026-01-05T10:06:00Z")).is_empty(),
            "step 1 only once"
        );
        e.apply(&at(
            "2026-01-05T10:07:00Z",
            Event::Alert(AlertEvent::Acknowledged {
                alert: AlertId(open.id.0),
                note: String::new(),
            }),
        ));
        assert!(
            e.tick(t("2026-01-05T11:00:00Z")).is_empty(),
            "acknowledged: no step 2"
        );
        // Resolution tells everyone who was told: alice (step 0) and bob (step 1).
        let d = e.apply(&svc(
            "2026-01-05T11:01:00Z",
            "web-1",
            "nginx",
            ServiceState::Running,
        ));
        let s = sends(&d);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|n| n.phase == Phase::Resolved));
    }

    #[test]
    fn preferences_quiet_hours_and_customers() {
        let mut e = engine(vec![rule("r1", &["alice", "bob", "cust"], &["hook"])]);
        let mut alice = recipient("alice");
        alice.min_severity = Severity::Critical;
        let mut bob = recipient("bob");
        bob.quiet_hours = Some(QuietHours {
            window: DailyWindow {
                start: "22:00".into(),
                end: "07:00".into(),
                time_zone: "Europe/Berlin".into(),
                days: vec![],
            },
            breakthrough: Severity::Critical,
        });
        let mut cust = recipient("cust");
        cust.kind = RecipientKind::Customer;
        cust.owns = vec!["acme".into()];
        for r in [alice, bob, cust] {
            e.catalog.recipients.insert(r.recipient.clone(), r);
        }
        e.apply(&host("2026-01-05T00:00:00Z", "web-1", &["acme"]));
        e.apply(&host("2026-01-05T00:00:00Z", "web-2", &["other"]));
        // 23:30 Berlin = 22:30 UTC: bob is in quiet hours; alice wants only critical.
        let d = e.apply(&svc(
            "2026-01-05T22:30:00Z",
            "web-1",
            "nginx",
            ServiceState::Failed,
        ));
        let s = sends(&d);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].recipient.as_str(), "cust");
        let sup = suppressions(&d);
        assert_eq!(sup.len(), 2);
        assert!(sup
            .iter()
            .all(|b| matches!(b, SuppressedBy::Preference { .. })));
        // The customer hears nothing about a host outside its groups (no decision at all).
        let d = e.apply(&svc(
            "2026-01-05T12:00:00Z",
            "web-2",
            "nginx",
            ServiceState::Failed,
        ));
        assert!(d
            .iter()
            .all(|d| d.notification().recipient.as_str() != "cust"));
        assert_eq!(sends(&d).len(), 1, "bob at noon");
    }

    #[test]
    fn daily_windows_wrap_midnight_on_the_start_day() {
        let w = DailyWindow {
            start: "22:00".into(),
            end: "02:00".into(),
            time_zone: "UTC".into(),
            days: vec!["fri".into()],
        };
        assert!(window_contains(&w, t("2026-01-09T23:00:00Z")), "fri 23:00");
        assert!(
            window_contains(&w, t("2026-01-10T01:00:00Z")),
            "sat 01:00 belongs to fri"
        );
        assert!(!window_contains(&w, t("2026-01-10T23:00:00Z")), "sat 23:00");
        assert!(
            !window_contains(&w, t("2026-01-09T01:00:00Z")),
            "fri 01:00 belongs to thu"
        );
    }
}
