//! Users (admin): add, change role or password, remove; API tokens; and the watcher that
//! applies role changes and removals to live sessions.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fleetbus_runtime::bus::CommandWait;
use fleetbus_schemas::commands::UserCommand;
use fleetbus_schemas::events::UserEvent;
use fleetbus_schemas::queries::{model, UsersQuery};
use fleetbus_schemas::{Command, CommandEnvelope, Event, UserName, UserRole};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::overview::rejection;
use super::tasks::done;
use super::{need, render, PageError, PageResult};
use crate::auth::{check_password_rules, hash_password, parse_role, role_name, Principal};
use crate::bus::Outcome;
use crate::tokens::TokenRecord;
use crate::views::{self, Nav};
use crate::{Shared, WebError};

/// A user as listed (no credential material).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct UserRow {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
}

/// Reads the user list from `fleet.q.users`. Accepts a map `{name: {role, …}}` or a list of
/// `{user|name, role}`, and never keeps any other field.
pub(crate) async fn users(state: &Shared) -> Result<Vec<UserRow>, WebError> {
    let value: serde_json::Value = state.bus.query(model::USERS, &UsersQuery {}).await?;
    let role_of = |v: &serde_json::Value| v["role"].as_str().unwrap_or("viewer").to_owned();
    let mut rows: Vec<UserRow> = match &value {
        serde_json::Value::Object(map) => {
            let map = map.get("users").and_then(|u| u.as_object()).unwrap_or(map);
            map.iter()
                .map(|(name, v)| UserRow {
                    name: name.clone(),
                    role: role_of(v),
                })
                .collect()
        }
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|v| {
                let name = v["user"].as_str().or_else(|| v["name"].as_str())?;
                Some(UserRow {
                    name: name.to_owned(),
                    role: role_of(v),
                })
            })
            .collect(),
        _ => vec![],
    };
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// A token as listed.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: &'static str,
    /// Creator.
    pub created_by: String,
    /// When.
    pub created: String,
}

impl From<TokenRecord> for TokenRow {
    fn from(t: TokenRecord) -> Self {
        TokenRow {
            id: t.id,
            name: t.name,
            role: role_name(t.role),
            created_by: t.created_by,
            created: views::time(t.created),
        }
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    new_token: String,
}

/// `GET /users` (admin).
pub(crate) async fn list(State(state): State<Shared>, p: Principal) -> PageResult {
    let nav = Nav::new(&p, "users");
    need(&p, UserRole::Admin).map_err(|e| PageError(e, Some(nav.clone())))?;
    let users = users(&state)
        .await
        .map_err(|e| PageError(e, Some(nav.clone())))?;
    Ok(render(&UsersPage {
        nav,
        users,
        tokens: state
            .tokens
            .list()
            .into_iter()
            .map(TokenRow::from)
            .collect(),
        new_token: String::new(),
    }))
}

/// Publishes a user command and waits briefly for a rejection. Password-bearing events travel
/// on `fleet.sec.…`, which the web service cannot read, so silence means accepted.
pub(crate) async fn user_command(
    state: &Shared,
    p: &Principal,
    command: UserCommand,
) -> Result<(), WebError> {
    send_quiet(state, p, Command::User(command)).await
}

/// Publishes a command whose resulting event is secret (so never seen here) and waits briefly
/// for a rejection; silence means accepted.
pub(crate) async fn send_quiet(
    state: &Shared,
    p: &Principal,
    command: Command,
) -> Result<(), WebError> {
    let envelope = CommandEnvelope::new(p.actor(), command);
    let wait = CommandWait {
        timeout: state.bus.query_timeout(),
        answer: Duration::from_millis(1500),
        settle: None,
        committed: false,
    };
    match state.bus.send(&state.hub, &envelope, &wait).await? {
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
        Outcome::Done(_) | Outcome::Pending(_) => Ok(()),
    }
}

/// Add-user form.
#[derive(Debug, Deserialize)]
pub(crate) struct AddForm {
    user: String,
    role: String,
    password: String,
}

/// Hashes a new password off the async runtime, after checking the rules.
pub(crate) async fn new_hash(password: String) -> Result<String, WebError> {
    check_password_rules(&password).map_err(|e| WebError::BadRequest(e.into()))?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(WebError::Internal)
}

/// `POST /users` (admin).
pub(crate) async fn add(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<AddForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let user =
            UserName::new(form.user.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let role = parse_role(&form.role)
            .ok_or_else(|| WebError::BadRequest(format!("unknown role {:?}", form.role)))?;
        let password_hash = new_hash(form.password.clone()).await?;
        user_command(
            &state,
            &p,
            UserCommand::Add {
                user,
                role,
                password_hash,
            },
        )
        .await
    }
    .await;
    done(&headers, result, "user added", "/users")
}

/// Role / password form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /users/{user}/{role|password|remove}` (admin).
pub(crate) async fn act(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((user, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<UserForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let user = UserName::new(user).map_err(|e| WebError::NotFound(e.to_string()))?;
        let command = match verb.as_str() {
            "role" => UserCommand::SetRole {
                user,
                role: parse_role(&form.role)
                    .ok_or_else(|| WebError::BadRequest(format!("unknown role {:?}", form.role)))?,
            },
            "password" => UserCommand::SetPassword {
                user,
                password_hash: new_hash(form.password.clone()).await?,
            },
            "remove" => {
                if user.as_str() == p.user {
                    return Err(WebError::Conflict {
                        message: "you cannot remove yourself".into(),
                        job: None,
                    });
                }
                UserCommand::Remove { user }
            }
            other => return Err(WebError::NotFound(format!("no user action {other:?}"))),
        };
        user_command(&state, &p, command).await
    }
    .await;
    done(&headers, result, &format!("user {verb} sent"), "/users")
}

/// New token form.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    name: String,
    role: String,
}

/// `POST /tokens` (admin): creates an API token, shown once.
pub(crate) async fn create_token(
    State(state): State<Shared>,
    p: Principal,
    axum::Form(form): axum::Form<TokenForm>,
) -> PageResult {
    let nav = Nav::new(&p, "users");
    let err = |e| PageError(e, Some(nav.clone()));
    need(&p, UserRole::Admin).map_err(err)?;
    let role = parse_role(&form.role).ok_or_else(|| {
        err(WebError::BadRequest(format!(
            "unknown role {:?}",
            form.role
        )))
    })?;
    let (token, _) = state
        .tokens
        .create(form.name.trim(), role, &p.user)
        .await
        .map_err(err)?;
    let users = users(&state).await.unwrap_or_default();
    Ok(render(&UsersPage {
        nav,
        users,
        tokens: state
            .tokens
            .list()
            .into_iter()
            .map(TokenRow::from)
            .collect(),
        new_token: token,
    }))
}

/// `POST /tokens/{id}/revoke` (admin).
pub(crate) async fn revoke_token(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        if state.tokens.revoke(&id).await? {
            Ok(())
        } else {
            Err(WebError::NotFound(format!("unknown token {id:?}")))
        }
    }
    .await;
    done(&headers, result, "token revoked", "/users")
}

/// Applies role changes and removals seen on the bus to live sessions.
pub(crate) async fn watch_sessions(state: Shared, shutdown: CancellationToken) {
    let mut events = state.hub.subscribe();
    loop {
        let next = tokio::select! {
            e = events.recv() => e,
            () = shutdown.cancelled() => return,
        };
        match next {
            Ok(e) => match &e.env.event {
                Event::User(UserEvent::RoleChanged { user, role }) => {
                    state.sessions.set_role(user.as_str(), *role)
                }
                Event::User(UserEvent::Removed { user }) => {
                    state.sessions.remove_user(user.as_str())
                }
                _ => {}
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "session watcher lagged");
            }
            Err(_) => return,
        }
    }
}
