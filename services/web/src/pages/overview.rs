//! The overview, the host page with its service panels, and service actions.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use fleetbus_projections::FleetStatus;
use fleetbus_schemas::commands::JobCommand;
use fleetbus_schemas::events::service::ServiceAction;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::JobEvent;
use fleetbus_schemas::queries::config::{AgentConfigView, ConfigQuery};
use fleetbus_schemas::queries::{model, AsOf, OverviewQuery};
use fleetbus_schemas::{Command, Event, HostId, JobId, ServiceKey, ServiceName};
use serde::Deserialize;

use super::{need, render, Feedback, PageError, PageResult};
use crate::auth::Principal;
use crate::bus::Outcome;
use crate::views::{self, HostRow, Nav, OverviewFilter, Panel, Widget};
use crate::{Shared, WebError};

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    rows: Vec<HostRow>,
    filter: OverviewFilter,
    tags: Vec<Opt>,
    roles: Vec<Opt>,
    states: Vec<Opt>,
    as_of: String,
    live: bool,
    services_total: usize,
    hosts_total: usize,
    blocked_hidden: usize,
    show_blocked: bool,
    hide_blocked: bool,
}

/// A select option.
#[derive(Debug, Clone)]
pub(crate) struct Opt {
    /// Value and label.
    pub value: String,
    /// Selected?
    pub selected: bool,
}

/// Options with the current value selected.
pub(crate) fn opts(values: Vec<String>, current: &str) -> Vec<Opt> {
    values
        .into_iter()
        .map(|value| Opt {
            selected: value == current,
            value,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "host_row.html")]
struct HostRowFragment {
    row: HostRow,
}

/// `GET /`: every host and service; `?as_of=` shows the fleet as it was then.
pub(crate) async fn overview(
    State(state): State<Shared>,
    p: Principal,
    Query(filter): Query<OverviewFilter>,
) -> PageResult {
    let nav = Nav::new(&p, "overview");
    let now = Utc::now();
    let as_of = views::parse_as_of(&filter.as_of);
    if !filter.as_of.trim().is_empty() && as_of.is_none() {
        return Err(PageError(
            WebError::BadRequest(format!(
                "as_of {:?} is not a time; use YYYY-MM-DDTHH:MM (UTC) or RFC 3339",
                filter.as_of
            )),
            Some(nav),
        ));
    }
    let page = match as_of {
        Some(t) => {
            let past: FleetStatus = state
                .bus
                .query(
                    model::OVERVIEW,
                    &OverviewQuery {
                        as_of: Some(AsOf::Time(t)),
                    },
                )
                .await
                .map_err(|e| PageError(e, Some(nav.clone())))?;
            build(nav, &past, None, &filter, now, views::time(t))
        }
        None => state.hub.read_fold(|f| {
            build(
                nav,
                &f.proj.fleet,
                Some(&f.proj),
                &filter,
                now,
                String::new(),
            )
        }),
    };
    Ok(render(&page))
}

fn build(
    nav: Nav,
    fleet: &FleetStatus,
    proj: Option<&fleetbus_projections::Projections>,
    filter: &OverviewFilter,
    now: chrono::DateTime<Utc>,
    as_of: String,
) -> OverviewPage {
    let rows = views::host_rows(views::filter_hosts(fleet, filter), proj, now);
    let mut tags: Vec<String> = fleet.hosts.values().flat_map(|h| h.tags.clone()).collect();
    tags.sort();
    tags.dedup();
    let mut roles: Vec<String> = fleet.hosts.values().flat_map(|h| h.roles.clone()).collect();
    roles.sort();
    roles.dedup();
    let blocked_hidden = if filter.shows_blocked() {
        0
    } else {
        fleet.hosts.values().filter(|h| h.blocked).count()
    };
    OverviewPage {
        nav,
        blocked_hidden,
        show_blocked: !filter.show_blocked.trim().is_empty(),
        hide_blocked: !filter.shows_blocked(),
        services_total: rows.iter().map(|r| r.services.len()).sum(),
        hosts_total: fleet.hosts.len(),
        rows,
        filter: filter.clone(),
        tags: opts(tags, &filter.tag),
        roles: opts(roles, &filter.role),
        states: opts(
            ["OK", "WARN", "DOWN", "DISABLED", "PENDING", "BLOCKED"]
                .map(String::from)
                .to_vec(),
            &filter.state,
        ),
        live: as_of.is_empty(),
        as_of,
    }
}

/// `GET /fragments/host/{host}`: one overview row (live updates replace it).
pub(crate) async fn host_fragment(
    State(state): State<Shared>,
    _p: Principal,
    Path(host): Path<String>,
) -> PageResult {
    let host = parse_host(&host)?;
    let row = state.hub.read_fold(|f| {
        f.proj
            .fleet
            .hosts
            .get(&host)
            .map(|h| views::host_rows(std::iter::once(h), Some(&f.proj), Utc::now()))
    });
    match row.and_then(|mut r| r.pop()) {
        Some(row) => Ok(render(&HostRowFragment { row })),
        None => Err(WebError::NotFound(format!("no host {host}")).into()),
    }
}

fn parse_host(s: &str) -> Result<HostId, WebError> {
    HostId::new(s).map_err(|e| WebError::NotFound(e.to_string()))
}

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    nav: Nav,
    row: HostRow,
    widgets: Vec<Widget>,
    panels: Vec<Panel>,
    address: String,
    agent: String,
    liveness: String,
    drift: Option<views::DriftSection>,
}

#[derive(Template)]
#[template(path = "panel.html")]
struct PanelFragment {
    nav: Nav,
    panel: Panel,
}

/// `GET /hosts/{host}`: resources and service panels.
pub(crate) async fn host_page(
    State(state): State<Shared>,
    p: Principal,
    Path(host): Path<String>,
) -> PageResult {
    let nav = Nav::new(&p, "overview");
    let host = parse_host(&host).map_err(|e| PageError(e, Some(nav.clone())))?;
    let now = Utc::now();
    let page = state.hub.read_fold(|f| {
        let h = f.proj.fleet.hosts.get(&host)?;
        let spec = f.proj.registry.hosts.get(&host);
        Some(HostPage {
            nav: nav.clone(),
            row: views::host_rows(std::iter::once(h), Some(&f.proj), now).pop()?,
            widgets: views::widgets(h),
            panels: views::panels(h, &f.proj, p.role, now),
            address: spec
                .map(|s| format!("{}@{}:{}", s.user, s.address, s.port))
                .unwrap_or_else(|| "not registered".into()),
            agent: h
                .agent
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "none".into()),
            liveness: h
                .liveness
                .map(|l| format!("{l:?}").to_ascii_lowercase())
                .unwrap_or_else(|| "n/a".into()),
            drift: None,
        })
    });
    match page {
        Some(mut page) => {
            let agent = state
                .hub
                .read_fold(|f| f.proj.fleet.hosts.get(&host).and_then(|h| h.agent.clone()));
            if let Some(agent) = agent {
                page.drift = Some(config_drift(&state, agent).await);
            }
            Ok(render(&page))
        }
        None => Err(PageError(
            WebError::NotFound(format!("no host {host}")),
            Some(nav),
        )),
    }
}

/// The agent's managed-config status from ingest (`fleet.q.config {agent}`). An agent with
/// neither a desired config nor a live one is unmanaged; a failed query is shown, not fatal.
async fn config_drift(state: &Shared, agent: fleetbus_schemas::AgentId) -> views::DriftSection {
    let answer: Result<AgentConfigView, WebError> = state
        .bus
        .query(
            model::CONFIG,
            &ConfigQuery {
                agent: Some(agent.clone()),
            },
        )
        .await;
    match answer {
        Ok(view) => views::DriftSection::from_view(view),
        Err(WebError::NotFound(_)) => {
            views::DriftSection::unmanaged(format!("fleetbus holds no config for agent {agent}"))
        }
        Err(e) => {
            tracing::warn!(%agent, error = %e, "config query failed");
            views::DriftSection::unavailable(format!("config status unavailable: {e}"))
        }
    }
}

/// `GET /fragments/panel/{host}/{service}`: one service panel (live updates).
pub(crate) async fn panel_fragment(
    State(state): State<Shared>,
    p: Principal,
    Path((host, service)): Path<(String, String)>,
) -> PageResult {
    let key = service_key(&host, &service)?;
    let panel = state.hub.read_fold(|f| {
        let h = f.proj.fleet.hosts.get(&key.host)?;
        views::panels(h, &f.proj, p.role, Utc::now())
            .into_iter()
            .find(|panel| panel.name == key.service.as_str())
    });
    match panel {
        Some(panel) => Ok(render(&PanelFragment {
            nav: Nav::new(&p, "overview"),
            panel,
        })),
        None => Err(WebError::NotFound(format!("unknown service {key}")).into()),
    }
}

/// Parses `host` and `service` path segments; a malformed name is an unknown service.
pub(crate) fn service_key(host: &str, service: &str) -> Result<ServiceKey, WebError> {
    let unknown = || WebError::NotFound(format!("unknown service {host}:{service}"));
    Ok(ServiceKey::new(
        HostId::new(host).map_err(|_| unknown())?,
        ServiceName::new(service).map_err(|_| unknown())?,
    ))
}

/// What a service action led to.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The job.
    pub job: JobId,
    /// Its one-line summary.
    pub summary: String,
}

/// Runs a service action for a principal: 404 unknown service, 403 action not allowed or role
/// too low, 409 duplicate (with the running job), otherwise the queued job.
pub(crate) async fn run_action(
    state: &Shared,
    p: &Principal,
    key: &ServiceKey,
    action: &str,
    lines: Option<u32>,
) -> Result<Started, WebError> {
    let spec = state
        .hub
        .read_fold(|f| f.proj.registry.services.get(key).cloned())
        .ok_or_else(|| WebError::NotFound(format!("unknown service {key}")))?;
    let action: ServiceAction = action
        .parse()
        .map_err(|_| WebError::Forbidden(format!("action {action:?} is not allowed on {key}")))?;
    if !spec.actions.contains(&action) {
        return Err(WebError::Forbidden(format!(
            "action {} is not allowed on {key}",
            action.as_str()
        )));
    }
    need(p, views::action_role(action))?;
    let command = Command::Job(JobCommand::RunAction {
        host: key.host.clone(),
        service: key.service.clone(),
        action,
        lines: lines.map(|n| n.min(500)),
    });
    match state.bus.command(&state.hub, p.actor(), command).await? {
        Outcome::Done(events) => events
            .iter()
            .find_map(|e| match &e.event {
                Event::Job(JobEvent::Scheduled { job, summary, .. }) => Some(Started {
                    job: *job,
                    summary: summary.clone(),
                }),
                _ => None,
            })
            .ok_or_else(|| WebError::Internal("the command caused no job".into())),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
        Outcome::Pending(id) => Err(WebError::Unavailable(format!(
            "no executor answered within {} ms; command {id} stays queued",
            state.config.command_timeout_ms
        ))),
    }
}

/// Maps a typed rejection to the error (and so the status) users see.
pub(crate) fn rejection(reason: RejectKind, message: String) -> WebError {
    match reason {
        RejectKind::NotFound => WebError::NotFound(message),
        RejectKind::Forbidden => WebError::Forbidden(message),
        RejectKind::Duplicate { job } => WebError::Conflict {
            message,
            job: Some(job),
        },
        RejectKind::Conflict => WebError::Conflict { message, job: None },
        _ => WebError::BadRequest(message),
    }
}

/// Form of a service action.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    lines: Option<u32>,
}

/// `POST /services/{host}/{service}/{action}`: the panel buttons; answers the feedback box.
pub(crate) async fn action(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((host, service, action)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    let result = match service_key(&host, &service) {
        Ok(key) => run_action(&state, &p, &key, &action, form.lines).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(started) => {
            if !super::wants_fragment(&headers) {
                return super::back(&format!("/jobs/{}", started.job));
            }
            render(&Feedback {
                kind: "ok",
                message: format!("{} queued as job {}", started.summary, started.job),
                job: Some(started.job.to_string()),
            })
        }
        Err(e) => Feedback::error(&e),
    }
}

/// Lines for the logs viewer.
#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    lines: Option<u32>,
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsFragment {
    key: String,
    lines: u32,
    text: String,
    job: String,
}

/// `GET /services/{host}/{service}/logs?lines=N` (capped at 500): runs the logs action and
/// shows its output.
pub(crate) async fn logs(
    State(state): State<Shared>,
    p: Principal,
    Path((host, service)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let lines = q.lines.unwrap_or(100).clamp(1, 500);
    match fetch_logs(&state, &p, &host, &service, lines).await {
        Ok((job, text)) => render(&LogsFragment {
            key: format!("{host}:{service}"),
            lines,
            text,
            job: job.to_string(),
        }),
        Err(e) => Feedback::error(&e),
    }
}

/// Runs `logs` and waits for the job to finish; returns its tail.
pub(crate) async fn fetch_logs(
    state: &Shared,
    p: &Principal,
    host: &str,
    service: &str,
    lines: u32,
) -> Result<(JobId, String), WebError> {
    let key = service_key(host, service)?;
    let mut events = state.hub.subscribe();
    let started = run_action(state, p, &key, "logs", Some(lines)).await?;
    if let Some(text) = finished_tail(state, started.job) {
        return Ok((started.job, text));
    }
    let deadline = tokio::time::Instant::now() + state.config.command_timeout();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) if e.job.as_deref() == Some(started.job.to_string().as_str()) => {
                if let Some(text) = finished_tail(state, started.job) {
                    return Ok((started.job, text));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                if let Some(text) = finished_tail(state, started.job) {
                    return Ok((started.job, text));
                }
            }
            Ok(Err(_)) | Err(_) => {
                return Err(WebError::Unavailable(format!(
                    "logs job {} did not finish in time",
                    started.job
                )))
            }
        }
    }
}

fn finished_tail(state: &Shared, job: JobId) -> Option<String> {
    state.hub.read_fold(|f| {
        let record = f.jobs().get(&job)?;
        if !record.state.is_final() {
            return None;
        }
        let tail = record
            .outcome
            .as_ref()
            .map(|o| o.tail.clone())
            .unwrap_or_default();
        // The tail is at most 32 KiB; keep the last 500 lines.
        let lines: Vec<&str> = tail.lines().collect();
        let start = lines.len().saturating_sub(500);
        Some(lines[start..].join("\n"))
    })
}

impl IntoResponse for Started {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"job": self.job.to_string(), "summary": self.summary})),
        )
            .into_response()
    }
}
