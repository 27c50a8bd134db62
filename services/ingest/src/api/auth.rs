//! Agent authentication, one for both routers (the agent API and the fleet routes):
//! `Authorization: Bearer <key>`; ingest knows only SHA-256 hashes of keys (from `KeyIssued`
//! events) and compares them in constant time.

use axum::http::{header, HeaderMap};
use fleetbus_schemas::AgentId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppError;
use crate::writer::Shared;

/// The agent owning the bearer key in `headers`. With `expected`, the key must be that
/// agent's: 401 for a missing or unknown key, 403 for another agent's key or a revoked one.
pub fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    expected: Option<&AgentId>,
) -> Result<AgentId, AppError> {
    let key = bearer(headers)?;
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let state = shared.read_state();
    let agents = &state.projections.registry.agents;
    // Fast path: the key of the agent named in the path.
    if let Some(agent) = expected {
        if let Some(stored) = agents.get(agent).and_then(|a| a.key_hash.as_deref()) {
            if ct_eq(stored, &hash) {
                return Ok(agent.clone());
            }
        }
    }
    // Slow path: whose key is it? Compare with every key so the answer says why.
    let mut owner = None;
    for (id, record) in agents {
        if let Some(stored) = record.key_hash.as_deref() {
            if ct_eq(stored, &hash) {
                owner = Some(id.clone());
            }
        }
    }
    match (owner, expected) {
        (Some(owner), None) => Ok(owner),
        (Some(owner), Some(expected)) => Err(AppError::Forbidden(format!(
            "this key belongs to agent '{owner}', not '{expected}'"
        ))),
        (None, Some(expected)) if agents.get(expected).is_some_and(|a| a.key_hash.is_none()) => {
            Err(AppError::Forbidden(format!(
                "the key of agent '{expected}' was revoked"
            )))
        }
        (None, _) => Err(AppError::Unauthorized("unknown agent key".into())),
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::Unauthorized("missing 'Authorization: Bearer <agent key>' header".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("Authorization header is not ASCII".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            AppError::Unauthorized("expected 'Authorization: Bearer <agent key>'".into())
        })
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
