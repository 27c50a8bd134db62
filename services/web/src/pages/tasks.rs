//! Saved tasks (create/edit/delete, run with a form generated from their typed parameters),
//! batch scripts and ad-hoc commands.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fleetbus_schemas::commands::job::{JobCommand, ParamSpec, ParamType, TaskSpec};
use fleetbus_schemas::commands::Targets;
use fleetbus_schemas::{HostId, TaskId, UserRole};
use serde::Deserialize;

use super::jobs::{after_start, start_jobs};
use super::overview::rejection;
use super::{need, render, Feedback, PageError, PageResult};
use crate::auth::Principal;
use crate::bus::Outcome;
use crate::views::Nav;
use crate::{Shared, WebError};

/// One input of a task's run form.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Parameter name.
    pub name: String,
    /// `text`, `number`, `select` or `checkbox`.
    pub kind: &'static str,
    /// Regex for text.
    pub pattern: String,
    /// Range for numbers.
    pub min: String,
    /// Range for numbers.
    pub max: String,
    /// Choices for selects.
    pub options: Vec<String>,
    /// Default value as text.
    pub default: String,
}

fn fields(params: &[ParamSpec]) -> Vec<Field> {
    params
        .iter()
        .map(|p| {
            let default = match &p.default {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let mut f = Field {
                name: p.name.clone(),
                kind: "text",
                pattern: String::new(),
                min: String::new(),
                max: String::new(),
                options: vec![],
                default,
            };
            match &p.ty {
                ParamType::String { pattern } => f.pattern = pattern.clone(),
                ParamType::Integer { min, max } => {
                    f.kind = "number";
                    f.min = min.to_string();
                    f.max = max.to_string();
                }
                ParamType::Enum { values } => {
                    f.kind = "select";
                    f.options = values.clone();
                }
                ParamType::Boolean => f.kind = "checkbox",
            }
            f
        })
        .collect()
}

/// A task as listed.
#[derive(Debug, Clone)]
pub(crate) struct TaskRow {
    /// Id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Template.
    pub template: String,
    /// Runs with sudo.
    pub sudo: bool,
    /// Run form.
    pub fields: Vec<Field>,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    nav: Nav,
    tasks: Vec<TaskRow>,
    hosts: Vec<String>,
    adhoc_hosts: Vec<String>,
}

/// `GET /tasks`: tasks with their run forms, the batch form and (admins) the ad-hoc form.
pub(crate) async fn list(State(state): State<Shared>, p: Principal) -> Response {
    let (tasks, hosts, adhoc_hosts) = state.hub.read_fold(|f| {
        let tasks = f
            .tasks()
            .values()
            .map(|t| TaskRow {
                id: t.task.to_string(),
                description: t.description.clone(),
                template: t.template.clone(),
                sudo: t.sudo,
                fields: fields(&t.params),
            })
            .collect();
        let hosts = f
            .proj
            .registry
            .hosts
            .keys()
            .map(|h| h.to_string())
            .collect();
        let adhoc = f
            .proj
            .registry
            .hosts
            .values()
            .filter(|h| h.allow_adhoc)
            .map(|h| h.host.to_string())
            .collect();
        (tasks, hosts, adhoc)
    });
    render(&TasksPage {
        nav: Nav::new(&p, "tasks"),
        tasks,
        hosts,
        adhoc_hosts,
    })
}

#[derive(Template)]
#[template(path = "task_edit.html")]
struct TaskEditPage {
    nav: Nav,
    id: String,
    description: String,
    template: String,
    params: String,
    sudo: bool,
    idempotent: bool,
    is_new: bool,
}

/// `GET /tasks/{task}` (`new` for a blank form): the editor.
pub(crate) async fn edit(
    State(state): State<Shared>,
    p: Principal,
    Path(task): Path<String>,
) -> PageResult {
    let nav = Nav::new(&p, "tasks");
    need(&p, UserRole::Admin).map_err(|e| PageError(e, Some(nav.clone())))?;
    if task == "new" {
        return Ok(render(&TaskEditPage {
            nav,
            id: String::new(),
            description: String::new(),
            template: String::new(),
            params: "[]".into(),
            sudo: false,
            idempotent: false,
            is_new: true,
        }));
    }
    let spec = TaskId::new(task.clone())
        .ok()
        .and_then(|id| state.hub.read_fold(|f| f.tasks().get(&id).cloned()))
        .ok_or_else(|| {
            PageError(
                WebError::NotFound(format!("unknown task {task:?}")),
                Some(nav.clone()),
            )
        })?;
    Ok(render(&TaskEditPage {
        nav,
        id: spec.task.to_string(),
        description: spec.description,
        template: spec.template,
        params: serde_json::to_string_pretty(&spec.params).unwrap_or_else(|_| "[]".into()),
        sudo: spec.sudo,
        idempotent: spec.idempotent,
        is_new: false,
    }))
}

/// The task editor's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskForm {
    id: String,
    #[serde(default)]
    description: String,
    template: String,
    #[serde(default)]
    params: String,
    #[serde(default)]
    sudo: Option<String>,
    #[serde(default)]
    idempotent: Option<String>,
}

/// Sends a job-area command that causes no job (task definitions) and waits for its event.
async fn define(state: &Shared, p: &Principal, command: JobCommand) -> Result<(), WebError> {
    match state
        .bus
        .command(
            &state.hub,
            p.actor(),
            fleetbus_schemas::Command::Job(command),
        )
        .await?
    {
        Outcome::Done(_) => Ok(()),
        Outcome::Pending(id) => Err(crate::bus::no_answer(id)),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
    }
}

/// `POST /tasks`: create or replace a task (admin).
pub(crate) async fn save(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<TaskForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let task = TaskId::new(form.id.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let params: Vec<ParamSpec> = if form.params.trim().is_empty() {
            vec![]
        } else {
            serde_json::from_str(&form.params).map_err(|e| {
                WebError::BadRequest(format!("params: not a JSON list of parameters: {e}"))
            })?
        };
        if form.template.trim().is_empty() {
            return Err(WebError::BadRequest("template must not be empty".into()));
        }
        define(
            &state,
            &p,
            JobCommand::SaveTask(TaskSpec {
                task,
                description: form.description.clone(),
                template: form.template.clone(),
                params,
                sudo: form.sudo.is_some(),
                idempotent: form.idempotent.is_some(),
                nice: None,
                ionice_class: None,
            }),
        )
        .await
    }
    .await;
    done(&headers, result, "task saved", "/tasks")
}

/// Answers a form post: a feedback fragment for scripts, a redirect otherwise.
pub(crate) fn done(
    headers: &HeaderMap,
    result: Result<(), WebError>,
    ok: &str,
    back: &str,
) -> Response {
    match result {
        Ok(()) if super::wants_fragment(headers) => render(&Feedback {
            kind: "ok",
            message: ok.to_owned(),
            job: None,
        }),
        Ok(()) => super::back(back),
        Err(e) => Feedback::error(&e),
    }
}

/// `POST /tasks/{task}/delete` (admin).
pub(crate) async fn delete(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path(task): Path<String>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let task = TaskId::new(task).map_err(|e| WebError::NotFound(e.to_string()))?;
        define(&state, &p, JobCommand::DeleteTask { task }).await
    }
    .await;
    done(&headers, result, "task deleted", "/tasks")
}

/// Parses comma/space separated host ids, tags and roles into targets.
pub(crate) fn targets(hosts: &str, tags: &str, roles: &str) -> Result<Targets, WebError> {
    let split = |s: &str| -> Vec<String> {
        s.split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let hosts = split(hosts)
        .into_iter()
        .map(|h| HostId::new(h).map_err(|e| WebError::BadRequest(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Targets {
        hosts,
        tags: split(tags),
        roles: split(roles),
    };
    if t.is_empty() {
        return Err(WebError::BadRequest(
            "pick at least one host, tag or role".into(),
        ));
    }
    Ok(t)
}

/// Converts form text to a typed parameter value.
pub(crate) fn param_value(
    spec: &ParamSpec,
    raw: Option<&str>,
) -> Result<serde_json::Value, WebError> {
    let bad = |why: String| WebError::BadRequest(format!("parameter {}: {why}", spec.name));
    match (&spec.ty, raw) {
        (ParamType::Boolean, v) => Ok(serde_json::Value::Bool(matches!(
            v,
            Some("on" | "true" | "1")
        ))),
        (_, None) | (_, Some("")) => spec
            .default
            .clone()
            .ok_or_else(|| bad("is required".into())),
        (ParamType::Integer { min, max }, Some(v)) => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("{v:?} is not an integer")))?;
            if n < *min || n > *max {
                return Err(bad(format!("{n} is outside {min}..={max}")));
            }
            Ok(n.into())
        }
        (ParamType::Enum { values }, Some(v)) => {
            if values.iter().any(|x| x == v) {
                Ok(v.into())
            } else {
                Err(bad(format!("{v:?} is not one of {}", values.join(", "))))
            }
        }
        (ParamType::String { .. }, Some(v)) => Ok(v.into()),
    }
}

/// `POST /tasks/{task}/run` (operator): fields `p.<name>`, `hosts`, `tags`, `roles`.
pub(crate) async fn run(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path(task): Path<String>,
    axum::Form(form): axum::Form<BTreeMap<String, String>>,
) -> Response {
    let result = async {
        need(&p, UserRole::Operator)?;
        let id = TaskId::new(task.clone()).map_err(|e| WebError::NotFound(e.to_string()))?;
        let spec = state
            .hub
            .read_fold(|f| f.tasks().get(&id).cloned())
            .ok_or_else(|| WebError::NotFound(format!("unknown task {task}")))?;
        let mut params = BTreeMap::new();
        for ps in &spec.params {
            let raw = form.get(&format!("p.{}", ps.name)).map(String::as_str);
            params.insert(ps.name.clone(), param_value(ps, raw)?);
        }
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let targets = targets(get("hosts"), get("tags"), get("roles"))?;
        start_jobs(
            &state,
            &p,
            JobCommand::RunTask {
                task: id,
                params,
                targets,
            },
        )
        .await
    }
    .await;
    match result {
        Ok(jobs) => after_start(&headers, &jobs),
        Err(e) => Feedback::error(&e),
    }
}

/// The batch form.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchForm {
    script: String,
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    roles: String,
}

/// `POST /batch` (admin, as the executor requires: a batch script is ad-hoc commands).
pub(crate) async fn run_batch(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<BatchForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        if form.script.trim().is_empty() {
            return Err(WebError::BadRequest("the script is empty".into()));
        }
        let targets = targets(&form.hosts, &form.tags, &form.roles)?;
        start_jobs(
            &state,
            &p,
            JobCommand::RunBatch {
                script: form.script.replace("\r\n", "\n"),
                targets,
            },
        )
        .await
    }
    .await;
    match result {
        Ok(jobs) => after_start(&headers, &jobs),
        Err(e) => Feedback::error(&e),
    }
}

/// The ad-hoc form.
#[derive(Debug, Deserialize)]
pub(crate) struct AdhocForm {
    host: String,
    command: String,
}

/// `POST /adhoc` (admin; only hosts that allow it — the executor checks again).
pub(crate) async fn run_adhoc(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<AdhocForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let host =
            HostId::new(form.host.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let allowed = state
            .hub
            .read_fold(|f| f.proj.registry.hosts.get(&host).map(|h| h.allow_adhoc));
        match allowed {
            None => return Err(WebError::NotFound(format!("unknown host {host}"))),
            Some(false) => {
                return Err(WebError::Forbidden(format!(
                    "host {host} does not allow ad-hoc commands"
                )))
            }
            Some(true) => {}
        }
        if form.command.trim().is_empty() {
            return Err(WebError::BadRequest("the command is empty".into()));
        }
        start_jobs(
            &state,
            &p,
            JobCommand::RunAdhoc {
                host,
                command: form.command.clone(),
            },
        )
        .await
    }
    .await;
    match result {
        Ok(jobs) => after_start(&headers, &jobs),
        Err(e) => Feedback::error(&e),
    }
}
