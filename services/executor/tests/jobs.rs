//! Jobs over the bus against real sshd targets with runit services and a real nats-server.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{admin, operator, viewer, Host, Rig};
use fleetbus_schemas::commands::{JobCommand, Targets};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::host::HostEvent;
use fleetbus_schemas::events::job::{JobEvent, OutputStream, ParamSpec, ParamType, TaskSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::{Actor, Event, HostId, JobId, ServiceName};
use fleetbus_testkit::sshd::processes_matching;
use serde_json::json;

fn svc(s: &str) -> ServiceName {
    s.parse().expect("literal service name")
}

fn action(host: &Host, service: &str, action: ServiceAction) -> JobCommand {
    JobCommand::RunAction {
        host: host.id.clone(),
        service: svc(service),
        action,
        lines: None,
    }
}

fn on(host: &Host) -> Targets {
    Targets {
        hosts: vec![host.id.clone()],
        ..Targets::default()
    }
}

fn succeeded(e: &JobEvent) -> bool {
    matches!(e, JobEvent::Succeeded { .. })
}

/// The newest status observation of a service caused by a command.
async fn observed(
    rig: &mut Rig,
    cmd: fleetbus_schemas::CommandId,
) -> anyhow::Result<fleetbus_schemas::events::service::ServiceStatus> {
    let e = rig
        .events
        .wait("status observed", |e| {
            e.causation == Some(cmd)
                && matches!(
                    &e.event,
                    Event::Service(ServiceEvent::StatusObserved { .. })
                )
        })
        .await?;
    match e.event {
        Event::Service(ServiceEvent::StatusObserved { status, .. }) => Ok(status),
        _ => anyhow::bail!("not a status"),
    }
}

async fn wait_local(host: &Host, name: &str, prefix: &str) -> anyhow::Result<String> {
    for _ in 0..100 {
        let s = host.runit.sv_status(name)?;
        if s.starts_with(prefix) {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "{name} never reached {prefix}: {}",
        host.runit.sv_status(name)?
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_actions_change_real_state_and_report_structured_status() -> anyhow::Result<()> {
    let host = Host::start(20)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(false)], host.key()))
        .await?;

    // status → structured, green
    let env = rig
        .send(operator(), action(&host, "web", ServiceAction::Status))
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    let st = observed(&mut rig, env.id).await?;
    assert_eq!(st.state, ServiceState::Running, "{st:?}");
    assert!(st.main_pid.is_some());
    assert!(st.since.is_some());
    assert_eq!(
        fleetbus_executor::status::dot(st.state),
        fleetbus_executor::status::Dot::Green
    );

    // stop → really down, observed stopped (red)
    let env = rig
        .send(operator(), action(&host, "worker", ServiceAction::Stop))
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    wait_local(&host, "worker", "down:").await?;
    assert_eq!(
        observed(&mut rig, env.id).await?.state,
        ServiceState::Stopped
    );

    // start → really up again
    let env = rig
        .send(operator(), action(&host, "worker", ServiceAction::Start))
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    wait_local(&host, "worker", "run:").await?;

    // restart → a new pid
    let before = observed_pid(&host, "web")?;
    let env = rig
        .send(operator(), action(&host, "web", ServiceAction::Restart))
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    wait_local(&host, "web", "run:").await?;
    assert_ne!(before, observed_pid(&host, "web")?);

    // disable/enable → the runit `down` file appears and goes
    let down = host.runit.service_dir("flaky").join("down");
    assert!(succeeded(
        &rig.run(operator(), action(&host, "flaky", ServiceAction::Disable))
            .await?
    ));
    assert!(down.exists());
    assert!(succeeded(
        &rig.run(operator(), action(&host, "flaky", ServiceAction::Enable))
            .await?
    ));
    assert!(!down.exists());

    // logs are capped at 500 lines, and come from the real log
    let env = rig
        .send(
            operator(),
            JobCommand::RunAction {
                host: host.id.clone(),
                service: svc("biglog"),
                action: ServiceAction::Logs,
                lines: Some(10_000),
            },
        )
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    let text: String = rig.output(job).await?.into_iter().map(|c| c.data).collect();
    assert_eq!(text.lines().count(), 500);
    assert_eq!(text.lines().last(), Some("line 800"));
    assert_eq!(text.lines().next(), Some("line 301"));

    running.stop().await
}

fn observed_pid(host: &Host, name: &str) -> anyhow::Result<String> {
    let s = host.runit.sv_status(name)?;
    let pid = s
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or("")
        .to_string();
    anyhow::ensure!(!pid.is_empty(), "no pid in {s}");
    Ok(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_and_disallowed_actions_are_rejected_with_typed_reasons(
) -> anyhow::Result<()> {
    let host = Host::start(21)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(false)], host.key()))
        .await?;

    let nohost = rig
        .send(
            operator(),
            JobCommand::RunAction {
                host: HostId::new("nope")?,
                service: svc("web"),
                action: ServiceAction::Status,
                lines: None,
            },
        )
        .await?;
    assert_eq!(rig.rejected(&nohost).await?.0, RejectKind::NotFound);
    let nosvc = rig
        .send(operator(), action(&host, "nginx", ServiceAction::Status))
        .await?;
    let (kind, msg) = rig.rejected(&nosvc).await?;
    assert_eq!(kind, RejectKind::NotFound);
    assert!(msg.contains("nginx"), "{msg}");
    let forbidden = rig
        .send(
            operator(),
            action(&host, "readonly", ServiceAction::Restart),
        )
        .await?;
    let (kind, msg) = rig.rejected(&forbidden).await?;
    assert_eq!(kind, RejectKind::Forbidden);
    assert!(msg.contains("allowed: status"), "{msg}");
    let viewer_cmd = rig
        .send(viewer(), action(&host, "web", ServiceAction::Restart))
        .await?;
    assert_eq!(rig.rejected(&viewer_cmd).await?.0, RejectKind::Forbidden);
    // Ad-hoc: operators may not; admins may not on a host that does not allow it.
    let adhoc = JobCommand::RunAdhoc {
        host: host.id.clone(),
        command: "id".into(),
    };
    let by_op = rig.send(operator(), adhoc.clone()).await?;
    assert_eq!(rig.rejected(&by_op).await?.0, RejectKind::Forbidden);
    let by_admin = rig.send(admin(), adhoc).await?;
    let (kind, msg) = rig.rejected(&by_admin).await?;
    assert_eq!(kind, RejectKind::Forbidden);
    assert!(msg.contains("does not allow"), "{msg}");
    let nojob = rig
        .send(operator(), JobCommand::Cancel { job: JobId::new() })
        .await?;
    assert_eq!(rig.rejected(&nojob).await?.0, RejectKind::NotFound);
    let noverb = rig
        .send(
            operator(),
            JobCommand::RunVerb {
                verb: "LAUNCH-MISSILES".into(),
                args: json!({}),
                targets: on(&host),
            },
        )
        .await?;
    assert_eq!(rig.rejected(&noverb).await?.0, RejectKind::NotFound);
    let badverb = rig
        .send(
            operator(),
            JobCommand::RunVerb {
                verb: "RESTART-SERVICE".into(),
                args: json!({"service": "web", "force": true}),
                targets: on(&host),
            },
        )
        .await?;
    assert_eq!(rig.rejected(&badverb).await?.0, RejectKind::Invalid);

    // Malformed payloads: rejected, and the executor keeps working.
    rig.publish_raw(
        "fleet.cmd.job.run_action",
        "garbage-1",
        b"\xc1not msgpack".to_vec(),
    )
    .await?;
    rig.events
        .wait("malformed rejection", |e| matches!(&e.event, Event::System(fleetbus_schemas::events::system::SystemEvent::CommandRejected { reason: RejectKind::Malformed, subject, .. }) if subject == "fleet.cmd.job.run_action"))
        .await?;
    let wrong_area = fleetbus_schemas::CommandEnvelope::new(
        admin(),
        fleetbus_schemas::Command::Host(fleetbus_schemas::commands::HostCommand::Remove {
            host: host.id.clone(),
        }),
    );
    rig.publish_raw(
        "fleet.cmd.job.run_action",
        &wrong_area.id.to_string(),
        fleetbus_schemas::encode(&wrong_area)?,
    )
    .await?;
    assert_eq!(rig.rejected(&wrong_area).await?.0, RejectKind::Invalid);
    assert!(succeeded(
        &rig.run(operator(), action(&host, "web", ServiceAction::Status))
            .await?
    ));
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_arguments_never_reach_a_shell() -> anyhow::Result<()> {
    let host = Host::start(22)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(false)], host.key()))
        .await?;
    let nonce = format!("{}", std::process::id());
    let pwned = format!("/tmp/fleetbus-pwned-{nonce}");
    let _ = std::fs::remove_file(&pwned);
    let task = TaskSpec {
        task: "echo-it".parse()?,
        description: "prints its argument".into(),
        template: "printf '%s|' {msg}".into(),
        params: vec![ParamSpec {
            name: "msg".into(),
            ty: ParamType::String {
                pattern: "(?s).*".into(),
            },
            default: None,
        }],
        sudo: false,
        idempotent: true,
        nice: Some(5),
        ionice_class: None,
    };
    let env = rig.send(admin(), JobCommand::SaveTask(task)).await?;
    rig.events
        .wait("task saved", |e| {
            e.causation == Some(env.id) && matches!(e.event, Event::Job(JobEvent::TaskSaved(_)))
        })
        .await?;
    let canary = format!("$(touch {pwned}) `touch {pwned}` ' \" ; touch {pwned} | touch {pwned} && touch {pwned}\ntouch {pwned} $HOME *");
    let env = rig
        .send(
            operator(),
            JobCommand::RunTask {
                task: "echo-it".parse()?,
                params: BTreeMap::from([("msg".into(), json!(canary))]),
                targets: on(&host),
            },
        )
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    let text: String = rig.output(job).await?.into_iter().map(|c| c.data).collect();
    assert_eq!(text, format!("{canary}|"));
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "the canary was executed"
    );

    // A value of the wrong type is rejected before anything runs.
    let bad = rig
        .send(
            operator(),
            JobCommand::RunTask {
                task: "echo-it".parse()?,
                params: BTreeMap::from([("msg".into(), json!(42))]),
                targets: on(&host),
            },
        )
        .await?;
    assert_eq!(rig.rejected(&bad).await?.0, RejectKind::Invalid);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_scripts_keep_cd_report_steps_and_stop_at_the_first_failure() -> anyhow::Result<()> {
    let host = Host::start(23)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(true)], host.key()))
        .await?;
    let script = "# a comment\r\ncd /tmp\r\n\r\npwd\r\n  # another\nfalse\necho never\n";
    let env = rig
        .send(
            admin(),
            JobCommand::RunBatch {
                script: script.into(),
                targets: on(&host),
            },
        )
        .await?;
    let job = rig.scheduled(&env).await?;
    match rig.finished(job).await? {
        JobEvent::Failed {
            failed_step,
            outcome,
            reason,
            ..
        } => {
            assert_eq!(failed_step, Some(3));
            assert_eq!(outcome.exit_code, Some(1));
            assert!(
                reason.contains("step 3/4") && reason.contains("false"),
                "{reason}"
            );
            assert!(outcome.tail.contains("/tmp\n"), "{:?}", outcome.tail);
            assert!(!outcome.tail.contains("never"));
            assert!(
                !outcome.tail.contains("FLEETBUS"),
                "control lines leaked: {:?}",
                outcome.tail
            );
        }
        other => anyhow::bail!("expected failure, got {other:?}"),
    }
    let steps: Vec<(u32, u32, String)> = rig
        .events
        .of_job(job)
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::Progress {
                step,
                total,
                message,
                ..
            } => Some((step, total, message)),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (1, 4, "cd /tmp".into()),
            (2, 4, "pwd".into()),
            (3, 4, "false".into())
        ]
    );
    // Batch is an ad-hoc form: operators may not run it.
    let by_op = rig
        .send(
            operator(),
            JobCommand::RunBatch {
                script: "true".into(),
                targets: on(&host),
            },
        )
        .await?;
    assert_eq!(rig.rejected(&by_op).await?.0, RejectKind::Forbidden);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_rejected_naming_the_job_and_cancel_kills_it_on_the_target(
) -> anyhow::Result<()> {
    let host = Host::start(24)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(true)], host.key()))
        .await?;
    let marker = format!("sleep 5{}", 10_000 + std::process::id() % 50_000);
    let cmd = JobCommand::RunAdhoc {
        host: host.id.clone(),
        command: format!("echo go; {marker} & {marker}; wait"),
    };
    let env = rig.send(admin(), cmd.clone()).await?;
    let job = rig.scheduled(&env).await?;
    rig.events
        .wait(
            "job started",
            |e| matches!(&e.event, Event::Job(JobEvent::Started { job: j, .. }) if *j == job),
        )
        .await?;
    let dup = rig.send(admin(), cmd).await?;
    match rig.rejected(&dup).await? {
        (RejectKind::Duplicate { job: j }, msg) => {
            assert_eq!(j, job);
            assert!(msg.contains(&job.to_string()), "{msg}");
        }
        other => anyhow::bail!("expected duplicate, got {other:?}"),
    }
    // Wait until the remote processes exist, then cancel.
    for _ in 0..100 {
        if processes_matching(&marker).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_matching(&marker).len() >= 2);
    let cancel = rig.send(operator(), JobCommand::Cancel { job }).await?;
    let fin = rig.finished(job).await?;
    assert!(matches!(fin, JobEvent::Cancelled { .. }), "{fin:?}");
    assert!(
        processes_matching(&marker).is_empty(),
        "remote processes survived the cancel"
    );
    let _ = cancel;
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_limit_queues_fifo_and_output_streams_live_with_sequence_numbers(
) -> anyhow::Result<()> {
    let host = Host::start(25)?;
    let mut rig = Rig::start().await?;
    let mut config = rig.config(vec![host.static_host(true)], host.key());
    config.limits.max_per_host = 1;
    let running = rig.spawn(config).await?;
    let live = rig.client.subscribe("fleet.out.job.>").await?;
    let first = rig
        .send(
            admin(),
            JobCommand::RunAdhoc {
                host: host.id.clone(),
                command: "printf '\\033[32mgreen\\033[0m\\n'; sleep 0.5; echo err >&2; echo done"
                    .into(),
            },
        )
        .await?;
    let second = rig
        .send(
            admin(),
            JobCommand::RunAdhoc {
                host: host.id.clone(),
                command: "echo second".into(),
            },
        )
        .await?;
    let j1 = rig.scheduled(&first).await?;
    let j2 = rig.scheduled(&second).await?;
    let pos = |rig: &Rig, j: JobId| {
        rig.events.of_job(j).into_iter().find_map(|e| match e {
            JobEvent::Scheduled { queue_position, .. } => Some(queue_position),
            _ => None,
        })
    };
    assert_eq!(pos(&rig, j1), Some(0));
    assert_eq!(pos(&rig, j2), Some(1));
    let f1 = rig.finished(j1).await?;
    let f2 = rig.finished(j2).await?;
    assert!(succeeded(&f1) && succeeded(&f2));
    // FIFO: the second started only after the first finished.
    let idx = |rig: &Rig, pred: &dyn Fn(&Event) -> bool| {
        rig.events.seen.iter().position(|e| pred(&e.event))
    };
    let end1 = idx(
        &rig,
        &|e| matches!(e, Event::Job(JobEvent::Succeeded { job, .. }) if *job == j1),
    );
    let start2 = idx(
        &rig,
        &|e| matches!(e, Event::Job(JobEvent::Started { job, .. }) if *job == j2),
    );
    assert!(end1 < start2, "{end1:?} {start2:?}");
    // Output: ordered, gap-free, ANSI kept, streams tagged; the final event carries size and tail.
    let chunks = rig.output(j1).await?;
    let seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=chunks.len() as u64).collect::<Vec<_>>());
    let stdout: String = chunks
        .iter()
        .filter(|c| c.stream == OutputStream::Stdout)
        .map(|c| c.data.as_str())
        .collect();
    let stderr: String = chunks
        .iter()
        .filter(|c| c.stream == OutputStream::Stderr)
        .map(|c| c.data.as_str())
        .collect();
    assert_eq!(stdout, "\x1b[32mgreen\x1b[0m\ndone\n");
    assert_eq!(stderr, "err\n");
    if let JobEvent::Succeeded { outcome, .. } = f1 {
        assert_eq!(outcome.output_bytes, (stdout.len() + stderr.len()) as u64);
        assert!(outcome.tail.contains("green") && outcome.tail.contains("done"));
        assert_eq!(outcome.exit_code, Some(0));
        assert!(outcome.duration_ms >= 500);
    }
    // The live subscription saw the chunks as they were published.
    let mut live = live;
    let m =
        tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut live)).await?;
    assert!(m.is_some());
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_change_is_refused_with_an_event_and_a_clear_failure() -> anyhow::Result<()> {
    let mut host = Host::start(26)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(false)], host.key()))
        .await?;
    assert!(succeeded(
        &rig.run(operator(), action(&host, "web", ServiceAction::Status))
            .await?
    ));
    let fp = host.sshd.host_key_fingerprint()?;
    let h = host.id.clone();
    rig.events
        .wait("key pinned", |e| matches!(&e.event, Event::Host(HostEvent::KeyPinned { host, fingerprint, .. }) if *host == h && *fingerprint == fp))
        .await?;
    // A reinstalled host: connections drop, and it comes back with a new key.
    host.sshd.kill_sessions();
    host.sshd.rotate_host_key()?;
    let fin = rig
        .run(operator(), action(&host, "web", ServiceAction::Status))
        .await?;
    match fin {
        JobEvent::Failed { reason, .. } => {
            assert!(reason.contains("host key mismatch"), "{reason}")
        }
        other => anyhow::bail!("expected failure, got {other:?}"),
    }
    let new_fp = host.sshd.host_key_fingerprint()?;
    let h = host.id.clone();
    rig.events
        .wait("key mismatch", |e| matches!(&e.event, Event::Host(HostEvent::KeyMismatch { host, expected, presented }) if *host == h && *expected == fp && *presented == new_fp))
        .await?;
    // A person trusts the new key (fleetctl host trust → ingest → key_pinned): accepted again.
    let trusted = fleetbus_schemas::Envelope::new(
        "ingest",
        admin(),
        None,
        Event::Host(HostEvent::KeyPinned {
            host: host.id.clone(),
            algorithm: "ssh-ed25519".into(),
            fingerprint: new_fp.clone(),
        }),
    );
    rig.publish_raw(
        &trusted.subject(),
        &trusted.id.to_string(),
        fleetbus_schemas::encode(&trusted)?,
    )
    .await?;
    let mut ok = false;
    for _ in 0..20 {
        if succeeded(
            &rig.run(operator(), action(&host, "web", ServiceAction::Status))
                .await?,
        ) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the trusted key was not accepted");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_mid_job_fails_with_a_clear_reason() -> anyhow::Result<()> {
    let host = Host::start(27)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(true)], host.key()))
        .await?;
    let env = rig
        .send(
            admin(),
            JobCommand::RunAdhoc {
                host: host.id.clone(),
                command: "echo up; sleep 30".into(),
            },
        )
        .await?;
    let job = rig.scheduled(&env).await?;
    let mut sub = rig
        .client
        .subscribe(fleetbus_schemas::subjects::job_output(job))
        .await?;
    let _ =
        tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut sub)).await?;
    host.sshd.kill_sessions();
    match rig.finished(job).await? {
        JobEvent::Failed {
            reason, outcome, ..
        } => {
            assert!(reason.contains("connection was lost"), "{reason}");
            assert_eq!(outcome.exit_code, None);
        }
        other => anyhow::bail!("expected failure, got {other:?}"),
    }
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_and_resources_run_through_the_allowlist() -> anyhow::Result<()> {
    let host = Host::start(28)?;
    let mut rig = Rig::start().await?;
    let running = rig
        .spawn(rig.config(vec![host.static_host(false)], host.key()))
        .await?;
    let before = observed_pid(&host, "web")?;
    let (verb, args) =
        fleetbus_executor::verbs::parse_line(r#"RESTART-SERVICE {"service":"web"}"#)?;
    let fin = rig
        .run(
            operator(),
            JobCommand::RunVerb {
                verb,
                args,
                targets: on(&host),
            },
        )
        .await?;
    assert!(succeeded(&fin), "{fin:?}");
    wait_local(&host, "web", "run:").await?;
    assert_ne!(before, observed_pid(&host, "web")?);
    // Verbs cannot reach actions the allowlist forbids.
    let denied = rig
        .send(
            operator(),
            JobCommand::RunVerb {
                verb: "STOP-SERVICE".into(),
                args: json!({"service": "readonly"}),
                targets: on(&host),
            },
        )
        .await?;
    assert_eq!(rig.rejected(&denied).await?.0, RejectKind::Forbidden);
    // Resources over SSH from /proc.
    let env = rig
        .send(
            Actor::service("scheduler"),
            JobCommand::ReadResources {
                host: host.id.clone(),
            },
        )
        .await?;
    let job = rig.scheduled(&env).await?;
    assert!(succeeded(&rig.finished(job).await?));
    let e = rig
        .events
        .wait("resources", |e| {
            e.causation == Some(env.id)
                && matches!(e.event, Event::Host(HostEvent::ResourcesObserved { .. }))
        })
        .await?;
    if let Event::Host(HostEvent::ResourcesObserved { resources, .. }) = e.event {
        assert!(
            resources.mem_total_kb > 0 && resources.disk_total_kb > 0 && resources.uptime_s > 0
        );
        assert!((0.0..=100.0).contains(&resources.cpu_pct));
    }
    running.stop().await
}

#[test]
fn generated_sudoers_pass_visudo_and_are_scoped() -> anyhow::Result<()> {
    let host = Host::start(29)?;
    let (spec, services) = host.static_host(false).specs();
    let text = fleetbus_executor::sudoers::for_host(spec.host.as_str(), "fleet", &services, &[])?;
    fleetbus_testkit::sshd::validate_sudoers(&text)?;
    assert!(!text.contains("NOPASSWD: ALL"));
    assert!(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .all(|l| l.starts_with("fleet ALL=(root) NOPASSWD: /usr/bin/")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_jobs_started_together_share_an_exec_and_each_gets_its_own_status(
) -> anyhow::Result<()> {
    let host = Host::start(31)?;
    host.runit.sv("down", "worker")?;
    wait_local(&host, "worker", "down:").await?;
    let mut rig = Rig::start().await?;
    let mut config = rig.config(vec![host.static_host(false)], host.key());
    // The three reads below run as one batch: it is released when the third arrives.
    config.ssh.coalesce_max_parts = 3;
    config.ssh.coalesce_window_ms = 1000;
    let running = rig.spawn(config).await?;
    let mut sent = Vec::new();
    for name in ["web", "worker", "flaky"] {
        sent.push((
            name,
            rig.send(operator(), action(&host, name, ServiceAction::Status))
                .await?,
        ));
    }
    for (name, env) in &sent {
        let job = rig.scheduled(env).await?;
        assert!(succeeded(&rig.finished(job).await?), "{name}");
        // Each job's output is its own service's status line, nothing of the others'.
        let text: String = rig.output(job).await?.into_iter().map(|c| c.data).collect();
        let dir = |n: &str| format!("{}:", host.runit.service_dir(n).display());
        assert_eq!(text.lines().count(), 1, "{name}: {text:?}");
        assert!(text.contains(&dir(name)), "{name}: {text:?}");
        for other in ["web", "worker", "flaky"].iter().filter(|o| *o != name) {
            assert!(!text.contains(&dir(other)), "{name}: {text:?}");
        }
        let st = observed(&mut rig, env.id).await?;
        match *name {
            "web" => assert_eq!(st.state, ServiceState::Running, "{st:?}"),
            "worker" => assert_eq!(st.state, ServiceState::Stopped, "{st:?}"),
            _ => {}
        }
    }
    running.stop().await
}
