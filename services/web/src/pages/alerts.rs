//! Alerts (open, acknowledged, resolved; ack and resolve) and the notification log.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fleetbus_projections::{Alert, AlertState};
use fleetbus_schemas::commands::AlertCommand;
use fleetbus_schemas::{AlertId, Command, UserRole};
use serde::{Deserialize, Serialize};

use super::overview::rejection;
use super::tasks::done;
use super::{need, render};
use crate::auth::Principal;
use crate::bus::Outcome;
use crate::views::{self, Nav};
use crate::{Shared, WebError};

/// One alert as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertRow {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// `open`, `acknowledged`, `resolved`.
    pub state: String,
    /// Host.
    pub host: String,
    /// Service.
    pub service: String,
    /// Message.
    pub message: String,
    /// Opened at.
    pub opened: String,
    /// Who acknowledged.
    pub acknowledged_by: String,
    /// When resolved.
    pub resolved: String,
    /// Note.
    pub note: String,
}

impl From<&Alert> for AlertRow {
    fn from(a: &Alert) -> Self {
        AlertRow {
            id: a.id.to_string(),
            kind: format!("{:?}", a.kind),
            severity: a.severity.as_str().to_owned(),
            state: match a.state {
                AlertState::Open => "open",
                AlertState::Acknowledged => "acknowledged",
                AlertState::Resolved => "resolved",
            }
            .to_owned(),
            host: a.host.as_ref().map(|h| h.to_string()).unwrap_or_default(),
            service: a
                .service
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            message: a.message.clone(),
            opened: views::time(a.opened_at),
            acknowledged_by: a.acknowledged_by.clone().unwrap_or_default(),
            resolved: a.resolved_at.map(views::time).unwrap_or_default(),
            note: a.note.clone().unwrap_or_default(),
        }
    }
}

/// Alert list filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AlertFilter {
    /// `open`, `acknowledged`, `resolved` or empty for open + acknowledged.
    #[serde(default)]
    pub state: String,
}

/// Alerts matching the filter, newest first (at most 500).
pub(crate) fn rows(state: &Shared, f: &AlertFilter) -> Vec<AlertRow> {
    state.hub.read_fold(|fold| {
        fold.proj
            .alerts
            .alerts
            .values()
            .rev()
            .map(AlertRow::from)
            .filter(|a| match f.state.as_str() {
                "" => a.state != "resolved",
                "all" => true,
                s => a.state == s,
            })
            .take(500)
            .collect()
    })
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: Nav,
    rows: Vec<AlertRow>,
    filter: AlertFilter,
}

/// `GET /alerts`.
pub(crate) async fn list(
    State(state): State<Shared>,
    p: Principal,
    Query(filter): Query<AlertFilter>,
) -> Response {
    render(&AlertsPage {
        nav: Nav::new(&p, "alerts"),
        rows: rows(&state, &filter),
        filter,
    })
}

/// Note field of ack/resolve.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoteForm {
    #[serde(default)]
    note: String,
}

/// Acknowledges or resolves an alert for a principal (operator).
pub(crate) async fn alert_command(
    state: &Shared,
    p: &Principal,
    alert: &str,
    verb: &str,
    note: String,
) -> Result<(), WebError> {
    need(p, UserRole::Operator)?;
    let alert: AlertId = alert
        .parse()
        .map_err(|_| WebError::NotFound(format!("unknown alert {alert:?}")))?;
    let exists = state
        .hub
        .read_fold(|f| f.proj.alerts.alerts.contains_key(&alert));
    if !exists {
        return Err(WebError::NotFound(format!("unknown alert {alert}")));
    }
    let command = match verb {
        "ack" => AlertCommand::Ack { alert, note },
        "resolve" => AlertCommand::Resolve { alert, note },
        other => return Err(WebError::NotFound(format!("no alert action {other:?}"))),
    };
    match state
        .bus
        .command(&state.hub, p.actor(), Command::Alert(command))
        .await?
    {
        Outcome::Done(_) => Ok(()),
        Outcome::Pending(id) => Err(crate::bus::no_answer(id)),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
    }
}

/// `POST /alerts/{alert}/{ack|resolve}`.
pub(crate) async fn act(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((alert, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<NoteForm>,
) -> Response {
    let result = alert_command(&state, &p, &alert, &verb, form.note).await;
    done(&headers, result, &format!("alert {verb} sent"), "/alerts")
}

/// One notification log line.
#[derive(Debug, Clone)]
pub(crate) struct NotificationRow {
    /// Sequence.
    pub seq: u64,
    /// Time.
    pub time: String,
    /// Decision.
    pub kind: String,
    /// Alert, rule, recipient, channel.
    pub target: String,
    /// Attempts / reason.
    pub detail: String,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    nav: Nav,
    rows: Vec<NotificationRow>,
}

/// `GET /notifications`: the notifier's decisions, newest first.
pub(crate) async fn notifications(State(state): State<Shared>, p: Principal) -> Response {
    let rows = state.hub.read_fold(|f| {
        f.notifications
            .iter()
            .rev()
            .map(|n| {
                let r = &n.detail["notification"];
                let target = if r.is_object() {
                    format!(
                        "alert {} · rule {} · {} via {}",
                        r["alert"].as_str().unwrap_or("-"),
                        r["rule"].as_str().unwrap_or("-"),
                        r["recipient"].as_str().unwrap_or("-"),
                        r["channel"].as_str().unwrap_or("-"),
                    )
                } else {
                    String::new()
                };
                let mut detail = n.detail.clone();
                if let Some(obj) = detail.as_object_mut() {
                    obj.remove("notification");
                }
                NotificationRow {
                    seq: n.seq,
                    time: views::time(n.time),
                    kind: n.kind.clone(),
                    target,
                    detail: detail.to_string(),
                }
            })
            .collect()
    });
    render(&NotificationsPage {
        nav: Nav::new(&p, "notifications"),
        rows,
    })
}
