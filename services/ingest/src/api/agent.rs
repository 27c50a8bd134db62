//! The agent routes: one report, a batch of reports, a batch of notices. Each item is checked
//! (claims, values, times, ids unique within the request), turned into an envelope and submitted.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use fleetbus_schemas::events::agent::{AgentNotice, AgentReport};
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Envelope, EventId, HostId, SCHEMA_VERSION};

use super::validate::{same_agent, same_host, validate_notice, validate_report, TimeWindow};
use super::{
    body_bytes, invalid, parse_json, ApiState, AppError, NoticeBody, NoticesBody, ReportBody,
    ReportsBody, SubmitReply, AGENT_SOURCE,
};

fn report_envelope(r: ReportBody) -> Envelope {
    Envelope {
        id: r.id,
        time: r.time,
        source: AGENT_SOURCE.into(),
        actor: Actor::agent(r.agent.as_str()),
        causation: None,
        schema: SCHEMA_VERSION,
        event: Event::Agent(AgentEvent::Reported(AgentReport {
            agent: r.agent,
            host: r.host,
            agent_version: r.agent_version,
            resources: r.resources,
            services: r.services,
            config_version: r.config_version,
            config_hash: r.config_hash,
        })),
    }
}

fn notice_envelope(n: NoticeBody) -> Envelope {
    Envelope {
        id: n.id,
        time: n.time,
        source: AGENT_SOURCE.into(),
        actor: Actor::agent(n.agent.as_str()),
        causation: None,
        schema: SCHEMA_VERSION,
        event: Event::Agent(AgentEvent::Raised(AgentNotice {
            agent: n.agent,
            host: n.host,
            kind: n.kind,
            severity: n.severity,
            message: n.message,
            service: n.service,
            fields: n.fields,
        })),
    }
}

pub(super) fn parse_agent(raw: &str) -> Result<AgentId, AppError> {
    AgentId::new(raw).map_err(|e| invalid("path.agent", e.to_string()))
}

/// What agents post: reports and events. Each names the agent and host it claims to come from.
trait AgentItem: PartialEq {
    fn id(&self) -> EventId;
    fn claims(&self) -> (&AgentId, &HostId);
    fn check(&self, at: &str, window: &TimeWindow) -> Result<(), AppError>;
    fn into_envelope(self) -> Envelope;
}

impl AgentItem for ReportBody {
    fn id(&self) -> EventId {
        self.id
    }
    fn claims(&self) -> (&AgentId, &HostId) {
        (&self.agent, &self.host)
    }
    fn check(&self, at: &str, window: &TimeWindow) -> Result<(), AppError> {
        validate_report(at, self, window)
    }
    fn into_envelope(self) -> Envelope {
        report_envelope(self)
    }
}

impl AgentItem for NoticeBody {
    fn id(&self) -> EventId {
        self.id
    }
    fn claims(&self) -> (&AgentId, &HostId) {
        (&self.agent, &self.host)
    }
    fn check(&self, at: &str, window: &TimeWindow) -> Result<(), AppError> {
        validate_notice(at, self, window)
    }
    fn into_envelope(self) -> Envelope {
        notice_envelope(self)
    }
}

/// Authenticates the agent of the path, applies its rate limit and parses the body.
fn agent_request<B: serde::de::DeserializeOwned>(
    state: &ApiState,
    agent: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(AgentId, B), AppError> {
    let agent = state.authenticate(headers, Some(&parse_agent(agent)?))?;
    state.rate_limit(&agent)?;
    Ok((agent, parse_json(&body_bytes(body)?)?))
}

/// Checks what `agent` posted and answers 202 once it is committed. `field` names the batch's
/// list in error paths (`reports[3].host`); a single item is the body itself (`host`).
async fn accept<T: AgentItem>(
    state: &ApiState,
    agent: &AgentId,
    field: Option<&str>,
    items: Vec<T>,
) -> Result<(StatusCode, Json<SubmitReply>), AppError> {
    if let Some(field) = field {
        batch_len(field, items.len(), state.limits.batch_max_items)?;
    }
    let host = state.agent_host(agent);
    let window = TimeWindow::around(Utc::now(), &state.limits);
    // The first index of each id: a later item with the same id is a duplicate (answered as
    // such by `submit`) if it is the same item, and a client bug if it is not.
    let mut first: HashMap<EventId, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = field.map(|f| format!("{f}[{i}]"));
        let key = |k: &str| {
            at.as_ref()
                .map_or_else(|| k.to_owned(), |a| format!("{a}.{k}"))
        };
        let (claimed_agent, claimed_host) = item.claims();
        same_agent(agent, claimed_agent, &key("agent"))?;
        same_host(&host, claimed_host, &key("host"))?;
        item.check(at.as_deref().unwrap_or(""), &window)?;
        let earlier = *first.entry(item.id()).or_insert(i);
        if earlier != i && items[earlier] != *item {
            return Err(invalid(
                key("id"),
                format!(
                    "id {} is also used by {}[{earlier}] with different content; every event needs its own id",
                    item.id(),
                    field.unwrap_or("")
                ),
            ));
        }
    }
    let blocked = state.is_blocked(agent);
    let envelopes = items.into_iter().map(T::into_envelope).collect();
    let reply = state.submit(envelopes, blocked).await?;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

pub(super) async fn post_report(
    AxState(state): AxState<Arc<ApiState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitReply>), AppError> {
    let (agent, report): (_, ReportBody) = agent_request(&state, &agent, &headers, body)?;
    accept(&state, &agent, None, vec![report]).await
}

/// A batch must hold 1 to `max` items; the error names the batch field.
fn batch_len(field: &str, len: usize, max: usize) -> Result<(), AppError> {
    if len == 0 || len > max {
        return Err(invalid(
            field,
            format!("must hold 1 to {max} {field}, got {len}"),
        ));
    }
    Ok(())
}

pub(super) async fn post_reports(
    AxState(state): AxState<Arc<ApiState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitReply>), AppError> {
    let (agent, batch): (_, ReportsBody) = agent_request(&state, &agent, &headers, body)?;
    accept(&state, &agent, Some("reports"), batch.reports).await
}

pub(super) async fn post_events(
    AxState(state): AxState<Arc<ApiState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitReply>), AppError> {
    let (agent, batch): (_, NoticesBody) = agent_request(&state, &agent, &headers, body)?;
    accept(&state, &agent, Some("events"), batch.events).await
}
