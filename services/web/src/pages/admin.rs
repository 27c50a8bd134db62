//! Agents (issue a key shown once, revoke, block/unblock) and hosts (add/edit/remove, host-key
//! policy, trust a new key). Changing anything here is for admins.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fleetbus_schemas::commands::{AgentCommand, HostCommand};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::{AgentId, Command, HostId, UserRole};
use serde::{Deserialize, Serialize};

use super::overview::rejection;
use super::tasks::done;
use super::{need, render, PageError};
use crate::auth::{random_token, Principal};
use crate::bus::Outcome;
use crate::views::Nav;
use crate::{Shared, WebError};

/// An agent as shown (no key hash).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentRow {
    /// Id.
    pub id: String,
    /// Host.
    pub host: String,
    /// Public key id, or empty when revoked.
    pub key_id: String,
    /// Has a valid key.
    pub has_key: bool,
    /// Blocked.
    pub blocked: bool,
    /// Why.
    pub reason: String,
}

/// All agents, from `fleet.q.registry` (key issue events carry hashes and travel on
/// `fleet.sec.…`, which this service cannot read; the registry answer has them redacted).
pub(crate) async fn agent_rows(state: &Shared) -> Result<Vec<AgentRow>, WebError> {
    let registry: fleetbus_projections::Registry = state
        .bus
        .query(
            fleetbus_schemas::queries::model::REGISTRY,
            &fleetbus_schemas::queries::RegistryQuery {},
        )
        .await?;
    Ok(registry
        .agents
        .iter()
        .map(|(id, a)| AgentRow {
            id: id.to_string(),
            host: a.host.to_string(),
            key_id: a.key_id.clone().unwrap_or_default(),
            has_key: a.key_hash.is_some(),
            blocked: a.blocked,
            reason: a.block_reason.clone().unwrap_or_default(),
        })
        .collect())
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Nav,
    rows: Vec<AgentRow>,
    hosts: Vec<String>,
}

/// `GET /agents`.
pub(crate) async fn agents(
    State(state): State<Shared>,
    p: Principal,
) -> Result<Response, PageError> {
    let nav = Nav::new(&p, "agents");
    let rows = agent_rows(&state)
        .await
        .map_err(|e| PageError(e, Some(nav.clone())))?;
    let hosts = state.hub.read_fold(|f| {
        f.proj
            .registry
            .hosts
            .keys()
            .map(|h| h.to_string())
            .collect()
    });
    Ok(render(&AgentsPage { nav, rows, hosts }))
}

async fn send(state: &Shared, p: &Principal, command: Command) -> Result<(), WebError> {
    match state.bus.command(&state.hub, p.actor(), command).await? {
        Outcome::Done(_) => Ok(()),
        Outcome::Pending(id) => Err(crate::bus::no_answer(id)),
        Outcome::Rejected { reason, message } => Err(rejection(reason, message)),
    }
}

/// The key issue form.
#[derive(Debug, Deserialize)]
pub(crate) struct IssueForm {
    agent: String,
    host: String,
}

#[derive(Template)]
#[template(path = "key_issued.html")]
struct KeyIssued {
    nav: Nav,
    agent: String,
    key: String,
}

/// `POST /agents/issue` (admin): a new key, shown once; only its SHA-256 goes on the bus.
pub(crate) async fn issue_key(
    State(state): State<Shared>,
    p: Principal,
    axum::Form(form): axum::Form<IssueForm>,
) -> Result<Response, PageError> {
    let nav = Nav::new(&p, "agents");
    let result = async {
        need(&p, UserRole::Admin)?;
        let agent =
            AgentId::new(form.agent.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let host =
            HostId::new(form.host.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let key_id = format!(
            "k-{}",
            &ulid::Ulid::new().to_string().to_ascii_lowercase()[..10]
        );
        let key = format!("fbk_{key_id}_{}", random_token());
        let key_hash = hex::encode(crate::auth::token_hash(&key));
        super::users::send_quiet(
            &state,
            &p,
            Command::Agent(AgentCommand::IssueKey {
                agent: agent.clone(),
                host,
                key_id,
                key_hash,
            }),
        )
        .await?;
        Ok::<_, WebError>((agent, key))
    }
    .await;
    match result {
        Ok((agent, key)) => Ok(render(&KeyIssued {
            nav,
            agent: agent.to_string(),
            key,
        })),
        Err(e) => Err(PageError(e, Some(nav))),
    }
}

/// Block reason.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReasonForm {
    #[serde(default)]
    reason: String,
}

/// `POST /agents/{agent}/{revoke|block|unblock}` (admin).
pub(crate) async fn agent_act(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((agent, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<ReasonForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let agent = AgentId::new(agent).map_err(|e| WebError::NotFound(e.to_string()))?;
        if !agent_rows(&state)
            .await?
            .iter()
            .any(|a| a.id == agent.as_str())
        {
            return Err(WebError::NotFound(format!("unknown agent {agent}")));
        }
        let command = match verb.as_str() {
            "revoke" => AgentCommand::RevokeKey { agent },
            "block" => AgentCommand::Block {
                agent,
                reason: if form.reason.trim().is_empty() {
                    "blocked from the dashboard".into()
                } else {
                    form.reason.clone()
                },
            },
            "unblock" => AgentCommand::Unblock { agent },
            other => return Err(WebError::NotFound(format!("no agent action {other:?}"))),
        };
        send(&state, &p, Command::Agent(command)).await
    }
    .await;
    done(&headers, result, &format!("agent {verb} sent"), "/agents")
}

/// A host as shown on the hosts page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostRegRow {
    /// Id.
    pub id: String,
    /// `user@address:port`.
    pub address: String,
    /// Address alone.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Tags.
    pub tags: String,
    /// Roles.
    pub roles: String,
    /// Key policy.
    pub policy: String,
    /// Pinned key fingerprint.
    pub pinned: String,
    /// Ad-hoc allowed.
    pub adhoc: bool,
    /// Disabled.
    pub disabled: bool,
}

/// Registered hosts.
pub(crate) fn host_rows(state: &Shared) -> Vec<HostRegRow> {
    state.hub.read_fold(|f| {
        f.proj
            .registry
            .hosts
            .values()
            .map(|h| HostRegRow {
                id: h.host.to_string(),
                address: format!("{}@{}:{}", h.user, h.address, h.port),
                addr: h.address.clone(),
                port: h.port,
                user: h.user.clone(),
                tags: h.tags.join(", "),
                roles: h.roles.join(", "),
                policy: policy_name(h.host_key_policy).to_owned(),
                pinned: f
                    .proj
                    .registry
                    .host_keys
                    .get(&h.host)
                    .map(|k| format!("{} {}", k.algorithm, k.fingerprint))
                    .unwrap_or_default(),
                adhoc: h.allow_adhoc,
                disabled: h.disabled,
            })
            .collect()
    })
}

fn policy_name(p: HostKeyPolicy) -> &'static str {
    match p {
        HostKeyPolicy::Strict => "strict",
        HostKeyPolicy::AcceptNew => "accept_new",
        HostKeyPolicy::Off => "off",
    }
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage {
    nav: Nav,
    rows: Vec<HostRegRow>,
}

/// `GET /hosts`.
pub(crate) async fn hosts(State(state): State<Shared>, p: Principal) -> Response {
    render(&HostsPage {
        nav: Nav::new(&p, "hosts"),
        rows: host_rows(&state),
    })
}

/// The host form.
#[derive(Debug, Deserialize)]
pub(crate) struct HostForm {
    id: String,
    address: String,
    #[serde(default)]
    port: Option<u16>,
    user: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    adhoc: Option<String>,
    #[serde(default)]
    disabled: Option<String>,
}

fn names(s: &str) -> Result<Vec<String>, WebError> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            fleetbus_schemas::ids::validate_name("tag or role", x)
                .map(|_| x.to_owned())
                .map_err(|e| WebError::BadRequest(e.to_string()))
        })
        .collect()
}

/// `POST /hosts`: add, or update when it exists (admin).
pub(crate) async fn save_host(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HostForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let host = HostId::new(form.id.trim()).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let policy = match form.policy.as_str() {
            "strict" => HostKeyPolicy::Strict,
            "" | "accept_new" => HostKeyPolicy::AcceptNew,
            "off" => HostKeyPolicy::Off,
            other => {
                return Err(WebError::BadRequest(format!(
                    "unknown host key policy {other:?}"
                )))
            }
        };
        let address = form.address.trim();
        if address.is_empty() || address.contains(char::is_whitespace) {
            return Err(WebError::BadRequest(
                "address must be an IP or DNS name".into(),
            ));
        }
        let spec = HostSpec {
            host: host.clone(),
            address: address.to_owned(),
            port: form.port.unwrap_or(22),
            user: form.user.trim().to_owned(),
            tags: names(&form.tags)?,
            roles: names(&form.roles)?,
            host_key_policy: policy,
            allow_adhoc: form.adhoc.is_some(),
            disabled: form.disabled.is_some(),
        };
        let exists = state
            .hub
            .read_fold(|f| f.proj.registry.hosts.contains_key(&host));
        let command = if exists {
            HostCommand::Update(spec)
        } else {
            HostCommand::Add(spec)
        };
        send(&state, &p, Command::Host(command)).await
    }
    .await;
    done(&headers, result, "host saved", "/hosts")
}

/// Trust-key form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TrustForm {
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    fingerprint: String,
}

/// `POST /hosts/{host}/{remove|trust}` (admin).
pub(crate) async fn host_act(
    State(state): State<Shared>,
    p: Principal,
    headers: HeaderMap,
    Path((host, verb)): Path<(String, String)>,
    axum::Form(form): axum::Form<TrustForm>,
) -> Response {
    let result = async {
        need(&p, UserRole::Admin)?;
        let host = HostId::new(host).map_err(|e| WebError::NotFound(e.to_string()))?;
        if !state
            .hub
            .read_fold(|f| f.proj.registry.hosts.contains_key(&host))
        {
            return Err(WebError::NotFound(format!("unknown host {host}")));
        }
        let command = match verb.as_str() {
            "remove" => HostCommand::Remove { host },
            "trust" => {
                if !form.fingerprint.starts_with("SHA256:") || form.algorithm.trim().is_empty() {
                    return Err(WebError::BadRequest(
                        "give the key algorithm and its SHA256:… fingerprint".into(),
                    ));
                }
                HostCommand::TrustKey {
                    host,
                    algorithm: form.algorithm.trim().to_owned(),
                    fingerprint: form.fingerprint.trim().to_owned(),
                }
            }
            other => return Err(WebError::NotFound(format!("no host action {other:?}"))),
        };
        send(&state, &p, Command::Host(command)).await
    }
    .await;
    done(&headers, result, &format!("host {verb} sent"), "/hosts")
}
