//! Agent-facing routes of fleet management, merged into ingest's agent API.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET  /v1/agents/{agent}/config` | agent key | desired config + pending instructions; `ETag`, `If-None-Match` → 304 |
//! | `PUT  /v1/agents/{agent}/config/live` | agent key | `{"version", "toml"}`: the config the agent runs now |
//! | `POST /v1/agents/{agent}/ack` | agent key | `{"request", "instruction", "ok", "message"}` |
//! | `POST /v1/agents/{agent}/snapshot` | agent key | raw bytes (≤ limit, else 413): sealed into the `snapshots` bucket |
//! | `GET  /v1/agents/{agent}/recovery` | `X-Fleetbus-Passphrase` | desired config + latest snapshot (401 wrong, 429 throttled) |
//! | `GET  /v1/assets` | agent key | manifest: name, size, SHA-256, content type |
//! | `GET  /v1/assets/{*name}` | agent key | the file; `ETag` = SHA-256, `If-None-Match` → 304 |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use fleetbus_schemas::events::config::Instruction;
use fleetbus_schemas::events::{ConfigEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Envelope, EventId};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::store::{self, SnapshotKey, ASSETS_BUCKET, SNAPSHOTS_BUCKET};
use super::{commit, FleetError, Settings};
use crate::api::{parse_json, AppError, ErrorBody};
use crate::writer::Shared;
use fleetbus_projections::configs::merge;
use fleetbus_schemas::http::{
    content_type, normalize_passphrase, AckBody, AssetEntry, DesiredReply, InstructionOut,
    LiveBody, Manifest, RecoveredSnapshot, RecoveryReply, StoredReply, PASSPHRASE_HEADER,
};

/// The `source` of events these routes publish.
pub(crate) const SOURCE: &str = "ingest";

#[derive(Debug)]
struct Throttle {
    failures: u32,
    locked_until: Option<Instant>,
}

/// State of the fleet routes.
pub(crate) struct FleetState {
    shared: Shared,
    js: jetstream::Context,
    settings: Settings,
    key: SnapshotKey,
    throttle: Mutex<HashMap<AgentId, Throttle>>,
}

/// The fleet routes, ready to merge into ingest's agent API router. Fails when the snapshot key
/// file is unusable.
pub(crate) fn router(
    shared: Shared,
    js: jetstream::Context,
    settings: Settings,
) -> Result<Router, FleetError> {
    let key = SnapshotKey::load_or_create(&settings.key_path)?;
    let snapshot_limit = settings.max_snapshot_bytes;
    let body_limit = settings.max_body_bytes;
    let state = Arc::new(FleetState {
        shared,
        js,
        settings,
        key,
        throttle: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/v1/agents/{agent}/config", get(get_config))
        .route(
            "/v1/agents/{agent}/config/live",
            put(put_live).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/v1/agents/{agent}/ack",
            post(post_ack).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/v1/agents/{agent}/snapshot",
            post(post_snapshot).layer(DefaultBodyLimit::max(snapshot_limit)),
        )
        .route("/v1/agents/{agent}/recovery", get(get_recovery))
        .route("/v1/assets", get(get_manifest))
        .route("/v1/assets/{*name}", get(get_asset))
        .with_state(state))
}

fn invalid(path: &str, message: impl Into<String>) -> AppError {
    AppError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn unavailable(e: FleetError) -> AppError {
    tracing::warn!(error = %e, "fleet request failed");
    AppError::Unavailable(format!("{e}; try again"))
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: "not_found".into(),
            message,
            path: None,
        }),
    )
        .into_response()
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge(format!(
                "request body is too large: {}",
                rejection.body_text()
            ))
        } else {
            AppError::Malformed {
                path: ".".into(),
                message: rejection.body_text(),
            }
        }
    })
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// The client address, when the server was started with connect info.
struct Remote(String);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Remote(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

impl FleetState {
    /// The agent owning the bearer key; it must be `expected` when given.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        expected: Option<&AgentId>,
    ) -> Result<AgentId, AppError> {
        crate::api::auth::authenticate(&self.shared, headers, expected)
    }

    fn agent_path(&self, headers: &HeaderMap, raw: &str) -> Result<AgentId, AppError> {
        let agent = AgentId::new(raw).map_err(|e| invalid("path.agent", e.to_string()))?;
        self.authenticate(headers, Some(&agent))
    }

    async fn commit(&self, events: Vec<Envelope>) -> Result<u64, AppError> {
        commit(
            &self.shared,
            &self.js,
            &events,
            self.settings.commit_timeout,
        )
        .await
        .map_err(unavailable)
    }

    fn desired_reply(&self, agent: &AgentId) -> DesiredReply {
        let state = self.shared.read_state();
        let blocked = state.projections.registry.is_blocked(agent);
        let a = state.configs.agents.get(agent);
        let desired = a.and_then(|a| a.desired.as_ref());
        let instructions = a
            .into_iter()
            .flat_map(|a| {
                [
                    (Instruction::Push, &a.push),
                    (Instruction::Update, &a.update),
                ]
            })
            .filter_map(|(instruction, p)| {
                let p = p.as_ref().filter(|p| p.ack.is_none())?;
                Some(InstructionOut {
                    id: p.id,
                    instruction,
                    target: p.target.clone(),
                })
            })
            .filter(|i| i.instruction == Instruction::Update || desired.is_some())
            .collect();
        DesiredReply {
            agent: agent.clone(),
            managed: desired.is_some(),
            version: desired.map(|d| d.version),
            hash: desired.map(|d| d.hash.clone()),
            toml: desired.map(|d| d.toml.clone()),
            volatile: desired
                .map(|d| state.configs.volatile(d))
                .unwrap_or_default(),
            instructions,
            blocked,
        }
    }
}

/// The ETag of a desired-config reply: changes whenever anything the agent acts on changes.
pub(crate) fn config_etag(reply: &DesiredReply) -> String {
    let mut h = Sha256::new();
    h.update(reply.version.unwrap_or(0).to_be_bytes());
    h.update(reply.hash.as_deref().unwrap_or("-"));
    for i in &reply.instructions {
        h.update(i.id.to_bytes());
    }
    h.update([u8::from(reply.blocked), u8::from(reply.managed)]);
    format!("\"{}\"", &hex::encode(h.finalize())[..32])
}

async fn get_config(
    State(state): State<Arc<FleetState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let agent = state.agent_path(&headers, &agent)?;
    let reply = state.desired_reply(&agent);
    let etag = config_etag(&reply);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if if_none_match(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Json(reply),
    )
        .into_response())
}

async fn put_live(
    State(state): State<Arc<FleetState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let agent = state.agent_path(&headers, &agent)?;
    let live: LiveBody = parse_json(&body_bytes(body)?)?;
    merge::parse("live config", &live.toml).map_err(|e| invalid("toml", e))?;
    let hash = super::decide::text_hash(&live.toml);
    let size = live.toml.len() as u64;
    let unchanged = state
        .shared
        .read_state()
        .configs
        .agents
        .get(&agent)
        .and_then(|a| a.live.as_ref())
        .is_some_and(|l| l.hash == hash && l.version == live.version);
    if unchanged {
        return Ok((
            StatusCode::OK,
            Json(StoredReply {
                stored: false,
                seq: 0,
                object: None,
                hash,
                size,
            }),
        )
            .into_response());
    }
    let env = Envelope::new(
        SOURCE,
        Actor::agent(agent.as_str()),
        None,
        Event::Config(ConfigEvent::LiveReported {
            agent: agent.clone(),
            version: live.version,
            hash: hash.clone(),
            toml: live.toml,
        }),
    );
    let seq = state.commit(vec![env]).await?;
    tracing::info!(agent = %agent, %hash, version = ?live.version, "live config stored");
    Ok((
        StatusCode::ACCEPTED,
        Json(StoredReply {
            stored: true,
            seq,
            object: None,
            hash,
            size,
        }),
    )
        .into_response())
}

async fn post_ack(
    State(state): State<Arc<FleetState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let agent = state.agent_path(&headers, &agent)?;
    let ack: AckBody = parse_json(&body_bytes(body)?)?;
    if ack.message.chars().count() > 1024 {
        return Err(invalid("message", "at most 1,024 characters"));
    }
    let pending = {
        let s = state.shared.read_state();
        s.configs.agents.get(&agent).and_then(|a| {
            match ack.instruction {
                Instruction::Push => a.push.as_ref(),
                Instruction::Update => a.update.as_ref(),
            }
            .filter(|p| p.id == ack.request)
            .map(|p| p.ack.is_some())
        })
    };
    match pending {
        None => {
            return Ok(not_found(format!(
                "no {} instruction {} is pending for agent '{agent}'",
                ack.instruction.as_str(),
                ack.request
            )))
        }
        Some(true) => {
            return Ok((
                StatusCode::OK,
                Json(StoredReply {
                    stored: false,
                    seq: 0,
                    object: None,
                    hash: String::new(),
                    size: 0,
                }),
            )
                .into_response())
        }
        Some(false) => {}
    }
    let env = Envelope::new(
        SOURCE,
        Actor::agent(agent.as_str()),
        None,
        Event::Config(ConfigEvent::InstructionAcknowledged {
            agent: agent.clone(),
            request: ack.request,
            instruction: ack.instruction,
            ok: ack.ok,
            message: ack.message,
        }),
    );
    let seq = state.commit(vec![env]).await?;
    tracing::info!(agent = %agent, instruction = ack.instruction.as_str(), ok = ack.ok, "instruction acknowledged");
    Ok((
        StatusCode::ACCEPTED,
        Json(StoredReply {
            stored: true,
            seq,
            object: None,
            hash: String::new(),
            size: 0,
        }),
    )
        .into_response())
}

async fn post_snapshot(
    State(state): State<Arc<FleetState>>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let agent = state.agent_path(&headers, &agent)?;
    let plain = body_bytes(body)?;
    if plain.is_empty() {
        return Err(invalid(".", "the snapshot is empty"));
    }
    let hash = hex::encode(Sha256::digest(&plain));
    let id = EventId::new();
    let object = format!("{agent}/{id}");
    let sealed = state.key.seal(&object, &plain).map_err(unavailable)?;
    let size = sealed.len() as u64;
    let bucket = store::bucket(&state.js, SNAPSHOTS_BUCKET)
        .await
        .map_err(unavailable)?;
    bucket
        .put(object.as_str(), &mut sealed.as_slice())
        .await
        .map_err(|e| unavailable(FleetError::Store(format!("put {object}: {e}"))))?;
    let env = Envelope {
        id,
        ..Envelope::new(
            SOURCE,
            Actor::agent(agent.as_str()),
            None,
            Event::Config(ConfigEvent::SnapshotStored {
                agent: agent.clone(),
                object: object.clone(),
                size,
                hash: hash.clone(),
            }),
        )
    };
    let seq = match state.commit(vec![env]).await {
        Ok(seq) => seq,
        Err(e) => {
            // Not in the log means not stored: remove the orphan.
            let _ = bucket.delete(object.as_str()).await;
            return Err(e);
        }
    };
    tracing::info!(agent = %agent, %object, size, "snapshot stored");
    prune(&state, &agent, &bucket).await;
    Ok((
        StatusCode::CREATED,
        Json(StoredReply {
            stored: true,
            seq,
            object: Some(object),
            hash,
            size: plain.len() as u64,
        }),
    )
        .into_response())
}

/// Deletes the agent's snapshots beyond the newest N, then records the deletions.
async fn prune(state: &FleetState, agent: &AgentId, bucket: &jetstream::object_store::ObjectStore) {
    let old: Vec<String> = {
        let s = state.shared.read_state();
        let Some(a) = s.configs.agents.get(agent) else {
            return;
        };
        let excess = a
            .snapshots
            .len()
            .saturating_sub(state.settings.keep_snapshots);
        a.snapshots
            .iter()
            .take(excess)
            .map(|s| s.object.clone())
            .collect()
    };
    let mut events = Vec::new();
    for object in old {
        match bucket.delete(object.as_str()).await {
            Ok(()) => {}
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                tracing::warn!(%object, error = %e, "cannot delete an old snapshot; will retry next time");
                continue;
            }
        }
        events.push(Envelope::new(
            SOURCE,
            Actor::service(SOURCE),
            None,
            Event::Config(ConfigEvent::SnapshotDeleted {
                agent: agent.clone(),
                object,
            }),
        ));
    }
    if !events.is_empty() {
        if let Err(e) = state.commit(events).await {
            tracing::warn!(agent = %agent, error = %e, "snapshot deletions not recorded");
        }
    }
}

impl FleetState {
    /// Seconds until the agent's recovery is unlocked, if it is locked.
    fn locked(&self, agent: &AgentId) -> Option<u64> {
        let t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let until = t.get(agent)?.locked_until?;
        let now = Instant::now();
        (until > now).then(|| until.duration_since(now).as_secs().max(1))
    }

    fn record_failure(&self, agent: &AgentId) -> u32 {
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let entry = t.entry(agent.clone()).or_insert(Throttle {
            failures: 0,
            locked_until: None,
        });
        entry.failures += 1;
        if entry.failures >= self.settings.free_attempts {
            let doublings = (entry.failures - self.settings.free_attempts).min(10);
            let lockout = self.settings.lockout * 2u32.pow(doublings);
            entry.locked_until =
                Some(Instant::now() + lockout.min(std::time::Duration::from_secs(3600)));
        }
        entry.failures
    }

    fn record_success(&self, agent: &AgentId) {
        self.throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent);
    }
}

async fn get_recovery(
    State(state): State<Arc<FleetState>>,
    Path(agent): Path<String>,
    Remote(remote): Remote,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let agent = AgentId::new(agent).map_err(|e| invalid("path.agent", e.to_string()))?;
    if let Some(retry_after) = state.locked(&agent) {
        tracing::warn!(agent = %agent, %remote, retry_after, "recovery attempt while locked");
        return Err(AppError::TooManyRequests {
            message: format!(
                "too many wrong passphrases for agent '{agent}'; try again in {retry_after} s"
            ),
            retry_after,
        });
    }
    let passphrase = headers
        .get(PASSPHRASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(normalize_passphrase)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            AppError::Unauthorized(format!(
                "expected the retrieval passphrase in the {PASSPHRASE_HEADER} header"
            ))
        })?;
    let stored = state
        .shared
        .read_state()
        .configs
        .agents
        .get(&agent)
        .and_then(|a| a.passphrase_hash.clone());
    let ok = match stored {
        Some(phc) => tokio::task::spawn_blocking(move || verify_passphrase(&phc, &passphrase))
            .await
            .unwrap_or(false),
        None => false,
    };
    let attempt = Envelope::new(
        SOURCE,
        Actor::service(SOURCE),
        None,
        Event::Config(ConfigEvent::RecoveryAttempted {
            agent: agent.clone(),
            ok,
            remote: remote.clone(),
        }),
    );
    if !ok {
        let failures = state.record_failure(&agent);
        tracing::warn!(agent = %agent, %remote, failures, "wrong recovery passphrase");
        state.commit(vec![attempt]).await?;
        return Err(AppError::Unauthorized(format!(
            "wrong passphrase for agent '{agent}', or it has no recovery passphrase"
        )));
    }
    state.record_success(&agent);
    let (desired, latest) = {
        let s = state.shared.read_state();
        let a = s.configs.agents.get(&agent);
        (
            a.and_then(|a| a.desired.clone()),
            a.and_then(|a| a.snapshots.last().cloned()),
        )
    };
    let snapshot = match latest {
        None => None,
        Some(meta) => {
            let bucket = store::bucket(&state.js, SNAPSHOTS_BUCKET)
                .await
                .map_err(unavailable)?;
            let sealed = store::read_object(&bucket, &meta.object)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    unavailable(FleetError::Store(format!(
                        "snapshot {} is missing from the bucket",
                        meta.object
                    )))
                })?;
            let plain = state.key.open(&meta.object, &sealed).map_err(unavailable)?;
            if hex::encode(Sha256::digest(&plain)) != meta.hash {
                return Err(unavailable(FleetError::Crypto(format!(
                    "snapshot {} does not match its recorded hash",
                    meta.object
                ))));
            }
            Some(RecoveredSnapshot {
                object: meta.object,
                hash: meta.hash,
                time: meta.time,
                data: base64::engine::general_purpose::STANDARD.encode(plain),
            })
        }
    };
    state.commit(vec![attempt]).await?;
    tracing::info!(agent = %agent, %remote, snapshot = snapshot.is_some(), "recovery bundle handed out");
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(RecoveryReply {
            agent,
            version: desired.as_ref().map(|d| d.version),
            toml: desired.map(|d| d.toml),
            snapshot,
        }),
    )
        .into_response())
}

fn verify_passphrase(phc: &str, passphrase: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(passphrase.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn manifest(state: &FleetState) -> Result<Manifest, AppError> {
    let bucket = store::bucket(&state.js, ASSETS_BUCKET)
        .await
        .map_err(unavailable)?;
    let mut list = bucket
        .list()
        .await
        .map_err(|e| unavailable(FleetError::Store(format!("list assets: {e}"))))?;
    let mut assets = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| unavailable(FleetError::Store(format!("list assets: {e}"))))?;
        if info.deleted {
            continue;
        }
        let sha256 = store::digest_hex(info.digest.as_deref()).unwrap_or_default();
        assets.push(AssetEntry {
            content_type: info
                .metadata
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| content_type(&info.name).to_owned()),
            size: info.size as u64,
            sha256,
            modified: info.modified.map(|m| m.to_string()),
            name: info.name,
        });
    }
    assets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest { assets })
}

async fn get_manifest(
    State(state): State<Arc<FleetState>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.authenticate(&headers, None)?;
    let m = manifest(&state).await?;
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(m),
    )
        .into_response())
}

async fn get_asset(
    State(state): State<Arc<FleetState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.authenticate(&headers, None)?;
    let bucket = store::bucket(&state.js, ASSETS_BUCKET)
        .await
        .map_err(unavailable)?;
    let info = match bucket.info(name.as_str()).await {
        Ok(i) if !i.deleted => i,
        _ => return Ok(not_found(format!("no asset named {name:?}"))),
    };
    let sha = store::digest_hex(info.digest.as_deref()).unwrap_or_default();
    let etag = format!("\"{sha}\"");
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = HeaderValue::from_static("private, max-age=0, must-revalidate");
    if if_none_match(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let Some(bytes) = store::read_object(&bucket, &name)
        .await
        .map_err(unavailable)?
    else {
        return Ok(not_found(format!("no asset named {name:?}")));
    };
    let ctype = info
        .metadata
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| content_type(&name).to_owned());
    let ctype = HeaderValue::from_str(&ctype)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from(bytes),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_match_whatever_the_spacing_and_case() {
        assert_eq!(
            normalize_passphrase("  Apple\tTIGER-river  "),
            "apple tiger river"
        );
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("logo.PNG"), "image/png");
        assert_eq!(
            content_type("scripts/setup.sh"),
            "text/x-shellscript; charset=utf-8"
        );
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn the_config_etag_changes_with_version_instructions_and_blocking() {
        let base = DesiredReply {
            agent: AgentId::new("a").unwrap(),
            managed: true,
            version: Some(1),
            hash: Some("h".into()),
            toml: Some(String::new()),
            volatile: vec![],
            instructions: vec![],
            blocked: false,
        };
        let e = config_etag(&base);
        assert_eq!(e, config_etag(&base.clone()));
        let mut v = base.clone();
        v.version = Some(2);
        assert_ne!(e, config_etag(&v));
        let mut i = base.clone();
        i.instructions.push(InstructionOut {
            id: EventId::new(),
            instruction: Instruction::Push,
            target: "1".into(),
        });
        assert_ne!(e, config_etag(&i));
        let mut b = base;
        b.blocked = true;
        assert_ne!(e, config_etag(&b));
    }
}
