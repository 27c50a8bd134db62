//! Crash safety with the real binary, at the timing systemd's `RestartSec` gives production:
//! agents push batches over HTTP (resending each until it gets a 202) while services publish
//! events straight onto the bus, and `fleetbus-ingest` is killed with SIGKILL twenty times at
//! random moments and restarted after a random 0.2–3 s. Afterwards every acknowledged event
//! (an HTTP 202, a JetStream publish ack) is in the log exactly once, no agent's resend waited
//! for JetStream's duplicate window to pass, the chain verifies and rebuild equals the stored
//! snapshots.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use common::*;
use fleetbus_bus_config::streams::DUPLICATE_WINDOW;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::ReportsBody;
use fleetbus_log::LogStore;
use fleetbus_projections::State;
use fleetbus_schemas::events::agent::AgentReport;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::queries::{model, Committed, CommittedQuery, Reply};
use fleetbus_schemas::{Actor, Envelope, EventId};
use fleetbus_testkit::NatsServer;
use rand::{Rng, SeedableRng};

const AGENTS: usize = 3;
/// Pause of each HTTP agent between two batches.
const BATCH_PAUSE: Duration = Duration::from_millis(100);
const PER_BATCH: usize = 25;
const KILLS: usize = 20;
/// Services publishing on the bus while ingest dies, each this many events per 50 ms.
const PUBLISHERS: usize = 2;
const PER_TICK: usize = 10;

fn spawn_ingest(config_path: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("clone");
    Command::new(env!("CARGO_BIN_EXE_fleetbus-ingest"))
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "fleetbus_ingest=info,fleetbus_runtime=info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn fleetbus-ingest")
}

/// A report as a service would publish it on the bus (not through the agent API).
fn bus_report(agent: &TestAgent, n: u64) -> Envelope {
    let r = report(agent, n);
    Envelope::new(
        "scheduler",
        Actor::agent(r.agent.as_str()),
        None,
        Event::Agent(AgentEvent::Reported(AgentReport {
            agent: r.agent,
            host: r.host,
            agent_version: r.agent_version,
            resources: r.resources,
            services: r.services,
            config_version: r.config_version,
            config_hash: r.config_hash,
        })),
    )
}

/// Publishes on the bus until `stop`, recording every id JetStream acknowledged.
async fn publish_on_bus(
    js: jetstream::Context,
    agent: TestAgent,
    acked: Arc<Mutex<Vec<EventId>>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut acks = Vec::with_capacity(PER_TICK);
        for _ in 0..PER_TICK {
            n += 1;
            let env = bus_report(&agent, n);
            let bytes = fleetbus_schemas::encode(&env).expect("encode");
            let publish = Publish::build()
                .payload(Bytes::from(bytes))
                .message_id(env.id.to_string());
            let ack = js
                .send_publish(env.subject(), publish)
                .await
                .expect("publish");
            acks.push((env.id, ack));
        }
        for (id, ack) in acks {
            ack.await.expect("JetStream acknowledges the event");
            acked.lock().expect("lock").push(id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes batches over HTTP until `stop` (so the agents span every kill, however fast the
/// machine), resending each until it gets a 202. Returns the number of resends, the longest
/// time one batch took from its first send to its 202, and the number of batches delivered.
async fn push_over_http(
    http: reqwest::Client,
    base: String,
    agent: TestAgent,
    i: usize,
    acked: Arc<Mutex<HashSet<EventId>>>,
    stop: Arc<AtomicBool>,
) -> (u32, Duration, usize) {
    let mut retries = 0u32;
    let mut longest = Duration::ZERO;
    let mut b = 0;
    while !stop.load(Ordering::Relaxed) {
        b += 1;
        let batch = ReportsBody {
            reports: (0..PER_BATCH)
                .map(|n| report(&agent, (i * 10_000_000 + b * PER_BATCH + n) as u64))
                .collect(),
        };
        let first_sent = Instant::now();
        loop {
            // A resend must not wait for JetStream to forget the first copy (the bug this
            // guards against: 503 until the duplicate window had passed).
            assert!(
                first_sent.elapsed() < DUPLICATE_WINDOW / 2,
                "agent {i} could not deliver batch {b} within half the duplicate window"
            );
            let resp = http
                .post(format!("{base}/v1/agents/{}/reports", agent.agent))
                .bearer_auth(&agent.key)
                .json(&batch)
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 202 => {
                    acked
                        .lock()
                        .expect("lock")
                        .extend(batch.reports.iter().map(|r| r.id));
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    assert!(
                        status.is_server_error(),
                        "unexpected {status}: {:?}",
                        r.text().await
                    );
                }
                Err(_) => {}
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        longest = longest.max(first_sent.elapsed());
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    (retries, longest, b)
}

/// Waits (bounded) until `id` is committed: events are read in stream order, so the last one
/// a publisher had acknowledged being there means all of its earlier ones are too.
async fn wait_committed(client: &async_nats::Client, id: EventId) {
    for _ in 0..30 {
        let q = CommittedQuery { id, wait_ms: 5_000 };
        if let Reply::Ok(Committed { .. }) = query_reply(client, model::COMMITTED, &q).await {
            return;
        }
    }
    panic!("event {id} never reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_restart_sec_timing_loses_nothing_acknowledged_and_doubles_nothing() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&server, dir.path());
    config.limits.commit_timeout_ms = 4000;
    config.log.snapshot_every = 500;
    let config_path = dir.path().join("ingest.toml");
    std::fs::write(&config_path, toml::to_string(&config).expect("toml")).expect("write config");
    let log_file = dir.path().join("ingest.log");
    let mut child = spawn_ingest(&config_path, &log_file);
    wait_healthy(config.http_addr).await;

    let seed: u64 = rand::random();
    println!("kill timing seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let admin_client = server.client(Role::Admin).await;
    let mut agents = Vec::new();
    for i in 0..AGENTS + PUBLISHERS {
        agents.push(add_agent(&admin_client, &format!("db-{i}")).await);
    }
    let bus_agents = agents.split_off(AGENTS);

    let base = format!("http://{}", config.http_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let http_acked: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let mut senders = tokio::task::JoinSet::new();
    for (i, agent) in agents.into_iter().enumerate() {
        senders.spawn(push_over_http(
            http.clone(),
            base.clone(),
            agent,
            i,
            http_acked.clone(),
            stop.clone(),
        ));
    }
    let bus_acked: Vec<Arc<Mutex<Vec<EventId>>>> =
        (0..PUBLISHERS).map(|_| Arc::default()).collect();
    let mut publishers = tokio::task::JoinSet::new();
    for (agent, acked) in bus_agents.into_iter().zip(&bus_acked) {
        let js = jetstream::new(server.client(Role::Scheduler).await);
        publishers.spawn(publish_on_bus(js, agent, acked.clone(), stop.clone()));
    }

    // Kill -9 at a random moment of each run, restart after a random 0.2–3 s.
    let mut downtimes = Vec::new();
    for _ in 0..KILLS {
        wait_healthy(config.http_addr).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let down = Duration::from_millis(rng.gen_range(200..3000));
        downtimes.push(down);
        tokio::time::sleep(down).await;
        child = spawn_ingest(&config_path, &log_file);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = publishers.join_next().await {
        r.expect("publisher");
    }
    let (mut retries, mut longest, mut batches) = (0, Duration::ZERO, 0);
    while let Some(r) = senders.join_next().await {
        let (n, l, b) = r.expect("sender");
        retries += n;
        longest = longest.max(l);
        batches += b;
    }
    println!(
        "{KILLS} kills, downtimes {:?}..{:?}; {retries} HTTP resends, longest batch {longest:?}",
        downtimes.iter().min(),
        downtimes.iter().max()
    );
    assert!(
        retries > 0,
        "the kills interrupted nobody; the test proved nothing"
    );

    // Let the restarted ingest take in everything the publishers had acknowledged, then stop
    // it hard one last time.
    wait_healthy(config.http_addr).await;
    let ingest_client = server.client(Role::Web).await;
    for acked in &bus_acked {
        let last = *acked.lock().expect("lock").last().expect("published");
        wait_committed(&ingest_client, last).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let http_acked = http_acked.lock().expect("lock").clone();
    assert_eq!(http_acked.len(), batches * PER_BATCH);
    let mut bus_ids = HashSet::new();
    for acked in &bus_acked {
        bus_ids.extend(acked.lock().expect("lock").iter().copied());
    }
    let store = LogStore::open(log_path(dir.path())).expect("open log");
    let mut seen: HashMap<EventId, u32> = HashMap::new();
    for e in store.export(1).expect("export") {
        let env = e.expect("entry").envelope().expect("envelope");
        if let Event::Agent(AgentEvent::Reported(_)) = env.event {
            *seen.entry(env.id).or_default() += 1;
        }
    }
    let lost_http = http_acked
        .iter()
        .filter(|id| !seen.contains_key(id))
        .count();
    let lost_bus = bus_ids.iter().filter(|id| !seen.contains_key(id)).count();
    println!(
        "acknowledged: {} over HTTP, {} on the bus; lost {lost_http} + {lost_bus}",
        http_acked.len(),
        bus_ids.len()
    );
    assert_eq!(lost_http, 0, "reports acknowledged over HTTP were lost");
    assert_eq!(lost_bus, 0, "events acknowledged by JetStream were lost");
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    let (rebuild, _) = store.rebuild_as::<State>().expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert!(rebuild.snapshots_compared > 0, "{rebuild:?}");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert_eq!(log.matches("log opened").count(), KILLS + 1, "{log}");
}
