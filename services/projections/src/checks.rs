//! The checks that exist: a fold of the `check.defined` / `check.deleted` events, which ingest
//! keeps to authorize `POST /v1/checks/{check}/ping`.

use std::collections::BTreeMap;

use fleetbus_schemas::events::check::CheckSpec;
use fleetbus_schemas::events::{CheckEvent, Event};
use fleetbus_schemas::{CheckId, Envelope};
use serde::{Deserialize, Serialize};

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
