//! The events timeline: filters, paging by log sequence, links to time travel.

use askama::Template;
use axum::extract::{Query, State};
use fleetbus_schemas::queries::{model, EventsQuery, LogRecord};
use fleetbus_schemas::Severity;
use serde::{Deserialize, Serialize};

use super::{render, PageError, PageResult};
use crate::auth::Principal;
use crate::hub::LiveEvent;
use crate::views::{self, Nav};
use crate::{Shared, WebError};

/// Timeline filters (also the API's query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct EventFilter {
    /// Host.
    #[serde(default)]
    pub host: String,
    /// Service.
    #[serde(default)]
    pub service: String,
    /// Domain (`agent`, `job`, …).
    #[serde(default)]
    pub domain: String,
    /// Type (`reported`, `failed`, …).
    #[serde(default, rename = "type")]
    pub type_name: String,
    /// Minimum severity.
    #[serde(default)]
    pub severity: String,
    /// Only events before this sequence (older page).
    #[serde(default)]
    pub before: Option<u64>,
    /// Only events at or after this time.
    #[serde(default)]
    pub since: String,
    /// Page size.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One timeline row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventRow {
    /// Sequence.
    pub seq: u64,
    /// Time.
    pub time: String,
    /// RFC 3339 time (for the time-travel link).
    pub time_iso: String,
    /// `domain.type`.
    pub kind: String,
    /// Host.
    pub host: String,
    /// Severity.
    pub severity: String,
    /// Who.
    pub actor: String,
    /// What.
    pub summary: String,
}

impl From<&LiveEvent> for EventRow {
    fn from(e: &LiveEvent) -> Self {
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
        EventRow {
            seq: e.seq,
            time: views::time(e.env.time),
            time_iso: e.env.time.format("%Y-%m-%dT%H:%M:%S").to_string(),
            kind: format!("{}.{}", e.env.event.domain(), e.env.event.type_name()),
            host: e.host.clone().unwrap_or_default(),
            severity: data["severity"].as_str().unwrap_or("").to_owned(),
            actor: e.env.actor.name.clone(),
            summary: data["summary"].as_str().unwrap_or("").to_owned(),
        }
    }
}

fn matches(
    f: &EventFilter,
    e: &LiveEvent,
    min_sev: Option<Severity>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> bool {
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
    (f.host.is_empty() || e.host.as_deref() == Some(f.host.as_str()))
        && (f.service.is_empty() || data["service"].as_str() == Some(f.service.as_str()))
        && (f.domain.is_empty() || e.env.event.domain() == f.domain)
        && (f.type_name.is_empty() || e.env.event.type_name() == f.type_name)
        && min_sev.is_none_or(|min| {
            data["severity"]
                .as_str()
                .and_then(|s| s.parse::<Severity>().ok())
                .unwrap_or(Severity::Info)
                >= min
        })
        && since.is_none_or(|t| e.env.time >= t)
        && f.before.is_none_or(|b| e.seq < b)
}

/// A page of events, newest first, and the cursor of the next (older) page.
pub(crate) async fn page(
    state: &Shared,
    f: &EventFilter,
) -> Result<(Vec<EventRow>, Option<u64>), WebError> {
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    let min_sev = match f.severity.as_str() {
        "" => None,
        s => Some(s.parse::<Severity>().map_err(WebError::BadRequest)?),
    };
    let since = match f.since.trim() {
        "" => None,
        s => Some(
            views::parse_as_of(s)
                .ok_or_else(|| WebError::BadRequest(format!("since {s:?} is not a time")))?,
        ),
    };
    let (recent, complete) = state.hub.since(0);
    let oldest_in_memory = recent.first().map(|e| e.seq).unwrap_or(u64::MAX);
    let mut rows: Vec<EventRow> = recent
        .iter()
        .rev()
        .filter(|e| matches(f, e, min_sev, since))
        .take(limit + 1)
        .map(|e| EventRow::from(e.as_ref()))
        .collect();
    let reaches_older = !complete
        && f.before
            .is_none_or(|b| b > oldest_in_memory || rows.len() <= limit);
    if rows.len() <= limit && reaches_older {
        // Older than memory: ask ingest, which reads the log.
        let query = EventsQuery {
            host: fleetbus_schemas::HostId::new(f.host.clone()).ok(),
            service: fleetbus_schemas::ServiceName::new(f.service.clone()).ok(),
            domain: (!f.domain.is_empty()).then(|| f.domain.clone()),
            type_name: (!f.type_name.is_empty()).then(|| f.type_name.clone()),
            min_severity: min_sev,
            since,
            until: None,
            after_seq: None,
            before_seq: Some(f.before.unwrap_or(u64::MAX).min(oldest_in_memory)),
            limit: (limit + 1 - rows.len()) as u32,
        };
        let older: Vec<LogRecord> = state.bus.query(model::EVENTS, &query).await?;
        rows.extend(
            older
                .into_iter()
                .map(|entry| EventRow::from(&LiveEvent::new(entry.seq, entry.envelope))),
        );
    }
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok((rows, next))
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Nav,
    rows: Vec<EventRow>,
    filter: EventFilter,
    next: String,
    qs: String,
}

/// `GET /events`.
pub(crate) async fn timeline(
    State(state): State<Shared>,
    p: Principal,
    Query(filter): Query<EventFilter>,
) -> PageResult {
    let nav = Nav::new(&p, "events");
    let (rows, next) = page(&state, &filter)
        .await
        .map_err(|e| PageError(e, Some(nav.clone())))?;
    let qs = serde_urlencoded_filter(&filter);
    Ok(render(&EventsPage {
        nav,
        rows,
        next: next.map(|n| n.to_string()).unwrap_or_default(),
        qs,
        filter,
    }))
}

fn serde_urlencoded_filter(f: &EventFilter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("host", &f.host),
        ("service", &f.service),
        ("domain", &f.domain),
        ("type", &f.type_name),
        ("severity", &f.severity),
        ("since", &f.since),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}={}", urlencode(v)));
        }
    }
    parts.join("&")
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Events as JSON rows (for the API).
pub(crate) fn rows_json(rows: &[EventRow]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect()
}
