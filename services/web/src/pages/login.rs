//! Login, logout and health.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use fleetbus_projections::UserRecord;
use fleetbus_schemas::queries::{model, LogHeadQuery, UserCredentialQuery};
use fleetbus_schemas::UserName;
use serde::Deserialize;

use super::render;
use crate::auth::{random_token, verify_password, Principal, SESSION_COOKIE};
use crate::security::{clear_session_cookie, cookie, login_cookie, session_cookie};
use crate::throttle::client_ip;
use crate::{Shared, WebError};

/// A hash nobody's password matches, verified for unknown users so that timing does not tell
/// which user names exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zy2o5qIfbgJq4mHTQh3GG3Qqjq9DXQm7o2bm0mTq9cM";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: String,
}

/// The login form; sets the pre-login CSRF cookie it is checked against.
pub(crate) async fn form() -> Response {
    let csrf = random_token();
    let page = LoginPage {
        csrf: csrf.clone(),
        error: String::new(),
    };
    ([(header::SET_COOKIE, login_cookie(&csrf))], render(&page)).into_response()
}

/// Login form fields.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    user: String,
    password: String,
}

/// The client's address: the connection's peer, or behind a configured trusted proxy the
/// address it forwarded (see [`crate::throttle::client_ip`]); `unknown` without a peer.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr(pub String);

impl axum::extract::FromRequestParts<Shared> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = client_ip(peer, &forwarded, &state.config.trusted_proxies);
        Ok(ClientAddr(
            ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        ))
    }
}

/// Checks the password and starts a session.
pub(crate) async fn submit(
    State(state): State<Shared>,
    ClientAddr(addr): ClientAddr,
    Form(form): Form<LoginForm>,
) -> Response {
    match login(&state, &addr, &form).await {
        Ok(token) => {
            tracing::info!(user = %form.user, "login");
            (
                [(
                    header::SET_COOKIE,
                    session_cookie(&token, state.config.session_absolute_s),
                )],
                Redirect::to("/"),
            )
                .into_response()
        }
        Err(e) => {
            let status = e.status();
            let csrf = random_token();
            let page = LoginPage {
                csrf: csrf.clone(),
                error: e.to_string(),
            };
            let mut res = (status, render(&page)).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&login_cookie(&csrf)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            if let WebError::Throttled(wait) = e {
                if let Ok(v) =
                    header::HeaderValue::from_str(&crate::retry_after_secs(wait).to_string())
                {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            res
        }
    }
}

async fn login(state: &Shared, addr: &str, form: &LoginForm) -> Result<String, WebError> {
    let account = form.user.to_ascii_lowercase();
    state
        .login_throttle
        .attempt(&account, addr, chrono::Utc::now())
        .await
        .map_err(WebError::Throttled)?;
    let wrong = || WebError::Unauthorized;
    let record: Option<UserRecord> = match UserName::new(form.user.clone()) {
        Ok(user) => match state
            .bus
            .query::<_, UserRecord>(model::USER_CREDENTIAL, &UserCredentialQuery { user })
            .await
        {
            Ok(r) => Some(r),
            Err(WebError::NotFound(_)) | Err(WebError::BadRequest(_)) => None,
            Err(e) => {
                state.login_throttle.forgive(&account, addr).await;
                return Err(e);
            }
        },
        Err(_) => None,
    };
    let hash = record
        .as_ref()
        .and_then(|r| r.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_owned());
    let password = form.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| WebError::Internal(format!("password check: {e}")))?;
    match record {
        Some(r) if ok => {
            state.login_throttle.succeeded(&account, addr).await;
            Ok(state.sessions.create(&form.user, r.role))
        }
        _ => {
            // The attempt already counted as a failure.
            tracing::warn!(user = %form.user.chars().take(64).collect::<String>(), client = %addr, "login failed");
            Err(wrong())
        }
    }
}

/// Ends the session.
pub(crate) async fn logout(
    State(state): State<Shared>,
    headers: HeaderMap,
    _p: Principal,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.remove(token);
    }
    (
        [(header::SET_COOKIE, clear_session_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

/// `200` when the bus and the query path answer, `503` otherwise.
pub(crate) async fn healthz(State(state): State<Shared>) -> Response {
    let bus = state.bus.is_connected();
    let query = if bus {
        state
            .bus
            .query::<_, serde_json::Value>(model::LOG_HEAD, &LogHeadQuery {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        Err("not connected".into())
    };
    let events = state.hub.consuming();
    let healthy = bus && query.is_ok() && events;
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "bus": bus,
        "query": query.as_ref().map(|_| "ok".to_owned()).unwrap_or_else(|e| e.clone()),
        "events": events,
        "last_seq": state.hub.last_seq(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
