//! Jobs: the list, the live console page, full output download, cancel and re-run.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use fleetbus_runtime::bus::JobOutput;
use fleetbus_schemas::commands::job::JobCommand;
use fleetbus_schemas::commands::Targets;
use fleetbus_schemas::events::job::{JobRequest, OutputStream};
use fleetbus_schemas::{Command, JobId, UserRole};
use serde::Deserialize;

use super::overview::rejection;
use super::{need, render, Feedback, PageError, PageResult};
use crate::auth::Principal;
use crate::bus::Outcome;
use crate::views::{self, Nav};
use crate::{Shared, WebError};
use fleetbus_projections::{JobState, JobView};

/// Largest full output the download returns.
pub(crate) const MAX_DOWNLOAD_BYTES: usize = 64 * 1024 * 1024;

/// A job as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct JobRow {
    /// Id.
    pub job: String,
    /// Host.
    pub host: String,
    /// Run type.
    pub run_type: String,
    /// Summary.
    pub summary: String,
    /// Phase.
    pub state: String,
    /// `STEP x/y` or empty.
    pub step: String,
    /// Exit code or empty.
    pub exit_code: String,
    /// Duration or empty.
    pub duration: String,
    /// Who.
    pub actor: String,
    /// When scheduled.
    pub scheduled: String,
    /// Output bytes.
    pub output_bytes: u64,
}

impl From<&JobView> for JobRow {
    fn from(r: &JobView) -> Self {
        JobRow {
            job: r.job.to_string(),
            host: r.host.to_string(),
            run_type: format!("{:?}", r.run_type).to_ascii_lowercase(),
            summary: r.summary.clone(),
            state: r.state.as_str().to_owned(),
            step: r
                .progress
                .as_ref()
                .map(|(s, t, _)| format!("STEP {s}/{t}"))
                .unwrap_or_default(),
            exit_code: r
                .outcome
                .as_ref()
                .and_then(|o| o.exit_code)
                .map(|c| c.to_string())
                .unwrap_or_default(),
            duration: r
                .outcome
                .as_ref()
                .map(|o| views::duration_ms(o.duration_ms))
                .unwrap_or_default(),
            actor: r.actor.name.clone(),
            scheduled: views::time(r.scheduled_at),
            output_bytes: r.output_bytes,
        }
    }
}

/// Filters of the job list.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct JobFilter {
    /// Host.
    #[serde(default)]
    pub host: String,
    /// Phase (`running`, `failed`, …).
    #[serde(default)]
    pub state: String,
    /// Run type (`action`, `batch`, …).
    #[serde(default)]
    pub run_type: String,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Jobs matching a filter, newest first.
pub(crate) fn filtered(state: &Shared, f: &JobFilter) -> Vec<JobRow> {
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    state.hub.read_fold(|fold| {
        fold.jobs()
            .values()
            .rev()
            .map(JobRow::from)
            .filter(|r| {
                (f.host.is_empty() || r.host == f.host)
                    && (f.state.is_empty() || r.state == f.state)
                    && (f.run_type.is_empty() || r.run_type == f.run_type)
            })
            .take(limit)
            .collect()
    })
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    nav: Nav,
    rows: Vec<JobRow>,
    filter: JobFilter,
}

/// `GET /jobs`.
pub(crate) async fn list(
    State(state): State<Shared>,
    p: Principal,
    Query(filter): Query<JobFilter>,
) -> Response {
    let rows = filtered(&state, &filter);
    render(&JobsPage {
        nav: Nav::new(&p, "jobs"),
        rows,
        filter,
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    nav: Nav,
    row: JobRow,
    finished: bool,
    tail_html: String,
    reason: String,
    step_message: String,
    request: String,
    can_cancel: bool,
    can_rerun: bool,
    live: bool,
}

/// Parses a job id; a malformed one is an unknown job.
pub(crate) fn parse_job(s: &str) -> Result<JobId, WebError> {
    s.parse::<JobId>()
        .map_err(|_| WebError::NotFound(format!("unknown job {s:?}")))
}

/// `GET /jobs/{job}`: the console.
pub(crate) async fn page(
    State(state): State<Shared>,
    p: Principal,
    Path(job): Path<String>,
) -> PageResult {
    let nav = Nav::new(&p, "jobs");
    let job = parse_job(&job).map_err(|e| PageError(e, Some(nav.clone())))?;
    let page = state.hub.read_fold(|f| {
        let r = f.jobs().get(&job)?;
        let finished = r.state.is_final();
        Some(JobPage {
            nav: nav.clone(),
            row: JobRow::from(r),
            finished,
            tail_html: r
                .outcome
                .as_ref()
                .map(|o| views::ansi_to_html(&o.tail))
                .unwrap_or_default(),
            reason: r.reason.clone().unwrap_or_default(),
            step_message: r
                .progress
                .as_ref()
                .map(|(_, _, m)| m.clone())
                .unwrap_or_default(),
            request: r.request.as_ref().map(describe_request).unwrap_or_default(),
            can_cancel: !finished && p.can(UserRole::Operator),
            can_rerun: finished && r.request.as_ref().is_some_and(|q| p.can(rerun_role(q))),
            live: !finished,
        })
    });
    match page {
        Some(page) => Ok(render(&page)),
        None => Err(PageError(
            WebError::NotFound(format!("unknown job {job}")),
            Some(nav),
        )),
    }
}

fn describe_request(r: &JobRequest) -> String {
    match r {
        JobRequest::Action {
            service, action, ..
        } => format!("{} {service}", action.as_str()),
        JobRequest::Task { task, params } => format!(
            "task {task} {}",
            serde_json::to_string(params).unwrap_or_default()
        ),
        JobRequest::Batch { script } => script.clone(),
        JobRequest::Verb { verb, args } => format!("{verb} {args}"),
        JobRequest::Adhoc { command } => command.clone(),
        JobRequest::Resources => "read resources".into(),
    }
}

fn rerun_role(r: &JobRequest) -> UserRole {
    match r {
        JobRequest::Adhoc { .. } | JobRequest::Batch { .. } => UserRole::Admin,
        JobRequest::Action { action, .. } => views::action_role(*action),
        _ => UserRole::Operator,
    }
}

/// Reads a job's whole output from the OUTPUT stream, in order, as (stream, text) pieces.
pub(crate) async fn read_output(
    state: &Shared,
    job: JobId,
) -> Result<Vec<(OutputStream, String)>, WebError> {
    let mut output = JobOutput::open(state.bus.jetstream(), job)
        .await
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    let mut pieces = Vec::new();
    let mut total = 0usize;
    while output.pending() > 0 {
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), output.next()).await
        else {
            break;
        };
        total += chunk.data.len();
        if total > MAX_DOWNLOAD_BYTES {
            break;
        }
        pieces.push((chunk.stream, chunk.data));
    }
    Ok(pieces)
}

/// `GET /jobs/{job}/output.txt`: the full output (stdout and stderr interleaved as produced).
pub(crate) async fn download(
    State(state): State<Shared>,
    _p: Principal,
    Path(job): Path<String>,
) -> Result<Response, PageError> {
    let job = parse_job(&job)?;
    let known = state.hub.read_fold(|f| f.jobs().contains_key(&job));
    if !known {
        return Err(WebError::NotFound(format!("unknown job {job}")).into());
    }
    let pieces = read_output(&state, job).await?;
    let text: String = pieces.into_iter().map(|(_, d)| d).collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{job}.txt\""),
            ),
        ],
        text,
    )
        .into_response())
}

/// Cancels a job for a principal.
pub(crate) async fn cancel_job(
    state: &Shared,
    p: &Principal,
    job: JobId,
) -> Result<String, WebError> {
    need(p, UserRole::Operator)?;
    let known = state.hub.read_fold(|f| f.jobs().get(&job).map(|r| r.state));
    match known {
        None => return Err(WebError::NotFound(format!("unknown job {job}"))),
        Some(phase) if phase.is_final() => {
            return Err(WebError::Conflict {
                message: format!("job {job} already {}", phase.as_str()),
                job: Some(job),
            })
        }
        Some(_) => {}
    }
    match state
        .bus
        .command(
            &state.hub,
            p.actor(),
            Command::Job(JobCommand::Cancel { job }),
        )
        .await?
    {
        Outcome::Done(_) => Ok(format!("job {job} cancelled")),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
        Outcome::Pending(_) => Ok(format!("cancel of job {job} requested")),
    }
}

/// `POST /jobs/{job}/cancel`.
pub(crate) async fn cancel(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Response {
    let result = match parse_job(&job) {
        Ok(id) => cancel_job(&state, &p, id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(message) if super::wants_fragment(&headers) => render(&Feedback {
            kind: "ok",
            message,
            job: None,
        }),
        Ok(_) => super::back(&format!("/jobs/{job}")),
        Err(e) => Feedback::error(&e),
    }
}

/// Runs a job command and returns the jobs it started.
pub(crate) async fn start_jobs(
    state: &Shared,
    p: &Principal,
    command: JobCommand,
) -> Result<Vec<JobId>, WebError> {
    match state
        .bus
        .command(&state.hub, p.actor(), Command::Job(command))
        .await?
    {
        Outcome::Done(events) => {
            let jobs: Vec<JobId> = events
                .iter()
                .filter_map(|e| match &e.event {
                    fleetbus_schemas::Event::Job(
                        fleetbus_schemas::events::JobEvent::Scheduled { job, .. },
                    ) => Some(*job),
                    _ => None,
                })
                .collect();
            if jobs.is_empty() {
                Err(WebError::Internal("the command caused no job".into()))
            } else {
                Ok(jobs)
            }
        }
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
        Outcome::Pending(id) => Err(WebError::Unavailable(format!(
            "no executor answered in time; command {id} stays queued"
        ))),
    }
}

/// Where to go after starting jobs: the console of the only job, or the job list.
pub(crate) fn after_start(headers: &HeaderMap, jobs: &[JobId]) -> Response {
    let to = match jobs {
        [one] => format!("/jobs/{one}"),
        _ => "/jobs".to_owned(),
    };
    if super::wants_fragment(headers) {
        render(&Feedback {
            kind: "ok",
            message: format!("{} job(s) started", jobs.len()),
            job: jobs.first().map(|j| j.to_string()),
        })
    } else {
        super::back(&to)
    }
}

/// `POST /jobs/{job}/rerun`: the same request again.
pub(crate) async fn rerun(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Response {
    let result = async {
        let id = parse_job(&job)?;
        let record = state
            .hub
            .read_fold(|f| f.jobs().get(&id).cloned())
            .ok_or_else(|| WebError::NotFound(format!("unknown job {job}")))?;
        let Some(request) = record.request else {
            return Err(WebError::BadRequest(format!(
                "job {job} was folded before its request was kept; it cannot be re-run"
            )));
        };
        need(&p, rerun_role(&request))?;
        let targets = Targets {
            hosts: vec![record.host.clone()],
            ..Targets::default()
        };
        let command = match request {
            JobRequest::Action {
                service,
                action,
                lines,
            } => JobCommand::RunAction {
                host: record.host,
                service,
                action,
                lines,
            },
            JobRequest::Task { task, params } => JobCommand::RunTask {
                task,
                params,
                targets,
            },
            JobRequest::Batch { script } => JobCommand::RunBatch { script, targets },
            JobRequest::Verb { verb, args } => JobCommand::RunVerb {
                verb,
                args,
                targets,
            },
            JobRequest::Adhoc { command } => JobCommand::RunAdhoc {
                host: record.host,
                command,
            },
            JobRequest::Resources => {
                return Err(WebError::BadRequest(
                    "resource reads are not re-run by hand".into(),
                ))
            }
        };
        start_jobs(&state, &p, command).await
    }
    .await;
    match result {
        Ok(jobs) => after_start(&headers, &jobs),
        Err(e) => Feedback::error(&e),
    }
}

/// Is the job known and finished? (for SSE consumers)
pub(crate) fn phase(state: &Shared, job: JobId) -> Option<JobState> {
    state.hub.read_fold(|f| f.jobs().get(&job).map(|r| r.state))
}
