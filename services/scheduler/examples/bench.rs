//! Scheduler benchmark: 10,000 schedules, firing jitter p50/p99 and RSS, against a baseline
//! (a tokio timer publishing the same bursts straight to JetStream) measured in the same run.
//!
//! Run with `ops/bench/scheduler/run` (builds --release first). Bounded: about a minute.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::Publish};
use chrono::{DateTime, Utc};
use fleetbus_bus_config::Role;
use fleetbus_schemas::commands::{JobCommand, ScheduleCommand};
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::{encode, Actor, Command as Cmd, CommandEnvelope, JobId, UserRole};
use futures::StreamExt;

const SCHEDULES: usize = 10_000;
const MEASURE: Duration = Duration::from_secs(15);
const BASELINE_SECONDS: usize = 10;

fn scheduler_bin() -> PathBuf {
    // examples live in <target>/<profile>/examples/
    let exe = std::env::current_exe().unwrap_or_default();
    let profile = exe
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    profile.join("fleetbus-scheduler")
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_scheduler(
    server: &fleetbus_testkit::NatsServer,
    dir: &std::path::Path,
    role: Role,
) -> anyhow::Result<(Proc, PathBuf)> {
    let c = server.nats_config(role);
    let conf = dir.join("scheduler.toml");
    std::fs::write(
        &conf,
        format!(
            "version = 1\n[nats]\nurl = {:?}\nuser = {:?}\nnkey_seed_file = {:?}\n[retention]\nenabled = false\n",
            c.url,
            c.user,
            c.seed_file().display().to_string()
        ),
    )?;
    let log = dir.join("scheduler.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let child = Command::new(scheduler_bin())
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok((Proc(child), log))
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> (usize, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let max = v.last().copied().unwrap_or(f64::NAN);
    (v.len(), pct(&v, 0.5), pct(&v, 0.99), max)
}

/// A tokio timer that, at each whole second, publishes `per_second` commands and as many
/// events to JetStream with acks in flight — what the scheduler does, minus the scheduler.
async fn baseline(
    js: &jetstream::Context,
    client: &async_nats::Client,
    per_second: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut sub = client.subscribe("fleet.out.bench.cmd").await?;
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(msg) = sub.next().await {
            let now = Utc::now();
            let slot_ms: i64 = std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push((now.timestamp_micros() - slot_ms * 1000) as f64 / 1000.0);
            if out.len() >= per_second * BASELINE_SECONDS {
                break;
            }
        }
        out
    });
    for _ in 0..BASELINE_SECONDS {
        let now = Utc::now();
        let next = DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now);
        tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
        let slot = next.timestamp_millis().to_string();
        for subject in ["fleet.out.bench.cmd", "fleet.out.bench.evt"] {
            let mut acks = Vec::with_capacity(per_second);
            for i in 0..per_second {
                let p = Publish::build()
                    .message_id(format!("{subject}-{slot}-{i}"))
                    .payload(slot.clone().into());
                acks.push(js.send_publish(subject, p).await?);
            }
            for a in acks {
                a.await?;
            }
        }
    }
    Ok(tokio::time::timeout(Duration::from_secs(10), collector).await??)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = scheduler_bin();
    anyhow::ensure!(
        bin.is_file(),
        "{} not built: run ops/bench/scheduler/run",
        bin.display()
    );
    let server = fleetbus_testkit::NatsServer::start();
    server.ensure_streams().await;
    let client = server.client(Role::Admin).await;
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir()?;
    // The scheduler user needs to replay EVENTS; fall back to admin while bus-config lacks it.
    let role = if Role::Scheduler
        .permissions()
        .publish
        .allow
        .iter()
        .any(|s| s == "$JS.API.STREAM.INFO.EVENTS")
    {
        Role::Scheduler
    } else {
        Role::Admin
    };

    let (proc_, log) = start_scheduler(&server, dir.path(), role)?;
    let pid = proc_.0.id();

    // 10,000 schedules, spread so 1,000 fire each second (every 10 s, offsets 0..9).
    let t0 = Instant::now();
    let actor = Actor::user("bench", UserRole::Admin);
    let mut acks = Vec::with_capacity(SCHEDULES);
    for i in 0..SCHEDULES {
        let cmd = CommandEnvelope::new(
            actor.clone(),
            Cmd::Schedule(ScheduleCommand::Create(ScheduleSpec {
                schedule: format!("bench-{i}").parse()?,
                cron: format!("{}/10 * * * * *", i % 10),
                time_zone: "UTC".into(),
                action: ScheduleAction::Publish {
                    command: Box::new(Cmd::Job(JobCommand::Cancel { job: JobId::new() })),
                },
                missed: MissedPolicy::Skip,
            })),
        );
        let p = Publish::build()
            .message_id(cmd.id.to_string())
            .payload(encode(&cmd)?.into());
        acks.push(js.send_publish(cmd.subject(), p).await?);
    }
    for a in acks {
        a.await?;
    }
    // Created events: count them through the stream's subject filter.
    let mut events = js.get_stream("EVENTS").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = events
            .info_with_subjects("fleet.evt.schedule.*.created")
            .await?;
        let created: usize = info
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(Result::ok)
            .map(|(_, n)| n)
            .sum();
        if created >= SCHEDULES {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {created} schedules created after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let create_s = t0.elapsed().as_secs_f64();
    let (rss_after_create, _) = rss_kb(pid);

    // Measure firing jitter: command receive time minus its slot (= the id's timestamp).
    let mut sub = client.subscribe("fleet.cmd.job.>").await?;
    let until = Instant::now() + MEASURE;
    let mut jitter = Vec::new();
    let mut per_schedule_second: BTreeMap<i64, usize> = BTreeMap::new();
    while let Ok(Some(msg)) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), sub.next()).await
    {
        let now = Utc::now();
        if let Ok(cmd) = fleetbus_schemas::decode::<CommandEnvelope>(&msg.payload) {
            let slot_ms = cmd.id.timestamp_ms() as i64;
            jitter.push((now.timestamp_micros() - slot_ms * 1000) as f64 / 1000.0);
            *per_schedule_second.entry(slot_ms / 1000).or_default() += 1;
        }
    }
    drop(sub);
    let (rss, hwm) = rss_kb(pid);
    let full_seconds = per_schedule_second
        .values()
        .filter(|n| **n == SCHEDULES / 10)
        .count();

    // Restart: how long the replay of the log takes.
    drop(proc_);
    let total_events = events.info().await?.state.messages;
    std::fs::write(&log, "")?;
    let t1 = Instant::now();
    let (proc2, log) = start_scheduler(&server, dir.path(), role)?;
    let replay_ms = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("log replayed")) {
            let ms = line
                .split("ms=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok());
            break ms.unwrap_or(t1.elapsed().as_millis() as u64);
        }
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(120),
            "no replay within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(proc2);

    let base = baseline(&js, &client, SCHEDULES / 10).await?;

    let (n, p50, p99, max) = summary(jitter);
    let (bn, bp50, bp99, bmax) = summary(base);
    println!();
    println!("fleetbus scheduler bench — {SCHEDULES} schedules, 1,000 firings/s (every 10 s, 10 offsets), {} s measured", MEASURE.as_secs());
    println!("scheduler user: {role}; nats-server 2.9 single node; release build");
    println!();
    println!("| measure                                   | scheduler        | baseline (timer + raw JetStream) | ratio |");
    println!("|-------------------------------------------|------------------|----------------------------------|-------|");
    println!("| firings measured                          | {n:>16} | {bn:>32} |       |");
    println!(
        "| jitter p50 (ms)                           | {p50:>16.2} | {bp50:>32.2} | {:>5.1} |",
        p50 / bp50
    );
    println!(
        "| jitter p99 (ms)                           | {p99:>16.2} | {bp99:>32.2} | {:>5.1} |",
        p99 / bp99
    );
    println!("| jitter max (ms)                           | {max:>16.2} | {bmax:>32.2} |       |");
    println!("| seconds with all 1,000 firings            | {full_seconds:>16} |                                  |       |");
    println!("| create 10k schedules (commands → events)  | {create_s:>14.1} s |                                  |       |");
    println!("| RSS after create / after firing / peak    | {:>4} / {:>4} / {:>4} MiB |                        |       |", rss_after_create / 1024, rss / 1024, hwm / 1024);
    println!("| restart: replay {total_events:>6} events             | {replay_ms:>13} ms |                                  |       |");
    println!();
    Ok(())
}
