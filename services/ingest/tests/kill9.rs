//! Crash safety with the real binary: agents push batches (resending each until it gets a 202)
//! while `fleetbus-ingest` is killed with SIGKILL several times and restarted. Afterwards every
//! acknowledged report is in the log exactly once, the chain verifies and rebuild equals the
//! stored snapshots.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::ReportsBody;
use fleetbus_ingest::log::LogStore;
use fleetbus_ingest::State;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::EventId;
use fleetbus_testkit::NatsServer;

const AGENTS: usize = 3;
const BATCHES: usize = 40;
const PER_BATCH: usize = 50;
const KILLS: usize = 3;

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
        .env("RUST_LOG", "fleetbus_ingest=info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn fleetbus-ingest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_load_loses_nothing_acknowledged_and_doubles_nothing() {
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

    let admin_client = server.client(Role::Admin).await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(add_agent(&admin_client, &format!("db-{i}")).await);
    }

    let base = format!("http://{}", config.http_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let acked: Arc<std::sync::Mutex<HashSet<EventId>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut senders = tokio::task::JoinSet::new();
    for (i, agent) in agents.into_iter().enumerate() {
        let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
        senders.spawn(async move {
            let mut retries = 0u32;
            for b in 0..BATCHES {
                let batch = ReportsBody {
                    reports: (0..PER_BATCH)
                        .map(|n| report(&agent, (i * 100_000 + b * PER_BATCH + n) as u64))
                        .collect(),
                };
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "agent {i} could not deliver batch {b} in time"
                    );
                    let resp = http
                        .post(format!("{base}/v1/agents/{}/reports", agent.agent))
                        .bearer_auth(&agent.key)
                        .json(&batch)
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 202 => {
                            let mut set = acked.lock().expect("lock");
                            set.extend(batch.reports.iter().map(|r| r.id));
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
            }
            retries
        });
    }

    // Kill -9 and restart while the agents push.
    for k in 0..KILLS {
        let target = (k + 1) * AGENTS * BATCHES * PER_BATCH / (KILLS + 2);
        while acked.lock().expect("lock").len() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        tokio::time::sleep(Duration::from_millis(100)).await;
        child = spawn_ingest(&config_path, &log_file);
    }
    let mut retries = 0;
    while let Some(r) = senders.join_next().await {
        retries += r.expect("sender");
    }
    assert!(
        retries > 0,
        "the kills interrupted nobody; the test proved nothing"
    );
    // Let the restarted ingest drain, then stop it hard one last time.
    wait_healthy(config.http_addr).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), AGENTS * BATCHES * PER_BATCH);
    let store = LogStore::open(log_path(dir.path())).expect("open log");
    let mut seen: HashMap<EventId, u32> = HashMap::new();
    for e in store.export(1).expect("export") {
        let env = e.expect("entry").envelope().expect("envelope");
        if let Event::Agent(AgentEvent::Reported(_)) = env.event {
            *seen.entry(env.id).or_default() += 1;
        }
    }
    let missing = acked.iter().filter(|id| !seen.contains_key(id)).count();
    assert_eq!(missing, 0, "acknowledged reports lost");
    assert!(seen.values().all(|n| *n == 1), "a report was stored twice");
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    let (rebuild, _) = store.rebuild_as::<State>().expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert!(rebuild.snapshots_compared > 0, "{rebuild:?}");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert_eq!(log.matches("log opened").count(), KILLS + 1, "{log}");
}
