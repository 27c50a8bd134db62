//! `POST /v1/checks/{check}/ping`: who may ping which check.
//!
//! A check is defined by the scheduler (`check.<id>.defined`); ingest folds those events into
//! [`fleetbus_projections::Checks`]. The rule lives with the definition ([`CheckSpec::may_be_pinged_from`]): an agent
//! may ping a check when its host (the host its key was issued for) is in the check's
//! `ping_hosts`, or is the host of a deadline check. Answers, after authentication (401):
//! 422 for a malformed check id, 404 for a check that is not defined (or was deleted), 403 for
//! an agent whose host may not ping it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use fleetbus_schemas::events::{CheckEvent, Event};
use fleetbus_schemas::{Actor, CheckId, Envelope, SCHEMA_VERSION};

use super::{
    body_bytes, invalid, parse_json, ApiState, AppError, PingBody, SubmitReply, AGENT_SOURCE,
};

pub(super) async fn post_ping(
    AxState(state): AxState<Arc<ApiState>>,
    Path(check): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitReply>), AppError> {
    let agent = state.authenticate(&headers, None)?;
    let check = CheckId::new(check).map_err(|e| invalid("path.check", e.to_string()))?;
    state.rate_limit(&agent)?;
    {
        let read = state.shared.read_state();
        let spec = read
            .checks
            .get(&check)
            .ok_or_else(|| AppError::NotFound(format!("check '{check}' is not defined")))?;
        let host = read
            .projections
            .registry
            .agents
            .get(&agent)
            .map(|a| &a.host);
        if !host.is_some_and(|h| spec.may_be_pinged_from(h)) {
            return Err(AppError::Forbidden(format!(
                "agent '{agent}' may not ping check '{check}': only agents of the hosts in its ping_hosts (or of a deadline check's host) may"
            )));
        }
    }
    let bytes = body_bytes(body)?;
    let ping: PingBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PingBody::default()
    } else {
        parse_json(&bytes)?
    };
    let envelope = Envelope {
        id: ping.id.unwrap_or_default(),
        time: Utc::now(),
        source: AGENT_SOURCE.into(),
        actor: Actor::agent(agent.as_str()),
        causation: None,
        schema: SCHEMA_VERSION,
        event: Event::Check(CheckEvent::Pinged { check }),
    };
    let blocked = state.is_blocked(&agent);
    let reply = state.submit(vec![envelope], blocked).await?;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}
