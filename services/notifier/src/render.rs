//! What a notification says: a JSON document (webhook, NATS), a one-line text (Slack, ntfy) and
//! an email (askama text + HTML). Operators get the details; customers a plain sentence about
//! their host.

use askama::Template;
use fleetbus_schemas::commands::notify::RecipientKind;
use fleetbus_schemas::events::notification::Phase;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::engine::Outgoing;

/// A rendered message, ready for any channel.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// The notification id (or digest id): the `Idempotency-Key`.
    pub key: String,
    /// JSON body for webhooks and NATS.
    pub json: Value,
    /// One-line title (email subject, ntfy title).
    pub title: String,
    /// Plain text body.
    pub text: String,
    /// HTML body.
    pub html: String,
    /// The recipient's email address, if any.
    pub email: Option<String>,
    /// ntfy priority 1–5.
    pub priority: u8,
}

#[derive(Template)]
#[template(path = "notification.txt")]
struct TextTemplate<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "notification.html")]
struct HtmlTemplate<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "digest.txt")]
struct DigestText<'a> {
    id: &'a str,
    count: usize,
    recipient_name: &'a str,
    lines: &'a [String],
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a> {
    id: &'a str,
    count: usize,
    recipient_name: &'a str,
    lines: &'a [String],
}

// Field access in templates goes through `v.` so both templates share one view.
struct View {
    id: String,
    alert_id: String,
    kind: String,
    key: String,
    severity: &'static str,
    message: String,
    target: String,
    opened_at: String,
    rule: String,
    step: u32,
    resolved: bool,
    customer: bool,
    recipient_name: String,
}

impl View {
    fn of(o: &Outgoing) -> View {
        let a = &o.alert;
        let target = match (&a.host, &a.service) {
            (Some(h), Some(s)) => format!("{s} on {h}"),
            (Some(h), None) => h.to_string(),
            _ => a.key.clone(),
        };
        View {
            id: o.notification.id.clone(),
            alert_id: a.id.to_string(),
            kind: a.kind.clone(),
            key: a.key.clone(),
            severity: a.severity.as_str(),
            message: a.message.clone(),
            target,
            opened_at: a.opened_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            rule: o.notification.rule.to_string(),
            step: o.notification.step,
            resolved: o.notification.phase == Phase::Resolved,
            customer: o.recipient.kind == RecipientKind::Customer,
            recipient_name: if o.recipient.display_name.is_empty() {
                o.recipient.recipient.to_string()
            } else {
                o.recipient.display_name.clone()
            },
        }
    }
}

fn priority(o: &Outgoing) -> u8 {
    use fleetbus_schemas::Severity::*;
    if o.notification.phase == Phase::Resolved {
        return 2;
    }
    match o.alert.severity {
        Info => 2,
        Warn => 3,
        Error => 4,
        Critical => 5,
    }
}

fn title(v: &View) -> String {
    let head = if v.resolved {
        "RESOLVED".to_owned()
    } else {
        v.severity.to_uppercase()
    };
    format!("[fleetbus] {head}: {}", v.message)
}

/// The JSON document of one notification.
pub(crate) fn json_of(o: &Outgoing) -> Value {
    let a = &o.alert;
    let n = &o.notification;
    let customer = o.recipient.kind == RecipientKind::Customer;
    let mut alert = json!({
        "id": a.id.to_string(),
        "kind": a.kind,
        "severity": a.severity.as_str(),
        "host": a.host.as_ref().map(|h| h.to_string()),
        "service": a.service.as_ref().map(|s| s.to_string()),
        "message": a.message,
        "opened_at": a.opened_at.to_rfc3339(),
    });
    if !customer {
        alert["key"] = json!(a.key);
        alert["acknowledged"] = json!(a.acknowledged);
    }
    json!({
        "type": "notification",
        "id": n.id,
        "phase": match n.phase { Phase::Firing => "firing", Phase::Resolved => "resolved" },
        "step": n.step,
        "rule": n.rule.to_string(),
        "recipient": {
            "id": o.recipient.recipient.to_string(),
            "name": o.recipient.display_name,
            "kind": if customer { "customer" } else { "operator" },
        },
        "channel": n.channel.to_string(),
        "alert": alert,
        "decided_at": o.decided_at.to_rfc3339(),
    })
}

/// Renders one notification.
pub(crate) fn render(o: &Outgoing) -> Message {
    let v = View::of(o);
    let text = TextTemplate { v: &v }
        .render()
        .unwrap_or_else(|e| format!("{}\n(template error: {e})", title(&v)));
    let html = HtmlTemplate { v: &v }.render().unwrap_or_default();
    Message {
        key: o.notification.id.clone(),
        json: json_of(o),
        title: title(&v),
        text,
        html,
        email: o.recipient.email.clone(),
        priority: priority(o),
    }
}

/// The deterministic id of a digest: `d-` + 32 hex of SHA-256 over its sorted member ids.
pub(crate) fn digest_id(members: &[&Outgoing]) -> String {
    let mut ids: Vec<&str> = members.iter().map(|o| o.notification.id.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"|");
    }
    format!("d-{}", hex::encode(&h.finalize()[..16]))
}

/// Renders several notifications for one (recipient, channel) as one digest.
pub(crate) fn render_digest(members: &[&Outgoing]) -> Message {
    let id = digest_id(members);
    let lines: Vec<String> = members
        .iter()
        .map(|o| {
            let v = View::of(o);
            let head = if v.resolved {
                "resolved".to_owned()
            } else {
                v.severity.to_owned()
            };
            format!("[{head}] {} — {}", v.target, v.message)
        })
        .collect();
    let first = members.first();
    let name = first
        .map(|o| View::of(o).recipient_name)
        .unwrap_or_default();
    let text = DigestText {
        id: &id,
        count: members.len(),
        recipient_name: &name,
        lines: &lines,
    }
    .render()
    .unwrap_or_else(|_| lines.join("\n"));
    let html = DigestHtml {
        id: &id,
        count: members.len(),
        recipient_name: &name,
        lines: &lines,
    }
    .render()
    .unwrap_or_default();
    Message {
        key: id.clone(),
        json: json!({
            "type": "digest",
            "id": id,
            "count": members.len(),
            "notifications": members.iter().map(|o| json_of(o)).collect::<Vec<_>>(),
        }),
        title: format!("[fleetbus] {} notifications", members.len()),
        text,
        html,
        email: first.and_then(|o| o.recipient.email.clone()),
        priority: members.iter().map(|o| priority(o)).max().unwrap_or(3),
    }
}
