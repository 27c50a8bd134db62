//! `POST /v1/checks/{check}/ping`: who may ping which check.
//!
//! A check is defined by the scheduler (`check.<id>.defined`); ingest folds those events into
//! [`Checks`]. The rule lives with the definition ([`CheckSpec::may_be_pinged_from`]): an agent
//! may ping a check when its host (the host its key was issued for) is in the check's
//! `ping_hosts`, or is the host of a deadline check. Answers, after authentication (401):
//! 422 for a malformed check id, 404 for a check that is not defined (or was deleted), 403 for
//! an agent whose host may not ping it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use fleetbus_schemas::events::check::CheckSpec;
use fleetbus_schemas::events::{CheckEvent, Event};
use fleetbus_schemas::{Actor, CheckId, Envelope, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

use super::{
    body_bytes, invalid, parse_json, ApiState, AppError, PingBody, SubmitReply, AGENT_SOURCE,
};

/// The checks that exist, with their definitions: a fold of the check events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    defined: BTreeMap<CheckId, CheckSpec>,
}

impl Checks {
    /// Folds one event (only `check.defined` and `check.deleted` matter).
    pub fn apply(&mut self, envelope: &Envelope) {
        match &envelope.event {
            Event::Check(CheckEvent::Defined(spec)) => {
                self.defined.insert(spec.check.clone(), spec.clone());
            }
            Event::Check(CheckEvent::Deleted { check }) => {
                self.defined.remove(check);
            }
            _ => {}
        }
    }

    /// The definition of a check, if it exists.
    pub fn get(&self, check: &CheckId) -> Option<&CheckSpec> {
        self.defined.get(check)
    }
}

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

#[cfg(test)]
mod tests {
    use fleetbus_schemas::events::check::CheckKind;
    use fleetbus_schemas::{Actor, HostId};

    use super::*;

    fn event(event: CheckEvent) -> Envelope {
        Envelope::new(
            "scheduler",
            Actor::service("scheduler"),
            None,
            Event::Check(event),
        )
    }

    #[test]
    fn checks_fold_definitions_and_deletions_and_survive_a_snapshot() {
        let web: HostId = "web-1".parse().expect("host");
        let db: HostId = "db-1".parse().expect("host");
        let mut checks = Checks::default();
        checks.apply(&event(CheckEvent::Defined(CheckSpec {
            check: "cron".parse().expect("check"),
            kind: CheckKind::Heartbeat {
                period_s: 60,
                grace_s: 0,
            },
            ping_hosts: vec![web.clone()],
        })));
        checks.apply(&event(CheckEvent::Defined(CheckSpec {
            check: "backup".parse().expect("check"),
            kind: CheckKind::Deadline {
                event_kind: "backup_succeeded".into(),
                host: db.clone(),
                by: "05:00".into(),
                time_zone: "UTC".into(),
            },
            ping_hosts: vec![],
        })));
        let cron: CheckId = "cron".parse().expect("check");
        let backup: CheckId = "backup".parse().expect("check");
        let spec = checks.get(&cron).expect("cron");
        assert!(spec.may_be_pinged_from(&web) && !spec.may_be_pinged_from(&db));
        let spec = checks.get(&backup).expect("backup");
        assert!(spec.may_be_pinged_from(&db) && !spec.may_be_pinged_from(&web));

        let bytes = fleetbus_schemas::encode(&checks).expect("encode");
        let back: Checks = fleetbus_schemas::decode(&bytes).expect("decode");
        assert_eq!(back, checks);

        checks.apply(&event(CheckEvent::Deleted {
            check: cron.clone(),
        }));
        assert!(checks.get(&cron).is_none());
    }
}
