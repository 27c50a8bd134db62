//! Fan-out benchmark: the status of 100 runit services spread over 50 loopback sshd hosts, by
//! (a) OpenSSH `ssh` + `xargs -P 50`, (b) `ansible -f 50 -m raw` (if installed), (c) fleetbus'
//! SSH layer cold (a new connection per command), (d) warm (pooled connections) through
//! `SshPool::exec_shared` — what the executor runs for a status action: reads for the same host
//! within the coalescing window share one remote exec — next to the raw one-exec-per-service
//! number (`SshPool::exec`) and one hand-written exec per host, and (e) end to end through NATS:
//! job commands in, output chunks out, with command → first chunk latency.
//!
//! `COALESCE_WINDOW_MS` overrides the coalescing window (default: the executor's default) in (d)
//! and (e); `FANOUT_WARM_ONLY=1` skips the cold rows (a)–(c).
//!
//! Run with `ops/bench/fanout` (release build). Bounded: 50 hosts, 100 commands per round,
//! ROUNDS rounds (default 3), every wait capped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetbus_bus_config::Role;
use fleetbus_executor::ssh::known_hosts::KnownHosts;
use fleetbus_executor::ssh::{SshPool, SshSettings, Target};
use fleetbus_schemas::commands::JobCommand;
use fleetbus_schemas::events::host::{HostEvent, HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::{JobEvent, OutputChunk};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceManager, ServiceSpec};
use fleetbus_schemas::{
    Actor, Command as BusCommand, CommandEnvelope, Envelope, Event, HostId, UserRole,
};
use fleetbus_testkit::sshd::{KeyPair, Sshd, SshdOptions, SudoersFile};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const HOSTS: usize = 50;
const SERVICES_PER_HOST: usize = 2;

struct BenchHost {
    sshd: Sshd,
    dirs: Vec<String>,
    runsvdir: std::process::Child,
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let _ = Command::new("sv")
            .args(["-w", "2", "force-shutdown"])
            .args(&self.dirs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // SIGHUP makes runsvdir TERM each runsv (which then stops its service and exits) and
        // exit; a SIGKILLed runsvdir would leave them running. By pid only, never a group.
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.runsvdir.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if matches!(self.runsvdir.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.runsvdir.kill();
        let _ = self.runsvdir.wait();
    }
}

fn sh(cmd: &str) -> anyhow::Result<()> {
    let st = Command::new("sh").arg("-c").arg(cmd).status()?;
    anyhow::ensure!(st.success(), "`{cmd}` failed: {st}");
    Ok(())
}

/// A runit tree whose supervise dirs the login user may read, so `sv status` needs no sudo and
/// the benchmark measures fan-out, not sudo.
fn runit_tree(root: &Path, n: usize) -> anyhow::Result<(Vec<String>, std::process::Child)> {
    let mut dirs = Vec::new();
    for s in 0..SERVICES_PER_HOST {
        let dir = root.join(format!("svc{s}"));
        std::fs::create_dir_all(dir.join("supervise"))?;
        std::fs::write(
            dir.join("run"),
            format!("#!/bin/sh\nexec sleep 100{n}{s}\n"),
        )?;
        sh(&format!(
            "chmod 755 {d}/run && mkfifo -m 600 {d}/supervise/ok {d}/supervise/control && chown -R fleet {d}/supervise && chmod 755 {d} {r}",
            d = dir.display(),
            r = root.display()
        ))?;
        dirs.push(dir.display().to_string());
    }
    let child = Command::new("runsvdir")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((dirs, child))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn table(results: &[(String, Vec<Duration>)], jobs: usize, rounds: usize) {
    let best_of = |prefix: &str| {
        results
            .iter()
            .find(|r| r.0.starts_with(prefix))
            .and_then(|r| r.1.iter().copied().min())
    };
    let baseline = best_of("OpenSSH");
    let ansible_best = best_of("ansible");
    println!();
    println!("Status of {jobs} runit services on {HOSTS} loopback sshd hosts, best of {rounds} rounds ({} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| method | best | median | vs OpenSSH+xargs | vs ansible |");
    println!("|---|---:|---:|---:|---:|");
    for (name, t) in results {
        let mut s = t.clone();
        s.sort();
        let best = s.first().copied().unwrap_or(Duration::ZERO);
        let ratio = |b: Duration| {
            if best.is_zero() {
                "-".to_string()
            } else {
                format!("{:.1}×", b.as_secs_f64() / best.as_secs_f64())
            }
        };
        let na = || "n/a".to_string();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(best),
            ms(pct(&s, 0.5)),
            baseline.map(ratio).unwrap_or_else(na),
            ansible_best.map(ratio).unwrap_or_else(na)
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let work = tempfile::Builder::new()
        .prefix("fleetbus-bench-")
        .tempdir()?;
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let key = KeyPair::generate(&work.path().join("client_ed25519"), "fleetbus-bench")?;
    eprintln!(
        "starting {HOSTS} sshd hosts with {} runit services…",
        HOSTS * SERVICES_PER_HOST
    );
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let ip = Ipv4Addr::new(127, 0, 2, (i + 1) as u8);
        let sshd = Sshd::start(
            ip,
            SshdOptions {
                authorized_key: Some(key.public.clone()),
                ..SshdOptions::default()
            },
        )?;
        let root = work.path().join(format!("h{i}"));
        let (dirs, runsvdir) = runit_tree(&root, i)?;
        hosts.push(BenchHost {
            sshd,
            dirs,
            runsvdir,
        });
    }
    // Let runsv bring everything up.
    for h in &hosts {
        for d in &h.dirs {
            for _ in 0..100 {
                if std::path::Path::new(&format!("{d}/supervise/status")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let jobs: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.dirs.iter().map(move |d| (i, d.clone())))
        .collect();
    let mut results: Vec<(String, Vec<Duration>)> = Vec::new();
    // FANOUT_WARM_ONLY=1: skip the cold rows (OpenSSH, ansible, fleetbus cold) for quick runs.
    let warm_only = std::env::var("FANOUT_WARM_ONLY").is_ok_and(|v| v == "1");

    if !warm_only {
        // (a) OpenSSH + xargs -P 50
        let list = work.path().join("ssh-jobs.txt");
        std::fs::write(
            &list,
            jobs.iter()
                .map(|(i, d)| format!("{} {} {d}\n", hosts[*i].sshd.port(), hosts[*i].sshd.ip()))
                .collect::<String>(),
        )?;
        let ssh_cmd = format!(
        "xargs -P 50 -L 1 sh -c 'ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i {} -p \"$0\" fleet@\"$1\" sv status \"$2\"' < {} > {}/ssh.out",
        key.private.display(),
        list.display(),
        work.path().display()
    );
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            sh(&ssh_cmd)?;
            times.push(t.elapsed());
        }
        let out = std::fs::read_to_string(work.path().join("ssh.out"))?;
        anyhow::ensure!(
            out.lines().filter(|l| l.starts_with("run:")).count() == jobs.len(),
            "ssh baseline did not get {} statuses:\n{out}",
            jobs.len()
        );
        results.push(("OpenSSH ssh + xargs -P 50 (cold)".into(), times));

        // (b) ansible -f 50 -m raw, if available
        let ansible = std::env::var("ANSIBLE").unwrap_or_else(|_| "ansible".into());
        if Command::new(&ansible)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            let inv = work.path().join("inventory.ini");
            let mut text = String::from("[bench]\n");
            for (n, (i, d)) in jobs.iter().enumerate() {
                let h = &hosts[*i].sshd;
                text.push_str(&format!(
                    "s{n} ansible_host={} ansible_port={} svc={d}\n",
                    h.ip(),
                    h.port()
                ));
            }
            text.push_str(&format!(
            "[bench:vars]\nansible_user=fleet\nansible_ssh_private_key_file={}\nansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\nansible_python_interpreter=/usr/bin/python3\n",
            key.private.display()
        ));
            std::fs::write(&inv, text)?;
            let mut times = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                let st = Command::new(&ansible)
                    .args(["bench", "-i"])
                    .arg(&inv)
                    .args(["-f", "50", "-m", "raw", "-a", "sv status {{ svc }}"])
                    .env("ANSIBLE_HOST_KEY_CHECKING", "False")
                    .env("ANSIBLE_SSH_CONTROL_PATH_DIR", work.path().join("cp"))
                    .env("ANSIBLE_SSH_ARGS", "-o ControlMaster=no")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?;
                anyhow::ensure!(st.success(), "ansible failed: {st}");
                times.push(t.elapsed());
            }
            results.push(("ansible -f 50 -m raw (cold)".into(), times));
        } else {
            eprintln!("ansible not found ({ansible}); skipping (b) — ops/bench/fanout installs ansible-core into a venv");
        }
    }
    let targets: Vec<Target> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Target {
            host: HostId::new(format!("b{i}")).expect("literal host id"),
            address: h.sshd.ip().to_string(),
            port: h.sshd.port(),
            user: "fleet".into(),
            policy: HostKeyPolicy::Off,
        })
        .collect();
    let fan = |pool: SshPool, shared: bool| {
        let targets = targets.clone();
        let jobs = jobs.clone();
        async move {
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (i, d) in jobs {
                let pool = pool.clone();
                let target = targets[i].clone();
                set.spawn(async move {
                    let (tx, _rx) = mpsc::unbounded_channel();
                    let line = format!("/usr/bin/sv status {d}");
                    let timeout = Some(Duration::from_secs(60));
                    let cancel = CancellationToken::new();
                    if shared {
                        pool.exec_shared(&target, &line, timeout, &cancel, &tx)
                            .await
                    } else {
                        pool.exec(&target, &line, timeout, &cancel, &tx).await
                    }
                });
            }
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                if matches!(r, Ok(Ok(o)) if o.exit_code == Some(0)) {
                    ok += 1;
                }
            }
            (t.elapsed(), ok)
        }
    };
    if !warm_only {
        // (c) cold
        let mut times = Vec::new();
        for _ in 0..rounds {
            let (tx, _rx) = mpsc::unbounded_channel();
            let mut s = SshSettings::new(&key.private);
            s.pool = false;
            let pool = SshPool::new(s, Arc::new(KnownHosts::in_memory()), tx)?;
            let (d, ok) = fan(pool, false).await;
            anyhow::ensure!(
                ok == jobs.len(),
                "cold: only {ok} of {} succeeded",
                jobs.len()
            );
            times.push(d);
        }
        results.push((
            "fleetbus SSH layer, cold (new connection each)".into(),
            times,
        ));
    }
    // (d) warm: what the executor runs for 100 status actions (coalesced per host), then the
    // raw number with one remote exec per service, as before coalescing.
    let mut settings = SshSettings::new(&key.private);
    if let Some(ms) = std::env::var("COALESCE_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.coalesce_window = Duration::from_millis(ms);
    }
    let window = settings.coalesce_window;
    let (tx, _rx) = mpsc::unbounded_channel();
    let pool = SshPool::new(settings, Arc::new(KnownHosts::in_memory()), tx)?;
    let _ = fan(pool.clone(), false).await; // connect
                                            // Warm the persistent remote shells too (one per host): they belong to a warm pool.
    let _ = fan(pool.clone(), true).await;
    let mut times = Vec::new();
    let mut execs = Vec::new();
    for _ in 0..rounds {
        let before = pool.remote_execs();
        let (d, ok) = fan(pool.clone(), true).await;
        anyhow::ensure!(
            ok == jobs.len(),
            "warm shared: only {ok} of {} succeeded",
            jobs.len()
        );
        times.push(d);
        execs.push(pool.remote_execs() - before);
    }
    results.push((
        format!(
            "fleetbus warm (pooled): status reads coalesced per host, {} ms window ({} remote execs)",
            window.as_millis(),
            execs
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("/")
        ),
        times,
    ));
    let mut times = Vec::new();
    for _ in 0..rounds {
        let (d, ok) = fan(pool.clone(), false).await;
        anyhow::ensure!(
            ok == jobs.len(),
            "warm: only {ok} of {} succeeded",
            jobs.len()
        );
        times.push(d);
    }
    results.push((
        "fleetbus SSH layer, warm, raw: one remote exec per service (no coalescing)".into(),
        times,
    ));
    // (d') warm, one exec per host reading both of its services (how a status poll of a host
    // can be sent): 50 commands instead of 100.
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, h) in hosts.iter().enumerate() {
            let pool = pool.clone();
            let target = targets[i].clone();
            let line = format!("/usr/bin/sv status {}", h.dirs.join(" "));
            set.spawn(async move {
                let (tx, _rx) = mpsc::unbounded_channel();
                pool.exec(
                    &target,
                    &line,
                    Some(Duration::from_secs(60)),
                    &CancellationToken::new(),
                    &tx,
                )
                .await
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r, Ok(Ok(o)) if o.exit_code == Some(0)) {
                ok += 1;
            }
        }
        anyhow::ensure!(
            ok == hosts.len(),
            "per-host: only {ok} of {} succeeded",
            hosts.len()
        );
        times.push(t.elapsed());
    }
    results.push((
        "fleetbus SSH layer, warm, one exec per host (2 statuses each)".into(),
        times,
    ));

    // (e) end to end through NATS and the executor (warm): command → first output chunk.
    let nats = fleetbus_testkit::NatsServer::start();
    nats.ensure_streams().await;
    let mut config = fleetbus_executor::Config::demo();
    config.nats = nats.nats_config(Role::Executor);
    config.state_dir = Some(work.path().join("executor"));
    config.ssh.key = Some(key.private.clone());
    config.limits.max_concurrent = 128;
    config.limits.max_per_host = 4;
    config.ssh.coalesce_window_ms = window.as_millis() as u64;
    // The executor knows hosts only from the log: registered as events below.
    let registry: Vec<(HostSpec, Vec<ServiceSpec>)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = HostSpec {
                host: targets[i].host.clone(),
                address: h.sshd.ip().to_string(),
                port: h.sshd.port(),
                user: "fleet".into(),
                tags: vec![],
                roles: vec![],
                host_key_policy: HostKeyPolicy::AcceptNew,
                allow_adhoc: true,
                disabled: false,
            };
            let services = h
                .dirs
                .iter()
                .enumerate()
                .map(|(s, d)| ServiceSpec {
                    host: targets[i].host.clone(),
                    name: format!("svc{s}").parse().expect("literal service name"),
                    manager: ServiceManager::Runit,
                    unit: d.clone(),
                    actions: vec![ServiceAction::Status],
                    log_path: None,
                    expected_running: true,
                })
                .collect();
            (host, services)
        })
        .collect();
    // Status actions run `sudo -n /usr/bin/sv status <dir>`: allow exactly those.
    let mut sudoers = String::new();
    for (spec, services) in &registry {
        sudoers.push_str(&fleetbus_executor::sudoers::for_host(
            spec.host.as_str(),
            "fleet",
            services,
            &[],
        )?);
    }
    let _sudoers =
        SudoersFile::install(&format!("fleetbus-bench-{}", std::process::id()), &sudoers)?;
    let client = nats.client(Role::Admin).await;
    let js = async_nats::jetstream::new(client.clone());
    let mut evts = client.subscribe("fleet.evt.job.>").await?;
    let mut outs = client.subscribe("fleet.out.job.>").await?;
    let mut started = client.subscribe("fleet.evt.system.>").await?;
    for (host, services) in registry {
        let mut events = vec![Event::Host(HostEvent::Registered(host))];
        events.extend(
            services
                .into_iter()
                .map(|s| Event::Service(ServiceEvent::Registered(s))),
        );
        for event in events {
            let env = Envelope::new("bench", Actor::user("bench", UserRole::Admin), None, event);
            fleetbus_runtime::bus::publish(&js, &fleetbus_runtime::bus::Outgoing::event(&env)?)
                .await?;
        }
    }
    let token = CancellationToken::new();
    let exec = tokio::spawn(fleetbus_executor::run(config, token.clone()));
    tokio::time::timeout(Duration::from_secs(30), started.next()).await?;
    let admin = Actor::user("bench", UserRole::Admin);
    let mut e2e_total = Vec::new();
    let mut e2e_status = Vec::new();
    let mut first_chunk = Vec::new();
    for status_actions in [false, true] {
        for round in 0..=rounds {
            let t0 = Instant::now();
            let mut sent: HashMap<fleetbus_schemas::CommandId, Instant> = HashMap::new();
            for (n, (i, d)) in jobs.iter().enumerate() {
                let command = if status_actions {
                    // What an operator's "status of everything" sends: service status actions,
                    // which the executor runs as `sudo -n /usr/bin/sv status <dir>`, coalesced.
                    JobCommand::RunAction {
                        host: targets[*i].host.clone(),
                        service: format!("svc{}", n % SERVICES_PER_HOST)
                            .parse()
                            .expect("literal service name"),
                        action: ServiceAction::Status,
                        lines: None,
                    }
                } else {
                    // Ad-hoc `sv status` (no sudo, never coalesced), the same command as (a)–(d).
                    JobCommand::RunAdhoc {
                        host: targets[*i].host.clone(),
                        command: format!("sv status {d} # {round}.{n}"),
                    }
                };
                let env = CommandEnvelope::new(admin.clone(), BusCommand::Job(command));
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", env.id.to_string().as_str());
                sent.insert(env.id, Instant::now());
                js.publish_with_headers(env.subject(), h, fleetbus_schemas::encode(&env)?.into())
                    .await?;
            }
            let mut job_cmd = HashMap::new();
            let mut first: HashMap<fleetbus_schemas::JobId, Instant> = HashMap::new();
            let mut done = 0;
            let mut failed = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while done < jobs.len() {
                tokio::select! {
                    m = evts.next() => {
                        let Some(m) = m else { break };
                        let env: Envelope = fleetbus_schemas::decode(&m.payload)?;
                        match env.event {
                            Event::Job(JobEvent::Scheduled { job, .. }) => { if let Some(c) = env.causation { job_cmd.insert(job, c); } }
                            Event::Job(JobEvent::Succeeded { .. }) => done += 1,
                            Event::Job(JobEvent::Failed { reason, .. }) => {
                                done += 1;
                                failed.push(reason);
                            }
                            _ => {}
                        }
                    }
                    m = outs.next() => {
                        let Some(m) = m else { break };
                        let c: OutputChunk = fleetbus_schemas::decode(&m.payload)?;
                        first.entry(c.job).or_insert_with(Instant::now);
                    }
                    () = tokio::time::sleep_until(deadline) => anyhow::bail!("end-to-end round timed out ({done} done)"),
                }
            }
            let total = t0.elapsed();
            anyhow::ensure!(
                failed.is_empty(),
                "{} end-to-end jobs failed, e.g. {:?}",
                failed.len(),
                failed.first()
            );
            // Chunks may arrive before the Scheduled event is read; pair them up afterwards.
            let lat: Vec<Duration> = first
                .iter()
                .filter_map(|(job, t)| {
                    job_cmd
                        .get(job)
                        .and_then(|c| sent.get(c))
                        .map(|s| t.saturating_duration_since(*s))
                })
                .collect();
            if round > 0 && status_actions {
                e2e_status.push(total);
            } else if round > 0 {
                e2e_total.push(total);
                first_chunk.extend(lat);
            }
        }
    }
    // One command at a time: the latency a person clicking a button sees.
    let mut single = Vec::new();
    for (n, (i, d)) in jobs.iter().enumerate().take(50) {
        let env = CommandEnvelope::new(
            admin.clone(),
            BusCommand::Job(JobCommand::RunAdhoc {
                host: targets[*i].host.clone(),
                command: format!("sv status {d} # single.{n}"),
            }),
        );
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", env.id.to_string().as_str());
        let t0 = Instant::now();
        js.publish_with_headers(env.subject(), h, fleetbus_schemas::encode(&env)?.into())
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Chunks of earlier rounds may still be queued: only this command's job counts.
        let mut chunk_at: HashMap<fleetbus_schemas::JobId, Duration> = HashMap::new();
        let mut mine = None;
        let mut finished = false;
        while !(finished && mine.is_some_and(|j| chunk_at.contains_key(&j))) {
            tokio::select! {
                m = outs.next() => {
                    let Some(m) = m else { break };
                    let c: OutputChunk = fleetbus_schemas::decode(&m.payload)?;
                    chunk_at.entry(c.job).or_insert_with(|| t0.elapsed());
                }
                m = evts.next() => {
                    let Some(m) = m else { break };
                    let e: Envelope = fleetbus_schemas::decode(&m.payload)?;
                    match e.event {
                        Event::Job(JobEvent::Scheduled { job, .. }) if e.causation == Some(env.id) => mine = Some(job),
                        Event::Job(JobEvent::Succeeded { job, .. } | JobEvent::Failed { job, .. }) if Some(job) == mine => finished = true,
                        _ => {}
                    }
                }
                () = tokio::time::sleep_until(deadline) => anyhow::bail!("single command timed out"),
            }
        }
        if let Some(t) = mine.and_then(|j| chunk_at.get(&j)) {
            single.push(*t);
        }
    }
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), exec).await;
    results.push((
        "fleetbus end to end via NATS, warm (100 ad-hoc `sv status` jobs, not coalesced)".into(),
        e2e_total,
    ));
    results.push((
        "fleetbus end to end via NATS, warm (100 status actions: `sudo -n sv status`, coalesced)"
            .into(),
        e2e_status,
    ));

    table(&results, jobs.len(), rounds);
    first_chunk.sort();
    println!();
    println!(
        "command → first output chunk, 100 commands at once (end to end via NATS, warm, {} jobs): p50 {}, p90 {}, p99 {}, max {}",
        first_chunk.len(),
        ms(pct(&first_chunk, 0.5)),
        ms(pct(&first_chunk, 0.9)),
        ms(pct(&first_chunk, 0.99)),
        ms(first_chunk.last().copied().unwrap_or_default())
    );
    single.sort();
    println!(
        "command → first output chunk, one command at a time ({} commands): p50 {}, p90 {}, p99 {}",
        single.len(),
        ms(pct(&single, 0.5)),
        ms(pct(&single, 0.9)),
        ms(pct(&single, 0.99))
    );
    println!("(ratios > 1× mean fleetbus is that many times faster than the reference)");
    drop(hosts);
    Ok(())
}
