//! Shared setup for ingest's integration tests: a real nats-server with the fleetbus streams,
//! ingest in-process (or as the real binary), agents registered through real commands.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use fleetbus_bus_config::{Retention, Role};
use fleetbus_ingest::api::ReportBody;
use fleetbus_ingest::config::{Limits, LogTuning};
use fleetbus_ingest::Config;
use fleetbus_schemas::commands::{AgentCommand, HostCommand};
use fleetbus_schemas::events::agent::{Resources, ServiceObservation, ServiceState};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::queries::Reply;
use fleetbus_schemas::{Actor, AgentId, Command, CommandEnvelope, EventId, HostId, UserRole};
use fleetbus_testkit::NatsServer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Streams as bus-config defines them, but with a 1 s duplicate window on EVENTS (so a test can
/// resend after the window) and a 2 s ack wait (so messages of a killed ingest come back fast).
pub async fn ensure_test_streams(server: &NatsServer) {
    let js = jetstream::new(server.client(Role::Admin).await);
    let mut defs = fleetbus_bus_config::definitions(&Retention::default(), 1);
    for s in &mut defs.streams {
        if s.name == "EVENTS" {
            s.duplicate_window = Duration::from_secs(1);
        }
    }
    for c in &mut defs.consumers {
        c.config.ack_wait = Duration::from_secs(2);
    }
    fleetbus_bus_config::ensure(&js, &defs)
        .await
        .expect("ensure streams");
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fleetbus_ingest=info")),
        )
        .with_test_writer()
        .try_init();
}

pub fn test_config(server: &NatsServer, state_dir: &Path) -> Config {
    Config {
        version: 1,
        state_dir: state_dir.to_owned(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], fleetbus_testkit::free_port())),
        nats: server.nats_config(Role::Ingest),
        limits: Limits {
            agent_requests_per_s: 100_000,
            agent_burst: 100_000,
            ..Limits::default()
        },
        log: LogTuning {
            snapshot_every: 1000,
            ..LogTuning::default()
        },
    }
}

/// Ingest running in this process.
pub struct InProcess {
    pub config: Config,
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), fleetbus_ingest::IngestError>>,
}

impl InProcess {
    pub async fn start(config: Config) -> InProcess {
        init_logs();
        let token = CancellationToken::new();
        let handle = tokio::spawn(fleetbus_ingest::run(config.clone(), token.clone()));
        wait_healthy(config.http_addr).await;
        InProcess {
            config,
            token,
            handle,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.config.http_addr)
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.handle
            .await
            .expect("ingest task")
            .expect("ingest stopped cleanly");
    }
}

pub async fn wait_healthy(addr: SocketAddr) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/healthz");
    let ok = fleetbus_testkit::wait_for(
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "ingest did not become healthy on {addr}");
}

pub fn admin() -> Actor {
    Actor::user("admin", UserRole::Admin)
}

/// Publishes a command as admin; returns its id.
pub async fn send_command(
    js: &jetstream::Context,
    actor: Actor,
    command: Command,
) -> CommandEnvelope {
    let env = CommandEnvelope::new(actor, command);
    send_raw_command(js, &env).await;
    env
}

pub async fn send_raw_command(js: &jetstream::Context, env: &CommandEnvelope) {
    let bytes = fleetbus_schemas::encode(env).expect("encode command");
    js.send_publish(
        env.subject(),
        jetstream::context::Publish::build()
            .payload(bytes.into())
            .message_id(env.id.to_string()),
    )
    .await
    .expect("publish command")
    .await
    .expect("command ack");
}

/// Asks a query and returns the answer (panics on an error reply).
pub async fn query<Q: Serialize, R: DeserializeOwned>(
    client: &async_nats::Client,
    model: &str,
    q: &Q,
) -> R {
    match query_reply(client, model, q).await {
        Reply::Ok(r) => r,
        Reply::Error(e) => panic!("query {model} failed: {e}"),
    }
}

pub async fn query_reply<Q: Serialize, R: DeserializeOwned>(
    client: &async_nats::Client,
    model: &str,
    q: &Q,
) -> Reply<R> {
    let payload = fleetbus_schemas::encode(q).expect("encode query");
    let msg = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(fleetbus_schemas::subjects::query(model), payload.into()),
    )
    .await
    .expect("query answered in time")
    .expect("query request");
    fleetbus_schemas::decode(&msg.payload).expect("decode reply")
}

pub struct TestAgent {
    pub agent: AgentId,
    pub host: HostId,
    pub key: String,
}

pub fn host_spec(host: &HostId) -> HostSpec {
    HostSpec {
        host: host.clone(),
        address: "127.0.0.2".into(),
        port: 22,
        user: "fleet".into(),
        tags: vec!["web".into()],
        roles: vec![],
        host_key_policy: HostKeyPolicy::AcceptNew,
        allow_adhoc: false,
        disabled: false,
    }
}

/// Registers `name` as a host and issues its agent a key, through real commands; waits until
/// ingest knows the key.
pub async fn add_agent(admin_client: &async_nats::Client, name: &str) -> TestAgent {
    let js = jetstream::new(admin_client.clone());
    let host = HostId::new(name).expect("host id");
    let agent = AgentId::new(name).expect("agent id");
    let key = hex::encode(rand::random::<[u8; 32]>());
    let key_hash = hex::encode(Sha256::digest(key.as_bytes()));
    send_command(
        &js,
        admin(),
        Command::Host(HostCommand::Add(host_spec(&host))),
    )
    .await;
    // Areas are consumed independently: wait for the host before issuing its agent a key.
    let registered = fleetbus_testkit::wait_for(
        || {
            let client = admin_client.clone();
            let host = host.clone();
            async move {
                let reg: fleetbus_projections::Registry = query(
                    &client,
                    "registry",
                    &fleetbus_schemas::queries::RegistryQuery {},
                )
                .await;
                reg.hosts.contains_key(&host)
            }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(registered, "host {name} was not registered");
    send_command(
        &js,
        admin(),
        Command::Agent(AgentCommand::IssueKey {
            agent: agent.clone(),
            host: host.clone(),
            key_id: format!("k-{name}"),
            key_hash,
        }),
    )
    .await;
    let known = fleetbus_testkit::wait_for(
        || {
            let client = admin_client.clone();
            let agent = agent.clone();
            async move {
                let reg: fleetbus_projections::Registry = query(
                    &client,
                    "registry",
                    &fleetbus_schemas::queries::RegistryQuery {},
                )
                .await;
                reg.agents.get(&agent).is_some_and(|a| a.key_hash.is_some())
            }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(known, "agent {name} was not registered");
    TestAgent { agent, host, key }
}

pub fn report(agent: &TestAgent, n: u64) -> ReportBody {
    ReportBody {
        id: EventId::new(),
        time: Utc::now(),
        agent: agent.agent.clone(),
        host: agent.host.clone(),
        agent_version: "0.1.0".into(),
        resources: Resources {
            cpu_pct: (n % 100) as f32,
            mem_total_kb: 2_000_000,
            mem_used_kb: 1_000_000 + n,
            disk_total_kb: 10_000_000,
            disk_used_kb: 4_000_000,
            load1: 0.5,
            load5: 0.25,
            load15: 0.125,
            uptime_s: 1000 + n,
        },
        services: vec![ServiceObservation {
            name: "nginx".parse().expect("name"),
            state: if n.is_multiple_of(7) {
                ServiceState::Failed
            } else {
                ServiceState::Running
            },
            detail: None,
        }],
        config_version: None,
        config_hash: None,
    }
}

pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ingest").join("log.redb")
}
