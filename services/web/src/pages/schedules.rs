//! Schedules: list, create/edit (cron with seconds, IANA time zone), pause/resume/delete.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fleetbus_schemas::commands::ScheduleCommand;
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::{Command, ScheduleId, TaskId, UserRole};
use serde::{Deserialize, Serialize};

use super::overview::rejection;
use super::tasks::{done, targets};
use super::{need, render};
use crate::auth::Principal;
use crate::bus::Outcome;
use crate::views::{self, Nav};
use crate::{Shared, WebError};

/// One schedule as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduleRow {
    /// Id.
    pub id: String,
    /// Cron.
    pub cron: String,
    /// Time zone.
    pub time_zone: String,
    /// What it does.
    pub action: String,
    /// Paused?
    pub paused: bool,
    /// Last fired slot.
    pub last_fired: String,
}

/// All schedules.
pub(crate) fn rows(state: &Shared) -> Vec<ScheduleRow> {
    state.hub.read_fold(|f| {
        f.schedules
            .values()
            .map(|s| ScheduleRow {
                id: s.spec.schedule.to_string(),
                cron: s.spec.cron.clone(),
                time_zone: s.spec.time_zone.clone(),
                action: serde_json::to_string(&s.spec.action).unwrap_or_default(),
                paused: s.paused,
                last_fired: s.last_fired.map(views::time).unwrap_or_default(),
            })
            .collect()
    })
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    nav: Nav,
    rows: Vec<ScheduleRow>,
    tasks: Vec<String>,
}

/// `GET /schedules`.
pub(crate) async fn list(State(state): State<Shared>, p: Principal) -> Response {
    let tasks = state
        .hub
        .read_fold(|f| f.tasks().keys().map(|t| t.to_string()).collect());
    render(&SchedulesPage {
        nav: Nav::new(&p, "schedules"),
        rows: rows(&state),
        tasks,
    })
}

/// The schedule form.
#[derive(Debug, Deserialize)]
pub(crate) struct ScheduleForm {
    id: String,
    cron: String,
    time_zone: String,
    /// `poll_status` or `run_task`.
    kind: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    skip_missed: Option<String>,
}

async fn send(state: &Shared, p: &Principal, command: ScheduleCommand) -> Result<(), WebError> {
    match state
        .bus
        .command(&state.hub, p.actor(), Command::Schedule(command))
        .await?
    {
        Outcome::Done(_) => Ok(()),
        Outcome::Pending(id) => Err(crate::bus::no_answer(id)),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
    }
}

/// `POST /schedules`: create, or update when the id exists (admin).
pub(crate) async fn save(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ScheduleForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let schedule =
            ScheduleId::new(form.id.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let targets = targets(&form.hosts, &form.tags, &form.roles)?;
        let action = match form.kind.as_str() {
            "poll_status" => ScheduleAction::PollStatus { targets },
            "run_task" => ScheduleAction::RunTask {
                task: TaskId::new(form.task.trim())
                    .map_err(|e| WebError::BadRequest(e.to_string()))?,
                params: BTreeMap::new(),
                targets,
            },
            other => {
                return Err(WebError::BadRequest(format!(
                    "unknown schedule kind {other:?}, expected poll_status or run_task"
                )))
            }
        };
        if form.cron.split_whitespace().count() < 6 {
            return Err(WebError::BadRequest(
                "cron needs 6 fields with seconds, e.g. '0 */5 * * * *'".into(),
            ));
        }
        let spec = ScheduleSpec {
            schedule: schedule.clone(),
            cron: form.cron.trim().to_owned(),
            time_zone: form.time_zone.trim().to_owned(),
            action,
            missed: if form.skip_missed.is_some() {
                MissedPolicy::Skip
            } else {
                MissedPolicy::CatchUpOnce
            },
        };
        let exists = state.hub.read_fold(|f| f.schedules.contains_key(&schedule));
        send(
            &state,
            &p,
            if exists {
                ScheduleCommand::Update(spec)
            } else {
                ScheduleCommand::Create(spec)
            },
        )
        .await
    }
    .await;
    done(&headers, result, "schedule saved", "/schedules")
}

/// `POST /schedules/{id}/{pause|resume|delete}` (admin).
pub(crate) async fn act(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let result = schedule_verb(&state, &p, &id, &verb).await;
    done(
        &headers,
        result,
        &format!("schedule {verb} sent"),
        "/schedules",
    )
}

/// Pauses, resumes or deletes a schedule for a principal.
pub(crate) async fn schedule_verb(
    state: &Shared,
    p: &Principal,
    id: &str,
    verb: &str,
) -> Result<(), WebError> {
    need(p, UserRole::Admin)?;
    let schedule =
        ScheduleId::new(id).map_err(|_| WebError::NotFound(format!("unknown schedule {id:?}")))?;
    if !state.hub.read_fold(|f| f.schedules.contains_key(&schedule)) {
        return Err(WebError::NotFound(format!("unknown schedule {schedule}")));
    }
    let command = match verb {
        "pause" => ScheduleCommand::Pause { schedule },
        "resume" => ScheduleCommand::Resume { schedule },
        "delete" => ScheduleCommand::Delete { schedule },
        other => return Err(WebError::NotFound(format!("no schedule action {other:?}"))),
    };
    send(state, p, command).await
}
