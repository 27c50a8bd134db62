//! Given events, when folded, then state — one scenario per behaviour.

use chrono::{DateTime, Duration, Utc};
use fleetbus_projections::{AlertKind, AlertState, HostState, JobState, Liveness, Projections};
use fleetbus_schemas::events::agent::{
    AgentEventKind, AgentNotice, AgentReport, Resources, ServiceObservation, ServiceState,
};
use fleetbus_schemas::events::host::{HostEvent, HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::{JobEvent, JobOutcome, RunType};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceManager, ServiceSpec};
use fleetbus_schemas::events::{AgentEvent, AlertEvent, DomainEvent, Event, Severity};
use fleetbus_schemas::{Actor, AlertId, Envelope, EventId, JobId, UserRole};

struct Given {
    p: Projections,
    seq: u64,
    t0: DateTime<Utc>,
}

impl Given {
    fn new() -> Self {
        Self {
            p: Projections::default(),
            seq: 0,
            t0: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        }
    }
    /// Applies an event at t0 + `secs`; returns its id.
    fn at(&mut self, secs: i64, event: Event) -> EventId {
        self.seq += 1;
        let mut env = Envelope::new(
            "test",
            Actor::user("alice", UserRole::Operator),
            None,
            event,
        );
        env.time = self.t0 + Duration::seconds(secs);
        self.p.apply(self.seq, &env);
        env.id
    }
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn host(name: &str) -> Event {
    Event::Host(HostEvent::Registered(HostSpec {
        host: id(name),
        address: "127.0.0.2".into(),
        port: 22,
        user: "fleet".into(),
        tags: vec!["web".into()],
        roles: vec![],
        host_key_policy: HostKeyPolicy::AcceptNew,
        allow_adhoc: false,
        disabled: false,
    }))
}

fn service(host: &str, name: &str, expected_running: bool) -> Event {
    Event::Service(ServiceEvent::Registered(ServiceSpec {
        host: id(host),
        name: id(name),
        manager: ServiceManager::Runit,
        unit: format!("/srv/sv/{name}"),
        actions: vec![ServiceAction::Status, ServiceAction::Restart],
        log_path: None,
        expected_running,
    }))
}

fn report(host: &str, services: &[(&str, ServiceState)]) -> Event {
    Event::Agent(AgentEvent::Reported(AgentReport {
        agent: id(host),
        host: id(host),
        agent_version: "0.1.0".into(),
        resources: Resources {
            cpu_pct: 10.0,
            mem_total_kb: 100,
            mem_used_kb: 50,
            ..Resources::default()
        },
        services: services
            .iter()
            .map(|(name, state)| ServiceObservation {
                name: id(name),
                state: *state,
                detail: None,
            })
            .collect(),
        config_version: None,
        config_hash: None,
    }))
}

fn notice(host: &str, kind: AgentEventKind, severity: Severity) -> Event {
    Event::Agent(AgentEvent::Raised(AgentNotice {
        agent: id(host),
        host: id(host),
        kind,
        severity,
        message: "m".into(),
        service: None,
        fields: Default::default(),
    }))
}

#[test]
fn a_registered_host_is_pending_until_heard_from_then_ok() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(0, service("web-1", "nginx", true));
    assert_eq!(g.p.fleet.hosts[&id("web-1")].state(), HostState::Pending);
    g.at(10, report("web-1", &[("nginx", ServiceState::Running)]));
    let h = &g.p.fleet.hosts[&id("web-1")];
    assert_eq!(h.state(), HostState::Ok);
    assert_eq!(h.services[&id("nginx")].state, ServiceState::Running);
    assert_eq!(h.recent.len(), 1);
    assert_eq!(h.recent[0].mem_pct, 50.0);
}

#[test]
fn a_failed_service_warns_opens_one_alert_and_recovery_resolves_it() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(0, service("web-1", "nginx", true));
    g.at(1, report("web-1", &[("nginx", ServiceState::Running)]));
    let opening = g.at(2, report("web-1", &[("nginx", ServiceState::Failed)]));
    g.at(3, report("web-1", &[("nginx", ServiceState::Failed)]));
    assert_eq!(g.p.fleet.hosts[&id("web-1")].state(), HostState::Warn);
    let open: Vec<_> = g.p.alerts.open_alerts().collect();
    assert_eq!(open.len(), 1, "a condition that holds opens one alert");
    assert_eq!(
        open[0].id,
        AlertId(opening.0),
        "alert id is the opening event's id"
    );
    assert_eq!(open[0].kind, AlertKind::ServiceDown);
    g.at(4, report("web-1", &[("nginx", ServiceState::Running)]));
    assert_eq!(g.p.alerts.open_alerts().count(), 0);
    assert_eq!(
        g.p.alerts.alerts[&AlertId(opening.0)].state,
        AlertState::Resolved
    );
    let history =
        g.p.history
            .page(Some(&id("web-1")), Some(&id("nginx")), None, 10);
    assert_eq!(history.len(), 3, "running → failed → running");
    assert!(history[0].seq > history[1].seq, "newest first");
}

#[test]
fn a_stopped_service_not_expected_to_run_opens_no_alert() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(0, service("web-1", "batch", false));
    g.at(1, report("web-1", &[("batch", ServiceState::Stopped)]));
    assert_eq!(g.p.alerts.open_alerts().count(), 0);
}

#[test]
fn error_notices_open_alerts_calm_or_clearing_notices_resolve_them() {
    let mut g = Given::new();
    g.at(
        0,
        notice("db-1", AgentEventKind::BackupFailed, Severity::Error),
    );
    g.at(
        1,
        notice("db-1", AgentEventKind::DiskFull, Severity::Critical),
    );
    g.at(2, notice("db-1", AgentEventKind::Login, Severity::Info));
    assert_eq!(g.p.alerts.open_alerts().count(), 2);
    g.at(
        3,
        notice("db-1", AgentEventKind::BackupSucceeded, Severity::Info),
    );
    assert_eq!(g.p.alerts.open_alerts().count(), 1);
    g.at(4, notice("db-1", AgentEventKind::DiskFull, Severity::Info));
    assert_eq!(g.p.alerts.open_alerts().count(), 0);
    let counts = g.p.counts.last_24h(&id("db-1"), g.t0 + Duration::hours(1));
    assert_eq!((counts.total, counts.errors), (5, 2));
    let later = g.p.counts.last_24h(&id("db-1"), g.t0 + Duration::hours(30));
    assert_eq!(later.total, 0, "older than 24 hours");
}

#[test]
fn ack_then_manual_resolve_records_who_and_frees_the_key() {
    let mut g = Given::new();
    let opening = g.at(0, notice("db-1", AgentEventKind::OomKill, Severity::Error));
    let alert = AlertId(opening.0);
    g.at(
        1,
        Event::Alert(AlertEvent::Acknowledged {
            alert,
            note: "on it".into(),
        }),
    );
    assert_eq!(g.p.alerts.alerts[&alert].state, AlertState::Acknowledged);
    assert_eq!(
        g.p.alerts.alerts[&alert].acknowledged_by.as_deref(),
        Some("alice")
    );
    g.at(
        2,
        Event::Alert(AlertEvent::Resolved {
            alert,
            note: String::new(),
        }),
    );
    assert_eq!(g.p.alerts.alerts[&alert].state, AlertState::Resolved);
    let again = g.at(3, notice("db-1", AgentEventKind::OomKill, Severity::Error));
    assert_ne!(again.0, opening.0);
    assert_eq!(
        g.p.alerts.open_alerts().count(),
        1,
        "the same condition opens a new incident"
    );
}

#[test]
fn agent_liveness_moves_host_state_and_opens_agent_down_alert() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(
        0,
        Event::Agent(AgentEvent::KeyIssued {
            agent: id("web-1"),
            host: id("web-1"),
            key_id: "k".into(),
            key_hash: "00".repeat(32),
        }),
    );
    g.at(1, report("web-1", &[]));
    let last_seen = g.t0;
    g.at(
        100,
        Event::Agent(AgentEvent::WentStale {
            agent: id("web-1"),
            last_seen,
        }),
    );
    assert_eq!(g.p.fleet.hosts[&id("web-1")].state(), HostState::Warn);
    g.at(
        200,
        Event::Agent(AgentEvent::WentDown {
            agent: id("web-1"),
            last_seen,
        }),
    );
    assert_eq!(g.p.fleet.hosts[&id("web-1")].state(), HostState::Down);
    assert_eq!(
        g.p.alerts.open_alerts().next().map(|a| a.kind),
        Some(AlertKind::AgentDown)
    );
    g.at(300, report("web-1", &[]));
    assert_eq!(g.p.fleet.hosts[&id("web-1")].liveness, Some(Liveness::Live));
    assert_eq!(g.p.alerts.open_alerts().count(), 0);
    g.at(
        301,
        Event::Agent(AgentEvent::Blocked {
            agent: id("web-1"),
            reason: "x".into(),
        }),
    );
    assert_eq!(g.p.fleet.hosts[&id("web-1")].state(), HostState::Blocked);
    assert!(g.p.registry.is_blocked(&id("web-1")));
}

#[test]
fn host_key_mismatch_opens_a_critical_alert_until_a_key_is_pinned() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(
        1,
        Event::Host(HostEvent::KeyMismatch {
            host: id("web-1"),
            expected: "SHA256:a".into(),
            presented: "SHA256:b".into(),
        }),
    );
    let alert = g.p.alerts.open_alerts().next().cloned().unwrap();
    assert_eq!(
        (alert.kind, alert.severity),
        (AlertKind::HostKeyMismatch, Severity::Critical)
    );
    g.at(
        2,
        Event::Host(HostEvent::KeyPinned {
            host: id("web-1"),
            algorithm: "ssh-ed25519".into(),
            fingerprint: "SHA256:b".into(),
        }),
    );
    assert_eq!(g.p.alerts.open_alerts().count(), 0);
    assert_eq!(g.p.registry.host_keys[&id("web-1")].fingerprint, "SHA256:b");
}

#[test]
fn redacted_registry_carries_no_credential_material() {
    let mut g = Given::new();
    g.at(
        0,
        Event::Agent(AgentEvent::KeyIssued {
            agent: id("web-1"),
            host: id("web-1"),
            key_id: "k".into(),
            key_hash: "ab".repeat(32),
        }),
    );
    g.at(
        1,
        Event::User(fleetbus_schemas::events::UserEvent::Added {
            user: id("admin"),
            role: UserRole::Admin,
            password_hash: "$argon2id$secret".into(),
        }),
    );
    let text = format!("{:?}", g.p.registry_redacted());
    assert!(
        !text.contains(&"ab".repeat(32)) && !text.contains("argon2id"),
        "{text}"
    );
}

#[test]
fn jobs_follow_their_lifecycle() {
    let mut g = Given::new();
    let job = JobId::new();
    // Built from the schema's own sample so new fields don't break this test.
    let mut scheduled = <JobEvent as DomainEvent>::samples().remove(0);
    if let JobEvent::Scheduled { job: j, host, .. } = &mut scheduled {
        *j = job;
        *host = id("web-1");
    } else {
        panic!("first job sample is Scheduled");
    }
    g.at(0, Event::Job(scheduled));
    g.at(
        1,
        Event::Job(JobEvent::Started {
            job,
            host: id("web-1"),
        }),
    );
    assert_eq!(g.p.jobs.jobs[&job].state, JobState::Running);
    g.at(
        2,
        Event::Job(JobEvent::Failed {
            job,
            outcome: JobOutcome {
                exit_code: Some(3),
                duration_ms: 1000,
                run_type: RunType::Batch,
                output_bytes: 10,
                tail: "boom".into(),
            },
            failed_step: Some(2),
            reason: "step 2 exited 3".into(),
        }),
    );
    let view = &g.p.jobs.jobs[&job];
    assert_eq!((view.state, view.failed_step), (JobState::Failed, Some(2)));
    assert_eq!(view.actor.name, "alice");
}

#[test]
fn reapplying_old_sequences_changes_nothing_and_snapshots_round_trip() {
    let mut g = Given::new();
    g.at(0, host("web-1"));
    g.at(1, report("web-1", &[("nginx", ServiceState::Failed)]));
    let before = g.p.clone();
    let mut env = Envelope::new("test", Actor::service("t"), None, report("web-1", &[]));
    env.time = g.t0;
    g.p.apply(1, &env);
    assert_eq!(g.p, before);
    let bytes = fleetbus_schemas::encode(&g.p).unwrap();
    let back: Projections = fleetbus_schemas::decode(&bytes).unwrap();
    assert_eq!(back, g.p);
    serde_json::to_string(&g.p).expect("projections serialise to JSON for the web");
}

#[test]
fn resolved_alerts_are_bounded_while_open_ones_are_all_kept() {
    let mut g = Given::new();
    let first = g.at(0, notice("db-1", AgentEventKind::OomKill, Severity::Error));
    let max = fleetbus_projections::alerts::MAX_RESOLVED;
    for i in 0..(max as i64 + 10) {
        g.at(
            2 * i + 1,
            notice("db-1", AgentEventKind::OomKill, Severity::Info),
        );
        g.at(
            2 * i + 2,
            notice("db-1", AgentEventKind::OomKill, Severity::Error),
        );
    }
    let resolved =
        g.p.alerts
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Resolved)
            .count();
    assert_eq!(resolved, max, "only the newest resolved alerts are kept");
    assert!(
        !g.p.alerts.alerts.contains_key(&AlertId(first.0)),
        "the oldest is forgotten"
    );
    assert_eq!(g.p.alerts.open_alerts().count(), 1, "the open one is kept");
}
