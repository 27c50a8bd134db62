//! Ingest benchmark: prints one table. Run it through `ops/bench/ingest` (release build).
//!
//! Everything runs on this machine against a real nats-server; the load generator shares the
//! cores with nats-server and ingest, as any single-machine measurement does. Counts are
//! bounded; `BENCH_EVENTS` (default 100,000) sets the bus/HTTP volume and `BENCH_LOG_EVENTS`
//! (default 1,000,000) the size of the log used for time travel and rebuild.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer, context::Publish, stream};
use bytes::Bytes;
use chrono::Utc;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::{ReportBody, ReportsBody};
use fleetbus_ingest::config::{Limits, LogTuning};
use fleetbus_ingest::{Config, State};
use fleetbus_log::{LogStore, NewEntry};
use fleetbus_projections::FleetStatus;
use fleetbus_schemas::commands::{AgentCommand, HostCommand};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::queries::LogHead;
use fleetbus_schemas::queries::{AsOf, LogHeadQuery, OverviewQuery, Reply};
use fleetbus_schemas::{Actor, AgentId, Command, CommandEnvelope, EventId, HostId, UserRole};
use fleetbus_testkit::NatsServer;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

mod sample;
use sample::{report_envelope, sample_report, HOSTS};

/// The log's decode path allocates many small strings; mimalloc makes a refold about a third
/// faster than the system allocator (see the README's rebuild numbers).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Row(String, String, String);

/// Rates from repeated rounds of one measurement.
struct Rates(Vec<f64>);

impl Rates {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
    /// `median of N (min–max)`, for the notes column.
    fn range(&self) -> String {
        let v = self.sorted();
        format!(
            "median of {} ({:.0}–{:.0})",
            v.len(),
            v.first().copied().unwrap_or(0.0),
            v.last().copied().unwrap_or(0.0)
        )
    }
}

/// Publishes `n` messages with up to `window` acks in flight.
async fn publish_window(
    js: &jetstream::Context,
    items: Vec<(String, Bytes, String)>,
    window: usize,
) -> Result<()> {
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    for (subject, payload, id) in items {
        let ack = js
            .send_publish(subject, Publish::build().payload(payload).message_id(id))
            .await
            .context("publish")?;
        inflight.push_back(ack);
        if inflight.len() >= window {
            if let Some(a) = inflight.pop_front() {
                a.await.context("publish ack")?;
            }
        }
    }
    for a in inflight {
        a.await.context("publish ack")?;
    }
    Ok(())
}

/// Raw JetStream: publish `n` events and consume them with a pull consumer at once. With
/// `ack_all` the consumer acks every 1,000th message (as ingest acks once per group commit);
/// otherwise every message.
/// Each round has its own stream, so no pull request of an earlier round can swallow messages.
async fn baseline(server: &NatsServer, n: usize, ack_all: bool, round: usize) -> Result<f64> {
    let js = jetstream::new(server.client(Role::Admin).await);
    let kind = if ack_all { "ALL" } else { "EXPLICIT" };
    let name = format!("BENCH_{kind}_{round}");
    let subject = format!("bench.{kind}.{round}");
    let s = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("bench stream")?;
    let c = s
        .get_or_create_consumer(
            "bench",
            consumer::pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: if ack_all {
                    consumer::AckPolicy::All
                } else {
                    consumer::AckPolicy::Explicit
                },
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .context("bench consumer")?;
    let items: Vec<_> = (0..n)
        .map(|i| {
            let env = report_envelope(i);
            let bytes = fleetbus_schemas::encode(&env).unwrap_or_default();
            (subject.to_owned(), Bytes::from(bytes), env.id.to_string())
        })
        .collect();
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut msgs = c.stream().max_messages_per_batch(1000).messages().await?;
        let mut got = 0;
        while got < n {
            match msgs.next().await {
                Some(Ok(m)) => {
                    got += 1;
                    if !ack_all || got % 1000 == 0 || got == n {
                        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    }
                }
                Some(Err(e)) => bail!("consume: {e}"),
                None => bail!("consumer ended"),
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    publish_window(&js, items, 512).await?;
    consume.await??;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn query<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    model: &str,
    q: &Q,
) -> Result<R> {
    let payload = fleetbus_schemas::encode(q)?;
    let msg = client
        .request(fleetbus_schemas::subjects::query(model), payload.into())
        .await
        .map_err(|e| anyhow::anyhow!("query {model}: {e}"))?;
    match fleetbus_schemas::decode::<Reply<R>>(&msg.payload)? {
        Reply::Ok(r) => Ok(r),
        Reply::Error(e) => bail!("query {model}: {e}"),
    }
}

async fn head(client: &async_nats::Client) -> Result<u64> {
    Ok(query::<_, LogHead>(client, "log_head", &LogHeadQuery {})
        .await?
        .seq)
}

async fn wait_head(client: &async_nats::Client, target: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while head(client).await? < target {
        if Instant::now() > deadline {
            bail!("log did not reach seq {target} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn send_command(js: &jetstream::Context, command: Command) -> Result<()> {
    let env = CommandEnvelope::new(Actor::user("bench", UserRole::Admin), command);
    let bytes = fleetbus_schemas::encode(&env)?;
    js.send_publish(
        env.subject(),
        Publish::build()
            .payload(bytes.into())
            .message_id(env.id.to_string()),
    )
    .await?
    .await?;
    Ok(())
}

struct Agent {
    name: String,
    key: String,
}

async fn register(client: &async_nats::Client) -> Result<Vec<Agent>> {
    let js = jetstream::new(client.clone());
    let mut agents = Vec::new();
    for i in 0..HOSTS {
        let name = format!("bench-{i}");
        let host = HostId::new(&name)?;
        send_command(
            &js,
            Command::Host(HostCommand::Add(HostSpec {
                host: host.clone(),
                address: "127.0.0.2".into(),
                port: 22,
                user: "fleet".into(),
                tags: vec![],
                roles: vec![],
                host_key_policy: HostKeyPolicy::AcceptNew,
                allow_adhoc: false,
                disabled: false,
            })),
        )
        .await?;
        agents.push((name, host));
    }
    wait_for_registry(client, |r| r.hosts.len() >= HOSTS).await?;
    let mut out = Vec::new();
    for (name, host) in agents {
        let key = hex::encode(rand::random::<[u8; 32]>());
        send_command(
            &js,
            Command::Agent(AgentCommand::IssueKey {
                agent: AgentId::new(&name)?,
                host,
                key_id: format!("k-{name}"),
                key_hash: hex::encode(Sha256::digest(key.as_bytes())),
            }),
        )
        .await?;
        out.push(Agent { name, key });
    }
    wait_for_registry(client, |r| r.agents.len() >= HOSTS).await?;
    Ok(out)
}

async fn wait_for_registry(
    client: &async_nats::Client,
    f: impl Fn(&fleetbus_projections::Registry) -> bool,
) -> Result<()> {
    for _ in 0..500 {
        let r: fleetbus_projections::Registry = query(
            client,
            "registry",
            &fleetbus_schemas::queries::RegistryQuery {},
        )
        .await?;
        if f(&r) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("registry did not fill")
}

fn body(agent: &Agent, i: usize) -> ReportBody {
    let r = sample_report(&agent.name, i);
    ReportBody {
        id: EventId::new(),
        time: Utc::now(),
        agent: r.agent,
        host: r.host,
        agent_version: r.agent_version,
        resources: r.resources,
        services: r.services,
        config_version: None,
        config_hash: None,
    }
}

fn config(server: &NatsServer, dir: &std::path::Path) -> Config {
    Config {
        version: 1,
        state_dir: dir.to_owned(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], fleetbus_testkit::free_port())),
        nats: server.nats_config(Role::Ingest),
        limits: Limits {
            agent_requests_per_s: 1_000_000,
            agent_burst: 1_000_000,
            ..Limits::default()
        },
        // `BENCH_LINGER_MS` overrides the writer's linger (`log.linger_ms`) to compare settings.
        log: LogTuning {
            linger_ms: env_usize("BENCH_LINGER_MS", LogTuning::default().linger_ms as usize) as u64,
            ..LogTuning::default()
        },
    }
}

async fn start(
    config: Config,
) -> Result<(
    CancellationToken,
    tokio::task::JoinHandle<Result<(), fleetbus_ingest::IngestError>>,
)> {
    let token = CancellationToken::new();
    let handle = tokio::spawn(fleetbus_ingest::run(config.clone(), token.clone()));
    let url = format!("http://{}/healthz", config.http_addr);
    for _ in 0..1000 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok((token, handle));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("ingest did not start")
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env_usize("BENCH_EVENTS", 100_000);
    let log_n = env_usize("BENCH_LOG_EVENTS", 1_000_000);
    let mut rows: Vec<Row> = Vec::new();
    let bench_started = Instant::now();
    let server = NatsServer::start();
    server.ensure_streams().await;
    let admin = server.client(Role::Admin).await;
    let admin_js = jetstream::new(admin.clone());

    // 1. Baseline: raw JetStream publish → pull consume (both at once), acks in flight.
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    eprintln!("baselines: {n} messages through raw JetStream streams, {rounds} rounds each…");
    let mut base_explicit = Vec::new();
    let mut base_all = Vec::new();
    for round in 0..rounds {
        base_explicit.push(baseline(&server, n, false, round).await?);
        base_all.push(baseline(&server, n, true, round).await?);
    }
    let (base_explicit, base_all) = (Rates(base_explicit), Rates(base_all));
    rows.push(Row(
        "raw JetStream publish→consume (baseline)".into(),
        format!("{:>9.0} ev/s", base_explicit.median()),
        format!(
            "{n} msgs, 512 publish acks in flight, every message acked; {}",
            base_explicit.range()
        ),
    ));
    rows.push(Row(
        "raw JetStream, consumer acks all (baseline)".into(),
        format!("{:>9.0} ev/s", base_all.median()),
        format!(
            "one ack per 1,000 messages, as ingest acks per commit; {}",
            base_all.range()
        ),
    ));
    let base = base_explicit.median().max(base_all.median());

    // 2. Bus → durable log, through ingest.
    let dir = tempfile::tempdir()?;
    let cfg = config(&server, dir.path());
    let (token, handle) = start(cfg.clone()).await?;
    let agents = register(&admin).await?;
    eprintln!("bus → log: {n} events, {rounds} rounds…");
    let mut bus = Vec::new();
    for _ in 0..rounds {
        let start_seq = head(&admin).await?;
        let items: Vec<_> = (0..n)
            .map(|i| {
                let env = report_envelope(i);
                let bytes = fleetbus_schemas::encode(&env).unwrap_or_default();
                (env.subject(), Bytes::from(bytes), env.id.to_string())
            })
            .collect();
        let started = Instant::now();
        publish_window(&admin_js, items, 512).await?;
        wait_head(&admin, start_seq + n as u64, Duration::from_secs(300)).await?;
        bus.push(n as f64 / started.elapsed().as_secs_f64());
    }
    let bus = Rates(bus);
    rows.push(Row(
        "bus → durable log (fsync per group commit)".into(),
        format!("{:>9.0} ev/s", bus.median()),
        format!(
            "{:.0} % of the faster baseline; {}",
            100.0 * bus.median() / base,
            bus.range()
        ),
    ));

    // 3. HTTP agent path: batches of 100 and single reports, 202 after commit.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base_url = format!("http://{}", cfg.http_addr);
    let agents = Arc::new(agents);
    let http_n = n;
    eprintln!("http batches: {http_n} reports…");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_agent = http_n / HOSTS;
    for a in 0..HOSTS {
        let (http, base_url, agents) = (http.clone(), base_url.clone(), agents.clone());
        tasks.spawn(async move {
            let agent = &agents[a];
            let mut sent = 0;
            while sent < per_agent {
                let k = 100.min(per_agent - sent);
                let batch = ReportsBody {
                    reports: (0..k).map(|i| body(agent, sent + i)).collect(),
                };
                let r = http
                    .post(format!("{base_url}/v1/agents/{}/reports", agent.name))
                    .bearer_auth(&agent.key)
                    .json(&batch)
                    .send()
                    .await?;
                if r.status() != 202 {
                    bail!("batch answered {}", r.status());
                }
                sent += k;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let http_batch = (per_agent * HOSTS) as f64 / started.elapsed().as_secs_f64();
    rows.push(Row(
        "HTTP agent path, batches of 100".into(),
        format!("{http_batch:>9.0} rep/s"),
        format!("{HOSTS} agents, 1 request in flight each"),
    ));

    let singles = (n / 5).max(1000);
    eprintln!("http singles: {singles} reports…");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let conc = 64;
    for c in 0..conc {
        let (http, base_url, agents) = (http.clone(), base_url.clone(), agents.clone());
        tasks.spawn(async move {
            let agent = &agents[c % HOSTS];
            for i in 0..singles / conc {
                let r = http
                    .post(format!("{base_url}/v1/agents/{}/report", agent.name))
                    .bearer_auth(&agent.key)
                    .json(&body(agent, i))
                    .send()
                    .await?;
                if r.status() != 202 {
                    bail!("report answered {}", r.status());
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let http_single = ((singles / conc) * conc) as f64 / started.elapsed().as_secs_f64();
    rows.push(Row(
        "HTTP agent path, one report per request".into(),
        format!("{http_single:>9.0} rep/s"),
        format!("{conc} requests in flight"),
    ));

    // 4. Latency at a fixed offered load: 2,000 single reports/s for 5 s, open loop.
    let rate = 2000usize;
    let total = rate * 5;
    eprintln!("latency at {rate}/s for 5 s…");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let (http, base_url, agents) = (http.clone(), base_url.clone(), agents.clone());
        tasks.spawn(async move {
            let agent = &agents[i % HOSTS];
            let b = body(agent, i);
            let t = Instant::now();
            let r = http
                .post(format!("{base_url}/v1/agents/{}/report", agent.name))
                .bearer_auth(&agent.key)
                .json(&b)
                .send()
                .await?;
            if r.status() != 202 {
                bail!("report answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(t.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        lat.push(r??);
    }
    lat.sort();
    rows.push(Row(
        format!("latency at {rate} reports/s (202 = committed)"),
        format!("p50 {}", ms(percentile(&lat, 0.5))),
        format!(
            "p99 {}, max {}",
            ms(percentile(&lat, 0.99)),
            ms(percentile(&lat, 1.0))
        ),
    ));
    token.cancel();
    handle.await??;

    // 5. A big log for rebuild and time travel, appended directly (the log's content is what
    //    these measure, not how it arrived).
    eprintln!("building a {log_n}-event log…");
    let big = tempfile::tempdir()?;
    let big_path = big.path().join("ingest").join("log.redb");
    std::fs::create_dir_all(big_path.parent().context("parent")?)?;
    let store = LogStore::open(&big_path)?;
    let mut state = State::default();
    let started = Instant::now();
    let mut i = 0;
    while i < log_n {
        let k = 1000.min(log_n - i);
        let batch: Vec<NewEntry> = (i..i + k)
            .map(|j| {
                let env = report_envelope(j);
                let bytes = fleetbus_schemas::encode(&env).unwrap_or_default();
                NewEntry {
                    subject: env.subject(),
                    bytes: bytes.into(),
                    envelope: env,
                }
            })
            .collect();
        store.append_batch(&batch, &mut state, 10_000)?;
        i += k;
    }
    let append_rate = log_n as f64 / started.elapsed().as_secs_f64();
    rows.push(Row(
        "direct log append (1,000 per txn, fold + snapshots)".into(),
        format!("{append_rate:>9.0} ev/s"),
        format!("{log_n} events"),
    ));
    let mut rebuilds = Vec::new();
    let mut compared = 0;
    for _ in 0..rounds {
        let (rebuild, _) = store.rebuild_as::<State>()?;
        if !rebuild.equal() {
            bail!("rebuild differs: {rebuild:?}");
        }
        compared = rebuild.snapshots_compared;
        rebuilds.push(rebuild.events as f64 / rebuild.seconds);
    }
    let rebuilds = Rates(rebuilds);
    rows.push(Row(
        "projection rebuild from the log".into(),
        format!("{:>9.0} ev/s", rebuilds.median()),
        format!(
            "{log_n} events, {compared} snapshots compared; {}",
            rebuilds.range()
        ),
    ));
    let verify_started = Instant::now();
    let v = store.verify()?;
    if !v.ok() {
        bail!("verify failed: {v:?}");
    }
    rows.push(Row(
        "hash-chain verify".into(),
        format!(
            "{:>9.0} ev/s",
            v.entries as f64 / verify_started.elapsed().as_secs_f64()
        ),
        String::new(),
    ));
    let mid = store.head()?.commit_ms;
    drop(store);

    // 6. Time travel over the bus on the big log.
    let mut cfg2 = config(&server, big.path());
    cfg2.log.snapshot_every = 10_000;
    let (token, handle) = start(cfg2.clone()).await?;
    let mut lat = Vec::new();
    for q in 0..100u64 {
        let seq = 1 + (q * 7919 * 997) % log_n as u64;
        let t = Instant::now();
        let f: FleetStatus = query(
            &admin,
            "overview",
            &OverviewQuery {
                as_of: Some(AsOf::Seq(seq)),
            },
        )
        .await?;
        lat.push(t.elapsed());
        if f.hosts.is_empty() && seq > HOSTS as u64 {
            bail!("empty overview at {seq}");
        }
    }
    lat.sort();
    let t = Instant::now();
    let _: FleetStatus = query(
        &admin,
        "overview",
        &OverviewQuery {
            as_of: Some(AsOf::Time(
                chrono::DateTime::from_timestamp_millis(mid as i64 - 1).context("time")?,
            )),
        },
    )
    .await?;
    let by_time = t.elapsed();
    rows.push(Row(
        format!("time-travel overview at {log_n} events"),
        format!("p50 {}", ms(percentile(&lat, 0.5))),
        format!(
            "p99 {}; as-of-time {}; snapshot every 10,000",
            ms(percentile(&lat, 0.99)),
            ms(by_time)
        ),
    ));
    token.cancel();
    handle.await??;

    // 7. Idle RSS of the real binary on the big log.
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("fleetbus-ingest"))
        .context("binary path")?;
    if bin.is_file() {
        let cfg_path = big.path().join("ingest.toml");
        let cfg3 = config(&server, big.path());
        std::fs::write(&cfg_path, toml::to_string(&cfg3)?)?;
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(big.path().join("ingest.stderr"))?)
            .spawn()?;
        let url = format!("http://{}/healthz", cfg3.http_addr);
        for _ in 0..1000 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = match child.try_wait()? {
            // It exited: say why instead of reading a dead process's (empty) memory.
            Some(status) => format!(
                "exited ({status}): {}",
                std::fs::read_to_string(big.path().join("ingest.stderr"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            None => std::fs::read_to_string(format!("/proc/{}/status", child.id()))?
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
                .unwrap_or_default(),
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        rows.push(Row(
            "idle RSS of fleetbus-ingest".into(),
            rss,
            format!("{HOSTS} hosts, {log_n}-event log open"),
        ));
    } else {
        rows.push(Row(
            "idle RSS of fleetbus-ingest".into(),
            "n/a".into(),
            format!("{} not built", bin.display()),
        ));
    }

    println!();
    println!(
        "fleetbus ingest benchmark — {} cores, nats-server on loopback, {:.0} s total",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        bench_started.elapsed().as_secs_f64()
    );
    println!();
    println!("| {:<52} | {:>16} | {:<48} |", "measure", "result", "notes");
    println!("|{:-<54}|{:->18}|{:-<50}|", "", "", "");
    for Row(a, b, c) in &rows {
        println!("| {a:<52} | {b:>16} | {c:<48} |");
    }
    Ok(())
}
