//! The JSON API (documented in [`crate::openapi`]). Authenticated by session cookie (with the
//! `X-CSRF-Token` header on writes) or `Authorization: Bearer <token>`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use fleetbus_schemas::commands::job::JobCommand;
use fleetbus_schemas::commands::Targets;
use fleetbus_schemas::{ServiceKey, TaskId, UserRole};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{role_name, Principal};
use crate::pages::jobs::{self, JobFilter, JobRow};
use crate::pages::overview::{fetch_logs, run_action};
use crate::pages::tasks::param_value;
use crate::pages::{alerts, events, need, schedules};
use crate::views;
use crate::{Shared, WebError};

/// API routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/whoami", get(whoami))
        .route("/api/hosts", get(hosts))
        .route("/api/hosts/{host}", get(host))
        .route("/api/services/{slug}/status", get(service_status))
        .route("/api/services/{slug}/logs", get(service_logs))
        .route("/api/services/{slug}/{action}", post(service_action))
        .route("/api/jobs", get(job_list))
        .route("/api/jobs/{job}", get(job))
        .route("/api/jobs/{job}/output", get(job_output))
        .route("/api/jobs/{job}/cancel", post(job_cancel))
        .route("/api/tasks", get(task_list))
        .route("/api/tasks/{task}/run", post(task_run))
        .route("/api/events", get(event_list))
        .route("/api/alerts", get(alert_list))
        .route("/api/alerts/{alert}/{verb}", post(alert_act))
        .route("/api/schedules", get(schedule_list))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document().to_string(),
    )
        .into_response()
}

async fn whoami(p: Principal) -> Json<Value> {
    Json(json!({"user": p.user, "role": role_name(p.role)}))
}

fn host_json(
    h: &fleetbus_projections::HostStatus,
    proj: &fleetbus_projections::Projections,
) -> Value {
    json!({
        "host": h.host.to_string(),
        "state": h.state().as_str(),
        "tags": h.tags,
        "roles": h.roles,
        "last_seen": h.last_seen.map(|t| t.to_rfc3339()),
        "open_alerts": proj.alerts.open_count(&h.host),
        "services": h.services.values().map(|s| json!({
            "name": s.name.to_string(),
            "state": s.state.as_str(),
            "dot": views::dot_class(s.state.dot()),
        })).collect::<Vec<_>>(),
    })
}

async fn hosts(State(state): State<Shared>, _p: Principal) -> Json<Value> {
    Json(state.hub.read_fold(|f| {
        Value::Array(
            f.proj
                .fleet
                .hosts
                .values()
                .map(|h| host_json(h, &f.proj))
                .collect(),
        )
    }))
}

async fn host(
    State(state): State<Shared>,
    _p: Principal,
    Path(host): Path<String>,
) -> Result<Json<Value>, WebError> {
    let id = fleetbus_schemas::HostId::new(host.clone())
        .map_err(|_| WebError::NotFound(format!("unknown host {host:?}")))?;
    state
        .hub
        .read_fold(|f| {
            f.proj.fleet.hosts.get(&id).map(|h| {
                let mut v = host_json(h, &f.proj);
                v["resources"] = serde_json::to_value(&h.resources).unwrap_or(Value::Null);
                v
            })
        })
        .map(Json)
        .ok_or_else(|| WebError::NotFound(format!("unknown host {id}")))
}

fn slug(s: &str) -> Result<ServiceKey, WebError> {
    s.parse::<ServiceKey>()
        .map_err(|_| WebError::NotFound(format!("unknown service {s:?} (expected HOST:SERVICE)")))
}

async fn service_status(
    State(state): State<Shared>,
    _p: Principal,
    Path(s): Path<String>,
) -> Result<Json<Value>, WebError> {
    let key = slug(&s)?;
    state
        .hub
        .read_fold(|f| {
            let spec = f.proj.registry.services.get(&key)?;
            let view = f
                .proj
                .fleet
                .hosts
                .get(&key.host)
                .and_then(|h| h.services.get(&key.service));
            let state = view
                .map(|v| v.state)
                .unwrap_or(fleetbus_schemas::events::agent::ServiceState::Unknown);
            Some(json!({
                "service": key.to_string(),
                "host": key.host.to_string(),
                "name": key.service.to_string(),
                "state": state.as_str(),
                "dot": views::dot_class(state.dot()),
                "sub_state": view.and_then(|v| v.sub_state.clone()),
                "detail": view.and_then(|v| v.detail.clone()),
                "main_pid": view.and_then(|v| v.main_pid),
                "since": view.and_then(|v| v.since).map(|t| t.to_rfc3339()),
                "observed_at": view.and_then(|v| v.observed_at).map(|t| t.to_rfc3339()),
                "actions": spec.actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            }))
        })
        .map(Json)
        .ok_or_else(|| WebError::NotFound(format!("unknown service {key}")))
}

/// `?lines=N`.
#[derive(Debug, Deserialize)]
struct Lines {
    #[serde(default)]
    lines: Option<u32>,
}

async fn service_action(
    State(state): State<Shared>,
    p: Principal,
    Path((s, action)): Path<(String, String)>,
    Query(q): Query<Lines>,
) -> Result<Response, WebError> {
    let key = slug(&s)?;
    Ok(run_action(&state, &p, &key, &action, q.lines)
        .await?
        .into_response())
}

async fn service_logs(
    State(state): State<Shared>,
    p: Principal,
    Path(s): Path<String>,
    Query(q): Query<Lines>,
) -> Result<Json<Value>, WebError> {
    let key = slug(&s)?;
    let lines = q.lines.unwrap_or(100).clamp(1, 500);
    let (job, text) =
        fetch_logs(&state, &p, key.host.as_str(), key.service.as_str(), lines).await?;
    Ok(Json(json!({
        "service": key.to_string(),
        "job": job.to_string(),
        "lines": text.lines().collect::<Vec<_>>(),
    })))
}

async fn job_list(
    State(state): State<Shared>,
    _p: Principal,
    Query(f): Query<JobFilter>,
) -> Json<Vec<JobRow>> {
    Json(jobs::filtered(&state, &f))
}

async fn job(
    State(state): State<Shared>,
    _p: Principal,
    Path(job): Path<String>,
) -> Result<Json<Value>, WebError> {
    let id = jobs::parse_job(&job)?;
    state
        .hub
        .read_fold(|f| {
            f.jobs().get(&id).map(|r| {
                let mut v = serde_json::to_value(JobRow::from(r)).unwrap_or_default();
                v["tail"] = r
                    .outcome
                    .as_ref()
                    .map(|o| Value::String(o.tail.clone()))
                    .unwrap_or(Value::Null);
                v["reason"] = r.reason.clone().map(Value::String).unwrap_or(Value::Null);
                v
            })
        })
        .map(Json)
        .ok_or_else(|| WebError::NotFound(format!("unknown job {id}")))
}

async fn job_output(
    State(state): State<Shared>,
    _p: Principal,
    Path(job): Path<String>,
) -> Result<Response, WebError> {
    let id = jobs::parse_job(&job)?;
    if jobs::phase(&state, id).is_none() {
        return Err(WebError::NotFound(format!("unknown job {id}")));
    }
    let text: String = jobs::read_output(&state, id)
        .await?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn job_cancel(
    State(state): State<Shared>,
    p: Principal,
    Path(job): Path<String>,
) -> Result<Response, WebError> {
    let id = jobs::parse_job(&job)?;
    let message = jobs::cancel_job(&state, &p, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job": id.to_string(), "message": message})),
    )
        .into_response())
}

async fn task_list(State(state): State<Shared>, _p: Principal) -> Json<Value> {
    Json(state.hub.read_fold(|f| {
        serde_json::to_value(f.tasks().values().collect::<Vec<_>>()).unwrap_or_default()
    }))
}

/// Body of `POST /api/tasks/{task}/run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunTaskBody {
    #[serde(default)]
    params: BTreeMap<String, Value>,
    targets: Targets,
}

async fn task_run(
    State(state): State<Shared>,
    p: Principal,
    Path(task): Path<String>,
    Json(body): Json<RunTaskBody>,
) -> Result<Response, WebError> {
    need(&p, UserRole::Operator)?;
    let id = TaskId::new(task.clone())
        .map_err(|_| WebError::NotFound(format!("unknown task {task:?}")))?;
    let spec = state
        .hub
        .read_fold(|f| f.tasks().get(&id).cloned())
        .ok_or_else(|| WebError::NotFound(format!("unknown task {id}")))?;
    if body.targets.is_empty() {
        return Err(WebError::BadRequest(
            "targets: pick at least one host, tag or role".into(),
        ));
    }
    let mut params = BTreeMap::new();
    for ps in &spec.params {
        let v = match body.params.get(&ps.name) {
            Some(Value::String(s)) => param_value(ps, Some(s))?,
            Some(Value::Bool(b)) => Value::Bool(*b),
            Some(other) => param_value(ps, Some(&other.to_string()))?,
            None => param_value(ps, None)?,
        };
        params.insert(ps.name.clone(), v);
    }
    let jobs = jobs::start_jobs(
        &state,
        &p,
        JobCommand::RunTask {
            task: id,
            params,
            targets: body.targets,
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"jobs": jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>()})),
    )
        .into_response())
}

async fn event_list(
    State(state): State<Shared>,
    _p: Principal,
    Query(f): Query<events::EventFilter>,
) -> Result<Json<Value>, WebError> {
    let (rows, next) = events::page(&state, &f).await?;
    Ok(Json(
        json!({"events": events::rows_json(&rows), "next_before": next}),
    ))
}

async fn alert_list(
    State(state): State<Shared>,
    _p: Principal,
    Query(f): Query<alerts::AlertFilter>,
) -> Json<Vec<alerts::AlertRow>> {
    Json(alerts::rows(&state, &f))
}

/// Body of alert actions.
#[derive(Debug, Default, Deserialize)]
struct NoteBody {
    #[serde(default)]
    note: String,
}

async fn alert_act(
    State(state): State<Shared>,
    p: Principal,
    Path((alert, verb)): Path<(String, String)>,
    body: Option<Json<NoteBody>>,
) -> Result<Response, WebError> {
    let note = body.map(|b| b.0.note).unwrap_or_default();
    alerts::alert_command(&state, &p, &alert, &verb, note).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"alert": alert, "action": verb, "at": Utc::now().to_rfc3339()})),
    )
        .into_response())
}

async fn schedule_list(
    State(state): State<Shared>,
    _p: Principal,
) -> Json<Vec<schedules::ScheduleRow>> {
    Json(schedules::rows(&state))
}
