//! Server-rendered pages (askama). Every handler takes the [`Principal`] the authentication
//! middleware resolved; without one, pages redirect to `/login`.

pub(crate) mod admin;
pub(crate) mod alerts;
pub(crate) mod events;
pub(crate) mod jobs;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod schedules;
pub(crate) mod tasks;
pub(crate) mod users;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use fleetbus_schemas::UserRole;

use crate::auth::{role_name, Principal};
use crate::views::Nav;
use crate::{Shared, WebError};

/// All page routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/healthz", get(login::healthz))
        .route("/assets/{file}", get(asset))
        .route("/", get(overview::overview))
        .route("/fragments/host/{host}", get(overview::host_fragment))
        .route("/hosts/{host}", get(overview::host_page))
        .route(
            "/fragments/panel/{host}/{service}",
            get(overview::panel_fragment),
        )
        .route("/services/{host}/{service}/logs", get(overview::logs))
        .route(
            "/services/{host}/{service}/{action}",
            post(overview::action),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job}", get(jobs::page))
        .route("/jobs/{job}/output.txt", get(jobs::download))
        .route("/jobs/{job}/cancel", post(jobs::cancel))
        .route("/jobs/{job}/rerun", post(jobs::rerun))
        .route("/tasks", get(tasks::list).post(tasks::save))
        .route("/tasks/{task}", get(tasks::edit))
        .route("/tasks/{task}/delete", post(tasks::delete))
        .route("/tasks/{task}/run", post(tasks::run))
        .route("/batch", post(tasks::run_batch))
        .route("/adhoc", post(tasks::run_adhoc))
        .route("/events", get(events::timeline))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{alert}/{verb}", post(alerts::act))
        .route("/notifications", get(alerts::notifications))
        .route("/schedules", get(schedules::list).post(schedules::save))
        .route("/schedules/{schedule}/{verb}", post(schedules::act))
        .route("/agents", get(admin::agents))
        .route("/agents/{agent}/{verb}", post(admin::agent_act))
        .route("/agents/issue", post(admin::issue_key))
        .route("/hosts", get(admin::hosts).post(admin::save_host))
        .route("/hosts/{host}/{verb}", post(admin::host_act))
        .route("/users", get(users::list).post(users::add))
        .route("/users/{user}/{verb}", post(users::act))
        .route("/tokens", post(users::create_token))
        .route("/tokens/{id}/revoke", post(users::revoke_token))
        .route("/manual", get(manual))
}

/// Pages need a logged-in principal; without one they redirect to the login page.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(p.clone()),
            None if parts.uri.path().starts_with("/api/") => {
                Err(WebError::Unauthorized.into_response())
            }
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// `Forbidden` unless the principal has `role`.
pub(crate) fn need(p: &Principal, role: UserRole) -> Result<(), WebError> {
    if p.can(role) {
        Ok(())
    } else {
        Err(WebError::Forbidden(format!(
            "this needs the {} role; you are {}",
            role_name(role),
            role_name(p.role)
        )))
    }
}

/// Renders a template as a page.
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    status: u16,
    message: String,
}

/// An error shown as a page (status kept).
pub(crate) struct PageError(pub WebError, pub Option<Nav>);

impl From<WebError> for PageError {
    fn from(e: WebError) -> Self {
        PageError(e, None)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let page = ErrorPage {
            nav: self.1,
            status: status.as_u16(),
            message: self.0.to_string(),
        };
        (status, render(&page)).into_response()
    }
}

/// A page handler's result.
pub(crate) type PageResult = Result<Response, PageError>;

/// A small HTML fragment for the feedback box (escaped by the template).
#[derive(Template)]
#[template(path = "feedback.html")]
pub(crate) struct Feedback {
    /// `ok`, `error` or `pending`.
    pub kind: &'static str,
    /// The text.
    pub message: String,
    /// A job to link to.
    pub job: Option<String>,
}

impl Feedback {
    /// The fragment for an error.
    pub(crate) fn error(e: &WebError) -> Response {
        (
            e.status(),
            render(&Feedback {
                kind: "error",
                message: e.to_string(),
                job: None,
            }),
        )
            .into_response()
    }
}

/// True when the request came from the page's script (answers with a fragment, not a page).
pub(crate) fn wants_fragment(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        == Some("fetch")
}

/// After a form post without script: back to where the user came from (same origin only).
pub(crate) fn back(to: &str) -> Response {
    Redirect::to(to).into_response()
}

const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ct) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "manual.html")]
struct ManualPage {
    nav: Nav,
}

async fn manual(p: Principal) -> Response {
    render(&ManualPage {
        nav: Nav::new(&p, "manual"),
    })
}
