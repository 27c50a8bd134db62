//! The executor binary killed with SIGKILL mid-job: on restart, cut-off jobs are `restarted`;
//! idempotent ones run again, others fail with that reason and their side effect is not repeated.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{admin, operator, Host, Rig};
use fleetbus_schemas::commands::{JobCommand, Targets};
use fleetbus_schemas::events::job::{JobEvent, TaskSpec};
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::{Event, JobId};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_binary(rig: &mut Rig, conf: &std::path::Path, nth: usize) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(rig.state.path().join(format!("executor-{nth}.log")))?;
    let child = Command::new(env!("CARGO_BIN_EXE_fleetbus-executor"))
        .arg("--config")
        .arg(conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let proc = Proc(child);
    let _ = nth;
    rig.events
        .wait_new("executor started", |e| matches!(&e.event, Event::System(SystemEvent::ComponentStarted { component, .. }) if component == "executor"))
        .await?;
    Ok(proc)
}

fn task(id: &str, template: String, idempotent: bool) -> anyhow::Result<TaskSpec> {
    Ok(TaskSpec {
        task: id.parse()?,
        description: id.into(),
        template,
        params: vec![],
        sudo: false,
        idempotent,
        nice: None,
        ionice_class: None,
    })
}

fn lines(path: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_marks_jobs_restarted_and_reruns_only_idempotent_ones() -> anyhow::Result<()>
{
    let host = Host::start(30)?;
    let mut rig = Rig::start().await?;
    let config = rig.config(vec![host.static_host(false)], host.key());
    rig.register_hosts().await?;
    let conf = rig.state.path().join("executor.toml");
    std::fs::write(&conf, toml::to_string(&toml::Value::try_from(&config)?)?)?;

    let mut exe = start_binary(&mut rig, &conf, 1).await?;
    let tag = std::process::id();
    let once = format!("/tmp/fleetbus-crash-once-{tag}");
    let again = format!("/tmp/fleetbus-crash-again-{tag}");
    for p in [&once, &again] {
        let _ = std::fs::remove_file(p);
        // The job runs as the login user.
        std::fs::write(p, "")?;
        Command::new("chown").arg("fleet").arg(p).status()?;
    }
    for t in [
        task(
            "charge-card",
            format!("echo charged >> {once}; sleep 2{tag}"),
            false,
        )?,
        task(
            "warm-cache",
            format!("echo warmed >> {again}; sleep 3"),
            true,
        )?,
    ] {
        let env = rig.send(admin(), JobCommand::SaveTask(t)).await?;
        rig.events
            .wait("task saved", |e| {
                e.causation == Some(env.id) && matches!(e.event, Event::Job(JobEvent::TaskSaved(_)))
            })
            .await?;
    }
    let targets = Targets {
        hosts: vec![host.id.clone()],
        ..Targets::default()
    };
    let mut jobs: Vec<JobId> = Vec::new();
    for t in ["charge-card", "warm-cache"] {
        let env = rig
            .send(
                operator(),
                JobCommand::RunTask {
                    task: t.parse()?,
                    params: Default::default(),
                    targets: targets.clone(),
                },
            )
            .await?;
        jobs.push(rig.scheduled(&env).await?);
    }
    for _ in 0..200 {
        if lines(&once) == 1 && lines(&again) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        (lines(&once), lines(&again)),
        (1, 1),
        "both jobs should be running"
    );

    // SIGKILL: no chance to finish anything.
    exe.0.kill()?;
    exe.0.wait()?;
    drop(exe);

    let _exe = start_binary(&mut rig, &conf, 2).await?;
    let (charge, warm) = (jobs[0], jobs[1]);
    let restarted = |rig: &mut Rig, job: JobId| {
        rig.events.of_job(job).into_iter().find_map(|e| match e {
            JobEvent::Restarted { rerun, reason, .. } => Some((rerun, reason)),
            _ => None,
        })
    };
    match rig.finished(charge).await? {
        JobEvent::Failed { reason, .. } => assert!(reason.contains("not idempotent"), "{reason}"),
        other => anyhow::bail!("expected the non-idempotent job to fail, got {other:?}"),
    }
    let (rerun, reason) =
        restarted(&mut rig, charge).ok_or_else(|| anyhow::anyhow!("no restarted event"))?;
    assert!(!rerun, "{reason}");
    let fin = rig.finished(warm).await?;
    assert!(matches!(fin, JobEvent::Succeeded { .. }), "{fin:?}");
    assert_eq!(restarted(&mut rig, warm).map(|r| r.0), Some(true));
    // The side effect of the non-idempotent task happened once; the idempotent one ran twice.
    assert_eq!(lines(&once), 1);
    assert_eq!(lines(&again), 2);
    // Every event names the command and actor of the job.
    let sched = rig
        .events
        .seen
        .iter()
        .find(|e| matches!(&e.event, Event::Job(JobEvent::Restarted { job, .. }) if *job == charge))
        .ok_or_else(|| anyhow::anyhow!("no restarted envelope"))?;
    assert!(sched.causation.is_some());
    assert_eq!(sched.actor, operator());
    for pid in fleetbus_testkit::sshd::processes_matching(&format!("sleep 2{tag}")) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    Ok(())
}
