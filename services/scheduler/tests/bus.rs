//! The scheduler in-process against a real nats-server, on a hand-driven clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fleetbus_scheduler::{ids, TestClock};
use fleetbus_schemas::commands::{ScheduleCommand, Targets};
use fleetbus_schemas::events::agent::{AgentReport, Resources};
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{AgentEvent, SystemEvent};
use fleetbus_schemas::{Actor, Command, Envelope, Event, UserRole};
use tokio_util::sync::CancellationToken;

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), fleetbus_scheduler::SchedulerError>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(res, Ok(Ok(Ok(())))),
            "scheduler did not stop cleanly: {res:?}"
        );
    }
}

fn start(bus: &Bus, clock: &TestClock) -> Running {
    let shutdown = CancellationToken::new();
    let run =
        fleetbus_scheduler::run_with_clock(bus.config(), Arc::new(clock.clone()), shutdown.clone());
    let task = tokio::spawn(async move {
        let res = run.await;
        if let Err(e) = &res {
            // Visible in the failing test's output.
            eprintln!("scheduler stopped with an error: {e}");
        }
        res
    });
    Running { shutdown, task }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn rejections(events: &[Envelope]) -> Vec<(RejectKind, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::System(SystemEvent::CommandRejected {
                reason, message, ..
            }) => Some((reason.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn schedule_commands_become_events_or_rejections_naming_the_reason() {
    let bus = bus().await;
    let clock = TestClock::new(t("2026-06-01T12:00:00Z"));
    let sched = start(&bus, &clock);

    let ok = bus
        .send(admin(), publish_schedule("tick", "0 * * * * *"))
        .await;
    bus.send(admin(), publish_schedule("bad-cron", "0 * * * *"))
        .await;
    let mut bad_tz = publish_schedule("bad-tz", "0 * * * * *");
    if let Command::Schedule(ScheduleCommand::Create(spec)) = &mut bad_tz {
        spec.time_zone = "Europe/Atlantis".into();
    }
    bus.send(admin(), bad_tz).await;
    let unknown_task = Command::Schedule(ScheduleCommand::Create(ScheduleSpec {
        schedule: "rotate".parse().unwrap(),
        cron: "0 0 4 * * *".into(),
        time_zone: "Europe/Helsinki".into(),
        action: ScheduleAction::RunTask {
            task: "rotate-logs".parse().unwrap(),
            params: Default::default(),
            targets: Targets {
                hosts: vec!["web-1".parse().unwrap()],
                ..Targets::default()
            },
        },
        missed: MissedPolicy::Skip,
    }));
    bus.send(admin(), unknown_task).await;
    bus.send(
        Actor::user("vera", UserRole::Viewer),
        publish_schedule("mine", "0 * * * * *"),
    )
    .await;
    bus.publish_raw(
        "fleet.cmd.schedule.create",
        "garbage-1",
        b"\x93not a command".to_vec(),
    )
    .await;

    let events = bus
        .wait_events(15, |e| {
            rejections(e).len() >= 5 && count_type(e, "created") >= 1
        })
        .await;
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.event.type_name() == "created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].causation, Some(ok), "events name the command");
    assert_eq!(created[0].actor, admin());
    let r = rejections(&events);
    assert_eq!(r.len(), 5, "{r:?}");
    assert!(
        r.iter()
            .any(|(k, m)| *k == RejectKind::Invalid && m.contains("invalid cron expression")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|(k, m)| *k == RejectKind::Invalid
            && m.contains("unknown time zone \"Europe/Atlantis\"")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(k, m)| *k == RejectKind::NotFound && m.contains("unknown task rotate-logs")),
        "{r:?}"
    );
    assert!(r.iter().any(|(k, _)| *k == RejectKind::Forbidden), "{r:?}");
    assert!(
        r.iter()
            .any(|(k, m)| *k == RejectKind::Malformed && m.contains("cannot decode")),
        "{r:?}"
    );

    // The scheduler keeps running after bad input: the good schedule fires.
    clock.advance(chrono::Duration::minutes(1));
    let events = bus.wait_events(10, |e| count_type(e, "fired") >= 1).await;
    assert_eq!(count_type(&events, "fired"), 1);
    sched.stop().await;
}

#[tokio::test]
async fn a_driven_clock_fires_each_slot_once_and_a_restart_replays_without_refiring() {
    let bus = bus().await;
    let start_at = t("2026-06-01T12:00:00Z");
    let clock = TestClock::new(start_at);
    let sched = start(&bus, &clock);
    bus.send(admin(), publish_schedule("minutely", "0 * * * * *"))
        .await;
    bus.wait_events(10, |e| count_type(e, "created") == 1).await;

    for i in 1..=5 {
        clock.advance(chrono::Duration::minutes(1));
        let events = bus.wait_events(10, |e| count_type(e, "fired") >= i).await;
        assert_eq!(count_type(&events, "fired"), i);
    }
    sched.stop().await;

    // Restart at the same instant: the log says every slot so far fired.
    let sched = start(&bus, &clock);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_type(&bus.events().await, "fired"), 5);
    clock.advance(chrono::Duration::minutes(1));
    let events = bus.wait_events(10, |e| count_type(e, "fired") >= 6).await;
    sched.stop().await;

    let fired = fired(&events);
    let slots: Vec<_> = fired["minutely"].keys().copied().collect();
    let expected: Vec<_> = (1..=6)
        .map(|i| start_at + chrono::Duration::minutes(i))
        .collect();
    assert_eq!(slots, expected);
    assert!(fired["minutely"].values().all(|n| *n == 1));
    let commands = bus.job_commands().await;
    let ids: Vec<_> = commands.iter().map(|c| c.id).collect();
    let want: Vec<_> = expected
        .iter()
        .map(|s| ids::slot_command("minutely", *s, ""))
        .collect();
    assert_eq!(ids, want, "one command per slot, with the derived id");
}

fn report(at: DateTime<Utc>) -> Envelope {
    let mut env = Envelope::new(
        "ingest",
        Actor::agent("web-1"),
        None,
        Event::Agent(AgentEvent::Reported(AgentReport {
            agent: "web-1".parse().unwrap(),
            host: "web-1".parse().unwrap(),
            agent_version: "0.1.0".into(),
            resources: Resources::default(),
            services: vec![],
            config_version: None,
            config_hash: None,
        })),
    );
    env.time = at;
    env
}

#[tokio::test]
async fn staleness_events_are_transitions_only_across_restarts() {
    let bus = bus().await;
    let t0 = t("2026-06-01T12:00:00Z");
    let clock = TestClock::new(t0);
    bus.publish_event(&report(t0)).await;
    let sched = start(&bus, &clock);
    clock.advance(chrono::Duration::seconds(95));
    let events = bus
        .wait_events(10, |e| count_type(e, "went_stale") >= 1)
        .await;
    assert_eq!(count_type(&events, "went_stale"), 1);
    sched.stop().await;

    let sched = start(&bus, &clock);
    clock.advance(chrono::Duration::seconds(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_type(&bus.events().await, "went_stale"),
        1,
        "not repeated after restart"
    );
    clock.advance(chrono::Duration::seconds(300));
    let events = bus
        .wait_events(10, |e| count_type(e, "went_down") >= 1)
        .await;
    assert_eq!(count_type(&events, "went_down"), 1);
    sched.stop().await;

    let sched = start(&bus, &clock);
    clock.advance(chrono::Duration::seconds(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = bus.events().await;
    assert_eq!(count_type(&events, "went_stale"), 1);
    assert_eq!(count_type(&events, "went_down"), 1);
    bus.publish_event(&report(clock_now(&clock))).await;
    clock.advance(chrono::Duration::seconds(1));
    let events = bus
        .wait_events(10, |e| count_type(e, "recovered") >= 1)
        .await;
    assert_eq!(count_type(&events, "recovered"), 1);
    clock.advance(chrono::Duration::seconds(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_type(&bus.events().await, "recovered"), 1);
    sched.stop().await;
}

fn clock_now(clock: &TestClock) -> DateTime<Utc> {
    use fleetbus_scheduler::Clock;
    clock.now()
}

fn define_heartbeat() -> Command {
    use fleetbus_schemas::commands::CheckCommand;
    use fleetbus_schemas::events::check::{CheckKind, CheckSpec};
    Command::Check(CheckCommand::Define(CheckSpec {
        check: "cron-ping".parse().unwrap(),
        kind: CheckKind::Heartbeat {
            period_s: 60,
            grace_s: 30,
        },
        ping_hosts: vec![],
    }))
}

fn check_flips(events: &[Envelope]) -> Vec<String> {
    use fleetbus_schemas::events::CheckEvent;
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Check(CheckEvent::StateChanged { from, to, .. }) => {
                Some(format!("{from:?}->{to:?}").to_lowercase())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn heartbeat_and_deadline_checks_flip_once_each_over_the_bus() {
    use fleetbus_schemas::commands::CheckCommand;
    use fleetbus_schemas::events::check::{CheckKind, CheckSpec};
    use fleetbus_schemas::events::CheckEvent;
    let bus = bus().await;
    let t0 = t("2026-06-01T12:00:00Z");
    let clock = TestClock::new(t0);
    let sched = start(&bus, &clock);
    bus.send(admin(), define_heartbeat()).await;
    bus.send(
        admin(),
        Command::Check(CheckCommand::Define(CheckSpec {
            check: "nightly-backup".parse().unwrap(),
            kind: CheckKind::Deadline {
                event_kind: "backup_succeeded".into(),
                host: "db-1".parse().unwrap(),
                by: "05:00".into(),
                time_zone: "Europe/Helsinki".into(),
            },
            ping_hosts: vec![],
        })),
    )
    .await;
    bus.wait_events(10, |e| count_type(e, "defined") == 2).await;

    let mut ping = Envelope::new(
        "ingest",
        Actor::service("ingest"),
        None,
        Event::Check(CheckEvent::Pinged {
            check: "cron-ping".parse().unwrap(),
        }),
    );
    ping.time = t0;
    bus.publish_event(&ping).await;
    clock.advance(chrono::Duration::seconds(1));
    bus.wait_events(10, |e| !check_flips(e).is_empty()).await;
    clock.advance(chrono::Duration::seconds(60));
    bus.wait_events(10, |e| check_flips(e).len() >= 2).await;
    clock.advance(chrono::Duration::seconds(30));
    let events = bus.wait_events(10, |e| check_flips(e).len() >= 3).await;
    assert_eq!(check_flips(&events), ["new->up", "up->late", "late->down"]);

    // Two days later (05:00 Helsinki = 02:00Z): the 3rd's deadline is the first full window.
    clock.set(t("2026-06-03T02:00:05Z"));
    // The miss and its alert are published one after the other: wait for both.
    let alert_raised =
        |e: &Envelope| e.event.type_name() == "raised" && e.event.domain() == "alert";
    let events = bus
        .wait_events(10, |e| {
            count_type(e, "deadline_missed") >= 1 && e.iter().any(alert_raised)
        })
        .await;
    assert_eq!(count_type(&events, "deadline_missed"), 1);
    let raised: Vec<_> = events.iter().filter(|e| alert_raised(e)).collect();
    assert_eq!(raised.len(), 1);
    assert_eq!(
        raised[0].subject(),
        "fleet.evt.alert.deadline-nightly-backup.raised"
    );
    sched.stop().await;

    let sched = start(&bus, &clock);
    clock.advance(chrono::Duration::minutes(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = bus.events().await;
    assert_eq!(
        count_type(&events, "deadline_missed"),
        1,
        "not again after restart"
    );
    assert_eq!(
        check_flips(&events).len(),
        3,
        "no flip repeated after restart"
    );
    sched.stop().await;
}

#[tokio::test]
async fn retention_purges_output_of_old_jobs_and_records_the_cutoffs() {
    use fleetbus_schemas::events::job::{JobOutcome, RunType};
    use fleetbus_schemas::events::JobEvent;
    use fleetbus_schemas::JobId;
    let bus = bus().await;
    let t0 = t("2026-06-10T03:00:00Z");
    let clock = TestClock::new(t0);
    let (old, young) = (JobId::new(), JobId::new());
    for (job, ended) in [
        (old, t0 - chrono::Duration::days(9)),
        (young, t0 - chrono::Duration::hours(1)),
    ] {
        for i in 0..3 {
            let subject = fleetbus_schemas::subjects::job_output(job);
            bus.publish_raw(
                &subject,
                &format!("{job}-{i}"),
                format!("line {i}").into_bytes(),
            )
            .await;
        }
        let mut env = Envelope::new(
            "executor",
            Actor::service("executor"),
            None,
            Event::Job(JobEvent::Cancelled {
                job,
                outcome: JobOutcome {
                    exit_code: None,
                    duration_ms: 5,
                    run_type: RunType::Adhoc,
                    output_bytes: 18,
                    tail: String::new(),
                },
            }),
        );
        env.time = ended;
        bus.publish_event(&env).await;
    }
    let mut config = bus.config();
    config.retention.enabled = true; // 03:30 UTC daily, output kept 7 days
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(fleetbus_scheduler::run_with_clock(
        config,
        Arc::new(clock.clone()),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count_type(&bus.events().await, "retention_applied"),
        0,
        "not before 03:30"
    );
    clock.set(t("2026-06-10T03:30:01Z"));
    let events = bus
        .wait_events(10, |e| count_type(e, "retention_applied") >= 1)
        .await;
    let applied: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Schedule(fleetbus_schemas::events::ScheduleEvent::RetentionApplied {
                output_cutoff,
                jobs_purged,
                ..
            }) => Some((*output_cutoff, *jobs_purged)),
            _ => None,
        })
        .collect();
    assert_eq!(applied, [(t("2026-06-03T03:30:00Z"), 1)]);
    let output: Vec<String> = bus
        .messages("OUTPUT")
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let young_subject = fleetbus_schemas::subjects::job_output(young);
    assert_eq!(
        output,
        vec![young_subject.clone(); 3],
        "only the young job's output is left"
    );
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(res, Ok(Ok(Ok(())))), "{res:?}");
}
