//! Given events, when time passes, then decisions — and a fresh core folded from the same log
//! decides nothing twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use fleetbus_schemas::commands::{JobCommand, ScheduleCommand, Targets};
use fleetbus_schemas::events::agent::{AgentEventKind, AgentNotice, AgentReport, Resources};
use fleetbus_schemas::events::check::{CheckKind, CheckSpec, CheckState};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::TaskSpec;
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{
    AgentEvent, AlertEvent, CheckEvent, HostEvent, JobEvent, ScheduleEvent, ServiceEvent,
    SystemEvent,
};
use fleetbus_schemas::{
    Actor, Command, CommandEnvelope, CommandId, Envelope, Event, EventId, JobId, Severity,
    UserRole, SCHEMA_VERSION,
};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn cfg() -> CoreConfig {
    CoreConfig {
        stale_after: Duration::seconds(90),
        down_after: Duration::seconds(300),
        missed_after: Duration::seconds(30),
        // Retention has its own test; elsewhere its daily event would only be noise.
        retention: None,
        output_max_age: Duration::days(7),
        history_max_age: Duration::days(90),
    }
}

/// A log: what was folded, in order; `restart` folds it into a fresh core.
struct World {
    core: Core,
    log: Vec<Envelope>,
    start: DateTime<Utc>,
    cfg: CoreConfig,
}

impl World {
    fn new(start: DateTime<Utc>) -> World {
        World::with(cfg(), start)
    }
    fn with(cfg: CoreConfig, start: DateTime<Utc>) -> World {
        World {
            core: Core::new(cfg.clone(), start),
            log: vec![],
            start,
            cfg,
        }
    }
    fn given(&mut self, at: DateTime<Utc>, actor: Actor, event: Event) {
        let env = Envelope {
            id: EventId::new(),
            time: at,
            source: "test".into(),
            actor,
            causation: None,
            schema: SCHEMA_VERSION,
            event,
        };
        self.core.apply(&env);
        self.log.push(env);
    }
    fn record(&mut self, out: &Outputs) -> Vec<Event> {
        // What the bus would deliver back: fold it (idempotence) and keep it in the log.
        for e in &out.events {
            self.core.apply(e);
            self.log.push(e.clone());
        }
        out.events.iter().map(|e| e.event.clone()).collect()
    }
    fn sweep(&mut self, at: DateTime<Utc>) -> Vec<Event> {
        let out = self.core.sweep(at);
        self.record(&out)
    }
    fn fire(&mut self, at: DateTime<Utc>) -> (Vec<CommandEnvelope>, Vec<Event>) {
        let out = self.core.fire_due(at);
        let events = self.record(&out);
        (out.commands, events)
    }
    fn restart(&mut self) {
        let mut core = Core::new(self.cfg.clone(), self.start);
        for e in &self.log {
            core.apply(e);
        }
        self.core = core;
    }
    fn command(&mut self, at: DateTime<Utc>, actor: Actor, command: Command) -> Vec<Event> {
        let cmd = CommandEnvelope {
            id: CommandId::new(),
            time: at,
            actor,
            schema: SCHEMA_VERSION,
            command,
        };
        let out = self.core.handle_command(at, &cmd.subject(), &cmd);
        self.record(&out)
    }
}

fn admin() -> Actor {
    Actor::user("alice", UserRole::Admin)
}

fn report(agent: &str) -> Event {
    Event::Agent(AgentEvent::Reported(AgentReport {
        agent: agent.parse().unwrap(),
        host: agent.parse().unwrap(),
        agent_version: "0.1.0".into(),
        resources: Resources::default(),
        services: vec![],
        config_version: None,
        config_hash: None,
    }))
}

fn type_names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.type_name()).collect()
}

#[test]
fn agent_goes_stale_then_down_then_recovers_once_each_even_across_restarts() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.given(t0, Actor::agent("web-1"), report("web-1"));
    assert!(w.sweep(t0 + Duration::seconds(89)).is_empty());
    assert_eq!(
        type_names(&w.sweep(t0 + Duration::seconds(90))),
        ["went_stale"]
    );
    assert!(
        w.sweep(t0 + Duration::seconds(91)).is_empty(),
        "never repeated"
    );
    w.restart();
    assert!(
        w.sweep(t0 + Duration::seconds(120)).is_empty(),
        "not after a restart either"
    );
    assert_eq!(
        type_names(&w.sweep(t0 + Duration::seconds(300))),
        ["went_down"]
    );
    w.restart();
    assert!(w.sweep(t0 + Duration::seconds(400)).is_empty());
    assert_eq!(
        w.core.liveness(&"web-1".parse().unwrap()),
        Some(Liveness::Down)
    );

    w.given(
        t0 + Duration::seconds(500),
        Actor::agent("web-1"),
        report("web-1"),
    );
    assert_eq!(
        type_names(&w.sweep(t0 + Duration::seconds(501))),
        ["recovered"]
    );
    assert!(w.sweep(t0 + Duration::seconds(502)).is_empty());
    w.restart();
    assert!(w.sweep(t0 + Duration::seconds(503)).is_empty());
    assert_eq!(
        w.core.liveness(&"web-1".parse().unwrap()),
        Some(Liveness::Live)
    );
}

#[test]
fn an_agent_silent_past_both_thresholds_goes_straight_down() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.given(t0, Actor::agent("db-1"), report("db-1"));
    let events = w.sweep(t0 + Duration::hours(1));
    assert_eq!(type_names(&events), ["went_down"]);
    match &events[0] {
        Event::Agent(AgentEvent::WentDown { last_seen, .. }) => assert_eq!(*last_seen, t0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn blocked_agents_raise_nothing() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.given(t0, Actor::agent("web-2"), report("web-2"));
    w.given(
        t0,
        admin(),
        Event::Agent(AgentEvent::Blocked {
            agent: "web-2".parse().unwrap(),
            reason: "decommissioning".into(),
        }),
    );
    assert!(w.sweep(t0 + Duration::hours(2)).is_empty());
}

fn heartbeat(check: &str) -> Event {
    Event::Check(CheckEvent::Defined(CheckSpec {
        check: check.parse().unwrap(),
        kind: CheckKind::Heartbeat {
            period_s: 60,
            grace_s: 30,
        },
        ping_hosts: vec![],
    }))
}

fn state_changes(events: &[Event]) -> Vec<(CheckState, CheckState)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Check(CheckEvent::StateChanged { from, to, .. }) => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeat_check_walks_new_up_late_down_up_with_one_event_per_flip() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.given(t0, admin(), heartbeat("cron-ping"));
    assert!(
        w.sweep(t0 + Duration::hours(1)).is_empty(),
        "new stays new until pinged"
    );
    let p1 = t0 + Duration::hours(1);
    let ping = Event::Check(CheckEvent::Pinged {
        check: "cron-ping".parse().unwrap(),
    });
    w.given(p1, Actor::service("ingest"), ping.clone());
    use CheckState::*;
    assert_eq!(
        state_changes(&w.sweep(p1 + Duration::seconds(1))),
        [(New, Up)]
    );
    assert!(w.sweep(p1 + Duration::seconds(59)).is_empty());
    assert_eq!(
        state_changes(&w.sweep(p1 + Duration::seconds(60))),
        [(Up, Late)]
    );
    w.restart();
    assert!(w.sweep(p1 + Duration::seconds(70)).is_empty());
    assert_eq!(
        state_changes(&w.sweep(p1 + Duration::seconds(90))),
        [(Late, Down)]
    );
    w.restart();
    assert!(w.sweep(p1 + Duration::seconds(600)).is_empty());
    // An agent heartbeat naming the check counts as a ping.
    let p2 = p1 + Duration::seconds(700);
    let mut fields = BTreeMap::new();
    fields.insert("check".to_owned(), "cron-ping".to_owned());
    w.given(
        p2,
        Actor::agent("web-1"),
        Event::Agent(AgentEvent::Raised(AgentNotice {
            agent: "web-1".parse().unwrap(),
            host: "web-1".parse().unwrap(),
            kind: AgentEventKind::Heartbeat,
            severity: Severity::Info,
            message: "alive".into(),
            service: None,
            fields,
        })),
    );
    assert_eq!(
        state_changes(&w.sweep(p2 + Duration::seconds(1))),
        [(Down, Up)]
    );
    assert_eq!(w.core.check_state(&"cron-ping".parse().unwrap()), Some(Up));
}

#[test]
fn paused_checks_raise_nothing_and_resume_as_new() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.given(t0, admin(), heartbeat("cron-ping"));
    w.given(
        t0,
        Actor::service("ingest"),
        Event::Check(CheckEvent::Pinged {
            check: "cron-ping".parse().unwrap(),
        }),
    );
    assert_eq!(
        state_changes(&w.sweep(t0)),
        [(CheckState::New, CheckState::Up)]
    );
    let events = w.command(
        t0,
        Actor::user("bob", UserRole::Operator),
        Command::Check(CheckCommand::Pause {
            check: "cron-ping".parse().unwrap(),
        }),
    );
    assert_eq!(
        state_changes(&events),
        [(CheckState::Up, CheckState::Paused)]
    );
    assert!(w.sweep(t0 + Duration::days(1)).is_empty());
    let again = w.command(
        t0,
        admin(),
        Command::Check(CheckCommand::Pause {
            check: "cron-ping".parse().unwrap(),
        }),
    );
    assert!(matches!(
        &again[0],
        Event::System(SystemEvent::CommandRejected {
            reason: RejectKind::Conflict,
            ..
        })
    ));
    let resumed = w.command(
        t0 + Duration::days(1),
        admin(),
        Command::Check(CheckCommand::Resume {
            check: "cron-ping".parse().unwrap(),
        }),
    );
    assert_eq!(
        state_changes(&resumed),
        [(CheckState::Paused, CheckState::New)]
    );
    assert!(w.sweep(t0 + Duration::days(2)).is_empty());
}

fn backup_done(host: &str) -> Event {
    Event::Agent(AgentEvent::Raised(AgentNotice {
        agent: host.parse().unwrap(),
        host: host.parse().unwrap(),
        kind: AgentEventKind::BackupSucceeded,
        severity: Severity::Info,
        message: "backup ok".into(),
        service: None,
        fields: BTreeMap::new(),
    }))
}

#[test]
fn deadline_missed_raises_once_and_the_next_event_clears_it() {
    // 05:00 Europe/Helsinki in June is 02:00Z.
    let defined = t("2026-06-01T12:00:00Z");
    let mut w = World::new(defined);
    w.given(
        defined,
        admin(),
        Event::Check(CheckEvent::Defined(CheckSpec {
            check: "nightly-backup".parse().unwrap(),
            kind: CheckKind::Deadline {
                event_kind: "backup_succeeded".into(),
                host: "db-1".parse().unwrap(),
                by: "05:00".into(),
                time_zone: "Europe/Helsinki".into(),
            },
            ping_hosts: vec![],
        })),
    );
    // The first window (defined 15:00 local → next 05:00) is partial: not judged.
    assert!(w.sweep(t("2026-06-02T02:00:01Z")).is_empty());
    // On time for the 3rd: nothing.
    w.given(
        t("2026-06-02T23:00:00Z"),
        Actor::agent("db-1"),
        backup_done("db-1"),
    );
    assert!(w.sweep(t("2026-06-03T02:00:01Z")).is_empty());
    // Nothing before the 4th's deadline: missed, alert raised, once.
    let events = w.sweep(t("2026-06-04T02:00:00Z"));
    assert_eq!(type_names(&events), ["deadline_missed", "raised"]);
    match &events[0] {
        Event::Check(CheckEvent::DeadlineMissed { deadline, .. }) => {
            assert_eq!(*deadline, t("2026-06-04T02:00:00Z"))
        }
        other => panic!("{other:?}"),
    }
    match &events[1] {
        Event::Alert(AlertEvent::Raised { key, host, .. }) => {
            assert_eq!(key, "deadline-nightly-backup");
            assert_eq!(host.as_ref().map(|h| h.as_str()), Some("db-1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(w.sweep(t("2026-06-04T03:00:00Z")).is_empty());
    w.restart();
    assert!(
        w.sweep(t("2026-06-04T04:00:00Z")).is_empty(),
        "not after a restart"
    );
    // The wrong host's backup does not count.
    w.given(
        t("2026-06-04T05:00:00Z"),
        Actor::agent("db-2"),
        backup_done("db-2"),
    );
    assert!(w.sweep(t("2026-06-04T05:00:01Z")).is_empty());
    w.given(
        t("2026-06-04T06:00:00Z"),
        Actor::agent("db-1"),
        backup_done("db-1"),
    );
    let cleared = w.sweep(t("2026-06-04T06:00:01Z"));
    assert_eq!(type_names(&cleared), ["cleared"]);
    assert!(
        w.sweep(t("2026-06-05T02:00:01Z")).is_empty(),
        "on time for the 5th"
    );
    w.restart();
    assert!(w.sweep(t("2026-06-05T02:00:02Z")).is_empty());
}

fn create(id: &str, cron: &str, tz: &str, missed: MissedPolicy) -> Command {
    Command::Schedule(ScheduleCommand::Create(ScheduleSpec {
        schedule: id.parse().unwrap(),
        cron: cron.into(),
        time_zone: tz.into(),
        action: ScheduleAction::Publish {
            command: Box::new(Command::Job(JobCommand::Cancel {
                job: JobId(ulid::Ulid::from_parts(1, 1)),
            })),
        },
        missed,
    }))
}

fn rejected(events: &[Event]) -> Option<(RejectKind, String)> {
    match events {
        [Event::System(SystemEvent::CommandRejected {
            reason, message, ..
        })] => Some((reason.clone(), message.clone())),
        _ => None,
    }
}

#[test]
fn each_slot_fires_once_with_ids_derived_from_schedule_and_slot() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    let created = w.command(
        t0,
        admin(),
        create("tick", "*/10 * * * * *", "UTC", MissedPolicy::CatchUpOnce),
    );
    assert_eq!(type_names(&created), ["created"]);
    let mut fired = vec![];
    let mut now = t0;
    for _ in 0..40 {
        now += Duration::milliseconds(2_500);
        let (cmds, events) = w.fire(now);
        for (c, e) in cmds.iter().zip(&events) {
            match e {
                Event::Schedule(ScheduleEvent::Fired { slot, commands, .. }) => {
                    assert_eq!(commands, &vec![c.id]);
                    assert_eq!(c.id, ids::slot_command("tick", *slot, ""));
                    assert_eq!(
                        c.actor,
                        admin(),
                        "fired commands act as the schedule's owner"
                    );
                    fired.push(*slot);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let expected: Vec<_> = (1..=10).map(|i| t0 + Duration::seconds(10 * i)).collect();
    assert_eq!(fired, expected);
    w.restart();
    assert!(
        w.fire(now).0.is_empty(),
        "a restarted scheduler does not fire them again"
    );
}

#[test]
fn two_schedulers_folding_the_same_log_publish_the_same_ids() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut a = World::new(t0);
    a.command(
        t0,
        admin(),
        create("tick", "* * * * * *", "UTC", MissedPolicy::CatchUpOnce),
    );
    let mut b = World::new(t0);
    for e in &a.log {
        b.core.apply(e);
    }
    let at = t0 + Duration::seconds(5);
    let ca = a.core.fire_due(at);
    let cb = b.core.fire_due(at);
    let ids_a: Vec<_> = ca.commands.iter().map(|c| c.id).collect();
    let ids_b: Vec<_> = cb.commands.iter().map(|c| c.id).collect();
    assert_eq!(ids_a.len(), 5);
    assert_eq!(ids_a, ids_b);
    let ev_a: Vec<_> = ca.events.iter().map(|e| e.id).collect();
    let ev_b: Vec<_> = cb.events.iter().map(|e| e.id).collect();
    assert_eq!(ev_a, ev_b);
}

fn missed(events: &[Event]) -> Option<(u32, MissedPolicy, DateTime<Utc>, DateTime<Utc>)> {
    events.iter().find_map(|e| match e {
        Event::Schedule(ScheduleEvent::SlotsMissed {
            count,
            policy,
            first,
            last,
            ..
        }) => Some((*count, *policy, *first, *last)),
        _ => None,
    })
}

#[test]
fn downtime_catch_up_once_fires_the_last_missed_slot_once() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.command(
        t0,
        admin(),
        create("minutely", "0 * * * * *", "UTC", MissedPolicy::CatchUpOnce),
    );
    let back = t0 + Duration::seconds(10 * 60 + 45);
    let (cmds, events) = w.fire(back);
    let (count, policy, first, last) = missed(&events).unwrap();
    assert_eq!((count, policy), (10, MissedPolicy::CatchUpOnce));
    assert_eq!(first, t0 + Duration::minutes(1));
    assert_eq!(last, t0 + Duration::minutes(10));
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].id, ids::slot_command("minutely", last, ""));
    w.restart();
    let (cmds, events) = w.fire(back + Duration::seconds(1));
    assert!(cmds.is_empty() && events.is_empty());
    let (cmds, _) = w.fire(t0 + Duration::minutes(11));
    assert_eq!(cmds.len(), 1, "the schedule carries on");
}

#[test]
fn downtime_skip_fires_nothing_but_records_the_miss() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.command(
        t0,
        admin(),
        create("minutely", "0 * * * * *", "UTC", MissedPolicy::Skip),
    );
    let (cmds, events) = w.fire(t0 + Duration::seconds(5 * 60 + 45));
    assert!(cmds.is_empty());
    assert_eq!(type_names(&events), ["slots_missed"]);
    assert_eq!(
        missed(&events).map(|m| (m.0, m.1)),
        Some((5, MissedPolicy::Skip))
    );
}

#[test]
fn paused_schedules_fire_nothing_and_resume_without_counting_the_pause_as_missed() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    w.command(
        t0,
        admin(),
        create("tick", "* * * * * *", "UTC", MissedPolicy::CatchUpOnce),
    );
    let pause = Command::Schedule(ScheduleCommand::Pause {
        schedule: "tick".parse().unwrap(),
    });
    assert_eq!(type_names(&w.command(t0, admin(), pause)), ["paused"]);
    assert!(w.fire(t0 + Duration::minutes(5)).0.is_empty());
    let resume = Command::Schedule(ScheduleCommand::Resume {
        schedule: "tick".parse().unwrap(),
    });
    let at = t0 + Duration::minutes(5);
    w.command(at, admin(), resume);
    let (cmds, events) = w.fire(at + Duration::seconds(2));
    assert_eq!(cmds.len(), 2);
    assert!(missed(&events).is_none());
}

#[test]
fn daily_helsinki_schedule_fires_through_both_dst_changes_once_per_day() {
    let t0 = t("2026-03-27T12:00:00Z");
    let mut w = World::new(t0);
    w.command(
        t0,
        admin(),
        create(
            "nightly",
            "0 30 3 * * *",
            "Europe/Helsinki",
            MissedPolicy::CatchUpOnce,
        ),
    );
    let mut slots = vec![];
    let mut now = t0;
    while now < t("2026-03-31T00:00:00Z") {
        now += Duration::minutes(10);
        let (_, events) = w.fire(now);
        for e in events {
            if let Event::Schedule(ScheduleEvent::Fired { slot, .. }) = e {
                slots.push(slot);
            }
        }
    }
    assert_eq!(
        slots,
        [
            t("2026-03-28T01:30:00Z"), // 03:30 EET
            t("2026-03-29T01:00:00Z"), // 03:30 does not exist: 04:00 EEST
            t("2026-03-30T00:30:00Z"), // 03:30 EEST
        ]
    );
    let t1 = t("2026-10-24T12:00:00Z");
    let mut w = World::new(t1);
    w.command(
        t1,
        admin(),
        create(
            "nightly",
            "0 30 3 * * *",
            "Europe/Helsinki",
            MissedPolicy::CatchUpOnce,
        ),
    );
    let mut slots = vec![];
    let mut now = t1;
    while now < t("2026-10-26T12:00:00Z") {
        now += Duration::minutes(10);
        let (_, events) = w.fire(now);
        for e in events {
            if let Event::Schedule(ScheduleEvent::Fired { slot, .. }) = e {
                slots.push(slot);
            }
        }
    }
    assert_eq!(
        slots,
        [t("2026-10-25T00:30:00Z"), t("2026-10-26T01:30:00Z")],
        "03:30 happens twice on the 25th and fires once"
    );
}

#[test]
fn malformed_schedule_commands_are_rejected_with_the_reason() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    let (kind, msg) = rejected(&w.command(
        t0,
        admin(),
        create("a", "61 * * * * *", "UTC", MissedPolicy::Skip),
    ))
    .unwrap();
    assert_eq!(kind, RejectKind::Invalid);
    assert!(msg.contains("invalid cron expression"), "{msg}");
    let (kind, msg) = rejected(&w.command(
        t0,
        admin(),
        create("a", "0 * * * * *", "Europe/Atlantis", MissedPolicy::Skip),
    ))
    .unwrap();
    assert_eq!(kind, RejectKind::Invalid);
    assert!(
        msg.contains("unknown time zone \"Europe/Atlantis\""),
        "{msg}"
    );

    let run_task = |task: &str| {
        Command::Schedule(ScheduleCommand::Create(ScheduleSpec {
            schedule: "rotate".parse().unwrap(),
            cron: "0 0 4 * * *".into(),
            time_zone: "UTC".into(),
            action: ScheduleAction::RunTask {
                task: task.parse().unwrap(),
                params: BTreeMap::new(),
                targets: Targets {
                    tags: vec!["web".into()],
                    ..Targets::default()
                },
            },
            missed: MissedPolicy::Skip,
        }))
    };
    let (kind, msg) = rejected(&w.command(t0, admin(), run_task("rotate-logs"))).unwrap();
    assert_eq!(kind, RejectKind::NotFound);
    assert!(msg.contains("unknown task rotate-logs"), "{msg}");
    w.given(
        t0,
        Actor::service("executor"),
        Event::Job(JobEvent::TaskSaved(TaskSpec {
            task: "rotate-logs".parse().unwrap(),
            description: "rotate".into(),
            template: "logrotate".into(),
            params: vec![],
            sudo: false,
            idempotent: true,
            nice: None,
            ionice_class: None,
        })),
    );
    assert_eq!(
        type_names(&w.command(t0, admin(), run_task("rotate-logs"))),
        ["created"]
    );
    let (kind, _) = rejected(&w.command(t0, admin(), run_task("rotate-logs"))).unwrap();
    assert_eq!(kind, RejectKind::Conflict, "second create of the same id");

    let (kind, msg) = rejected(&w.command(
        t0,
        Actor::user("vera", UserRole::Viewer),
        create("b", "0 * * * * *", "UTC", MissedPolicy::Skip),
    ))
    .unwrap();
    assert_eq!(kind, RejectKind::Forbidden);
    assert!(msg.contains("vera"), "{msg}");
    let delete = Command::Schedule(ScheduleCommand::Delete {
        schedule: "nope".parse().unwrap(),
    });
    assert_eq!(
        rejected(&w.command(t0, admin(), delete)).map(|r| r.0),
        Some(RejectKind::NotFound)
    );
}

#[test]
fn poll_status_fires_one_status_action_per_service_of_the_selected_hosts() {
    let t0 = t("2026-06-01T12:00:00Z");
    let mut w = World::new(t0);
    let host = |id: &str, tags: &[&str], disabled: bool| {
        Event::Host(HostEvent::Registered(HostSpec {
            host: id.parse().unwrap(),
            address: "127.0.0.2".into(),
            port: 22,
            user: "fleet".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            roles: vec![],
            host_key_policy: HostKeyPolicy::AcceptNew,
            allow_adhoc: false,
            disabled,
        }))
    };
    let service = |h: &str, name: &str| {
        Event::Service(ServiceEvent::Registered(ServiceSpec {
            host: h.parse().unwrap(),
            name: name.parse().unwrap(),
            manager: ServiceManager::Systemd,
            unit: format!("{name}.service"),
            actions: vec![ServiceAction::Status, ServiceAction::Restart],
            log_path: None,
            expected_running: true,
        }))
    };
    for e in [
        host("web-1", &["web"], false),
        host("web-2", &["web"], true),
        host("db-1", &["db"], false),
        service("web-1", "nginx"),
        service("web-1", "sshd"),
        service("web-2", "nginx"),
        service("db-1", "postgres"),
    ] {
        w.given(t0, admin(), e);
    }
    let spec = ScheduleSpec {
        schedule: "poll-web".parse().unwrap(),
        cron: "0 * * * * *".into(),
        time_zone: "UTC".into(),
        action: ScheduleAction::PollStatus {
            targets: Targets {
                tags: vec!["web".into()],
                ..Targets::default()
            },
        },
        missed: MissedPolicy::Skip,
    };
    w.command(
        t0,
        admin(),
        Command::Schedule(ScheduleCommand::Create(spec)),
    );
    let (cmds, events) = w.fire(t0 + Duration::minutes(1));
    let polled: Vec<String> = cmds
        .iter()
        .map(|c| match &c.command {
            Command::Job(JobCommand::RunAction {
                host,
                service,
                action: ServiceAction::Status,
                ..
            }) => format!("{host}:{service}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        polled,
        ["web-1:nginx", "web-1:sshd"],
        "disabled hosts are not polled"
    );
    match &events[..] {
        [Event::Schedule(ScheduleEvent::Fired { commands, .. })] => assert_eq!(commands.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn retention_runs_daily_purges_old_output_and_is_not_repeated_after_restart() {
    let t0 = t("2026-06-01T00:00:00Z");
    let retention = CoreConfig {
        retention: Some(SlotSchedule::parse("0 30 3 * * *", "UTC").unwrap()),
        ..cfg()
    };
    let mut w = World::with(retention, t0);
    let ended = |job: JobId| {
        Event::Job(JobEvent::Cancelled {
            job,
            outcome: fleetbus_schemas::events::job::JobOutcome {
                exit_code: None,
                duration_ms: 1,
                run_type: fleetbus_schemas::events::job::RunType::Adhoc,
                output_bytes: 0,
                tail: String::new(),
            },
        })
    };
    let old = JobId::new();
    let young = JobId::new();
    w.given(
        t0 - Duration::days(10),
        Actor::service("executor"),
        ended(old),
    );
    w.given(t0, Actor::service("executor"), ended(young));
    assert!(w.sweep(t("2026-06-01T03:29:59Z")).is_empty());
    let out = w.core.sweep(t("2026-06-01T03:30:00Z"));
    assert_eq!(out.purge_jobs, vec![old]);
    let events = w.record(&out);
    match &events[..] {
        [Event::Schedule(ScheduleEvent::RetentionApplied {
            jobs_purged,
            history_cutoff,
            ..
        })] => {
            assert_eq!(*jobs_purged, 1);
            assert_eq!(
                *history_cutoff,
                t("2026-06-01T03:30:00Z") - Duration::days(90)
            );
        }
        other => panic!("{other:?}"),
    }
    w.restart();
    assert!(w.sweep(t("2026-06-01T12:00:00Z")).is_empty());
    assert!(w
        .core
        .sweep(t("2026-06-02T03:30:00Z"))
        .purge_jobs
        .is_empty());
}
