//! Fleet management on a real nats-server with ingest in-process: managed configs through real
//! commands, the agent routes (ETag fetch, live config, drift, pull, push, update acks), sealed
//! snapshots and passphrase recovery, blocking, and assets from the object store.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_schemas::commands::{AgentCommand, ConfigCommand};
use fleetbus_schemas::events::config::Instruction;
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{ConfigEvent, Event, SystemEvent};
use fleetbus_schemas::http::{
    DesiredReply, Manifest, RecoveryReply, StoredReply, PASSPHRASE_HEADER,
};
use fleetbus_schemas::queries::config::DiffKind;
use fleetbus_schemas::queries::config::{AgentConfigView, ConfigQuery, ConfigSummary};
use fleetbus_schemas::queries::config::{DriftState, DriftView, Management};
use fleetbus_schemas::queries::LogRecord;
use fleetbus_schemas::queries::{EventsQuery, Reply};
use fleetbus_schemas::{AgentId, Command, CommandId};
use fleetbus_testkit::NatsServer;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

async fn view(client: &async_nats::Client, agent: &AgentId) -> Option<AgentConfigView> {
    match query_reply::<_, AgentConfigView>(
        client,
        "config",
        &ConfigQuery {
            agent: Some(agent.clone()),
        },
    )
    .await
    {
        Reply::Ok(v) => Some(v),
        Reply::Error(_) => None,
    }
}

/// Polls the agent's config view until `pred` holds.
async fn wait_view(
    client: &async_nats::Client,
    agent: &AgentId,
    what: &str,
    pred: impl Fn(&AgentConfigView) -> bool,
) -> AgentConfigView {
    for _ in 0..400 {
        if let Some(v) = view(client, agent).await {
            if pred(&v) {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        view(client, agent).await
    );
}

async fn rejection_of(client: &async_nats::Client, id: CommandId) -> (RejectKind, String) {
    for _ in 0..400 {
        let page: Vec<LogRecord> = query(
            client,
            "events",
            &EventsQuery {
                domain: Some("system".into()),
                type_name: Some("command_rejected".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await;
        for r in page {
            if let Event::System(SystemEvent::CommandRejected {
                command: Some(c),
                reason,
                message,
                ..
            }) = &r.envelope.event
            {
                if *c == id {
                    return (reason.clone(), message.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("command {id} was not rejected");
}

async fn config_events(client: &async_nats::Client, type_name: &str) -> Vec<ConfigEvent> {
    let page: Vec<LogRecord> = query(
        client,
        "events",
        &EventsQuery {
            domain: Some("config".into()),
            type_name: Some(type_name.into()),
            limit: 1000,
            ..Default::default()
        },
    )
    .await;
    page.into_iter()
        .filter_map(|r| match r.envelope.event {
            Event::Config(e) => Some(e),
            _ => None,
        })
        .collect()
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn hash_passphrase(p: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managed_config_drift_pull_push_and_update_through_commands_and_agent_routes() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let a = add_agent(&admin_client, "web-1").await;
    let http = Http {
        client: reqwest::Client::new(),
        base: ingest.base(),
    };
    let config_url = http.url("/v1/agents/web-1/config");

    // Report-only: reports, no config.
    let (s, _) = {
        let r = http
            .client
            .post(http.url("/v1/agents/web-1/report"))
            .bearer_auth(&a.key)
            .json(&report(&a, 1))
            .send()
            .await
            .expect("report");
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 202);
    let v = wait_view(&admin_client, &a.agent, "report-only", |v| {
        v.drift.management == Management::ReportOnly
    })
    .await;
    assert_eq!(v.drift.state, DriftState::Unmanaged);
    let r = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let d: DesiredReply = r.json().await.expect("json");
    assert!(!d.managed && d.toml.is_none());

    // The agent tells its live config; "create config from report" imports it.
    let live1 = "interval = 30\n[nginx]\nworkers = 2\n";
    let r = http
        .client
        .put(http.url("/v1/agents/web-1/config/live"))
        .bearer_auth(&a.key)
        .json(&json!({"toml": live1}))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 202);
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::Import {
            agent: a.agent.clone(),
        }),
    )
    .await;
    let v = wait_view(&admin_client, &a.agent, "imported", |v| v.desired.is_some()).await;
    let desired = v.desired.clone().expect("desired");
    assert_eq!((desired.version, desired.toml.as_str()), (1, live1));
    assert!(v.drift.differences.is_empty(), "{:?}", v.drift);

    // A template plus overrides makes version 2.
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::SetTemplate {
            template: "web".into(),
            toml: "interval = 60\nlog = \"info\"\n[nginx]\nworkers = 4\npid = 0\n".into(),
            volatile: vec!["nginx.pid".into()],
        }),
    )
    .await;
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::Assign {
            agent: a.agent.clone(),
            template: Some("web".into()),
            overrides: "[nginx]\nworkers = 8\n".into(),
            volatile: vec![],
        }),
    )
    .await;
    let v = wait_view(&admin_client, &a.agent, "version 2", |v| {
        v.desired.as_ref().is_some_and(|d| d.version == 2)
    })
    .await;
    assert_eq!(
        v.drift.state,
        DriftState::Drifted,
        "live is still the old file"
    );
    let paths: Vec<(&str, DiffKind)> = v
        .drift
        .differences
        .iter()
        .map(|d| (d.path.as_str(), d.kind))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("interval", DiffKind::Changed),
            ("log", DiffKind::Missing),
            ("nginx.workers", DiffKind::Changed)
        ]
    );

    // Fetch with ETag; unchanged → 304.
    let r = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let etag = r
        .headers()
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("ascii")
        .to_owned();
    let d: DesiredReply = r.json().await.expect("json");
    assert_eq!(d.version, Some(2));
    assert_eq!(d.volatile, vec!["nginx.pid".to_string()]);
    let toml_text = d.toml.clone().expect("toml");
    assert_eq!(
        d.hash.as_deref(),
        Some(hex::encode(Sha256::digest(toml_text.as_bytes())).as_str())
    );
    let r = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 304);

    // The agent applies it: live = desired (with a volatile pid that differs), reports v2.
    let applied = toml_text.replace("pid = 0", "pid = 4242");
    assert_ne!(applied, toml_text);
    let r = http
        .client
        .put(http.url("/v1/agents/web-1/config/live"))
        .bearer_auth(&a.key)
        .json(&json!({"toml": applied, "version": 2}))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 202);
    let mut rep = report(&a, 2);
    rep.config_version = Some(2);
    rep.config_hash = Some(hex::encode(Sha256::digest(applied.as_bytes())));
    let r = http
        .client
        .post(http.url("/v1/agents/web-1/report"))
        .bearer_auth(&a.key)
        .json(&rep)
        .send()
        .await
        .expect("report");
    assert_eq!(r.status(), 202);
    let v = wait_view(&admin_client, &a.agent, "in sync", |v| {
        v.drift.state == DriftState::InSync
    })
    .await;
    assert!(v.drift.differences.is_empty());
    // Same live config again: nothing new stored.
    let r = http
        .client
        .put(http.url("/v1/agents/web-1/config/live"))
        .bearer_auth(&a.key)
        .json(&json!({"toml": applied, "version": 2}))
        .send()
        .await
        .expect("live");
    let stored: StoredReply = r.json().await.expect("json");
    assert!(!stored.stored);

    // Someone edits the file on the host: drift per key, visible in the summary too.
    let edited = format!(
        "debug = true\n{}",
        applied.replace("workers = 8", "workers = 16")
    );
    http.client
        .put(http.url("/v1/agents/web-1/config/live"))
        .bearer_auth(&a.key)
        .json(&json!({"toml": edited, "version": 2}))
        .send()
        .await
        .expect("live");
    let v = wait_view(&admin_client, &a.agent, "drift", |v| {
        v.drift.state == DriftState::Drifted
    })
    .await;
    let drift: &DriftView = &v.drift;
    let paths: Vec<(&str, DiffKind)> = drift
        .differences
        .iter()
        .map(|d| (d.path.as_str(), d.kind))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("debug", DiffKind::Unexpected),
            ("nginx.workers", DiffKind::Changed)
        ]
    );
    assert_eq!(drift.differences[1].desired, Some(json!(8)));
    assert_eq!(drift.differences[1].live, Some(json!(16)));
    let summary: ConfigSummary = query(&admin_client, "config", &ConfigQuery::default()).await;
    let line = summary
        .agents
        .iter()
        .find(|l| l.agent == a.agent)
        .expect("line");
    assert_eq!((line.state, line.differences), (DriftState::Drifted, 2));
    assert_eq!(summary.templates.len(), 1);
    assert_eq!(summary.templates[0].agents, 1);

    // Push: the agent sees an instruction (new ETag), acknowledges it, and it is gone.
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::Push {
            agent: a.agent.clone(),
        }),
    )
    .await;
    wait_view(&admin_client, &a.agent, "push", |v| v.push.is_some()).await;
    let r = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "a pending push changes the ETag");
    let d: DesiredReply = r.json().await.expect("json");
    assert_eq!(d.instructions.len(), 1);
    let push = d.instructions[0].clone();
    assert_eq!(
        (push.instruction, push.target.as_str()),
        (Instruction::Push, "2")
    );
    let r = http.client.post(http.url("/v1/agents/web-1/ack")).bearer_auth(&a.key)
        .json(&json!({"request": push.id, "instruction": "push", "ok": true, "message": "applied v2"})).send().await.expect("ack");
    assert_eq!(r.status(), 202);
    let v = wait_view(&admin_client, &a.agent, "push acked", |v| {
        v.push.as_ref().is_some_and(|p| p.ack.is_some())
    })
    .await;
    assert!(v.push.expect("push").ack.expect("ack").ok);
    let d: DesiredReply = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(d.instructions.is_empty());
    // Acking something that is not pending is a clear 404.
    let r = http
        .client
        .post(http.url("/v1/agents/web-1/ack"))
        .bearer_auth(&a.key)
        .json(&json!({"request": push.id, "instruction": "update", "ok": true}))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 404);

    // Pull: the edited live config becomes desired (template kept, overrides = the difference).
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::Import {
            agent: a.agent.clone(),
        }),
    )
    .await;
    let v = wait_view(&admin_client, &a.agent, "pulled", |v| {
        v.desired.as_ref().is_some_and(|d| d.version == 3)
    })
    .await;
    let d = v.desired.clone().expect("desired");
    assert_eq!(d.template.as_deref(), Some("web"));
    assert!(v.drift.differences.is_empty(), "{:?}", v.drift.differences);

    // Trigger update: delivered with the config fetch, acknowledged by an event.
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::TriggerUpdate {
            agent: a.agent.clone(),
            version: "0.2.0".into(),
        }),
    )
    .await;
    wait_view(&admin_client, &a.agent, "update", |v| v.update.is_some()).await;
    let d: DesiredReply = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let upd = d
        .instructions
        .iter()
        .find(|i| i.instruction == Instruction::Update)
        .expect("update instruction")
        .clone();
    assert_eq!(upd.target, "0.2.0");
    http.client.post(http.url("/v1/agents/web-1/ack")).bearer_auth(&a.key)
        .json(&json!({"request": upd.id, "instruction": "update", "ok": false, "message": "no package 0.2.0"})).send().await.expect("ack");
    wait_view(&admin_client, &a.agent, "update acked", |v| {
        v.update
            .as_ref()
            .is_some_and(|p| p.ack.as_ref().is_some_and(|a| !a.ok))
    })
    .await;
    let acks = config_events(&admin_client, "instruction_acknowledged").await;
    assert_eq!(acks.len(), 2);

    // Malformed configs: clear rejections, nothing stored.
    let before = view(&admin_client, &a.agent).await.expect("view");
    let bad = send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::Assign {
            agent: a.agent.clone(),
            template: Some("web".into()),
            overrides: "[nginx\nworkers = ".into(),
            volatile: vec![],
        }),
    )
    .await;
    let (kind, msg) = rejection_of(&admin_client, bad.id).await;
    assert_eq!(kind, RejectKind::Invalid);
    assert!(msg.contains("overrides is not valid TOML"), "{msg}");
    let bad = send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::SetTemplate {
            template: "web".into(),
            toml: "x = [1,".into(),
            volatile: vec![],
        }),
    )
    .await;
    let (_, msg) = rejection_of(&admin_client, bad.id).await;
    assert!(msg.contains("template is not valid TOML"), "{msg}");
    let after = view(&admin_client, &a.agent).await.expect("view");
    assert_eq!(before.desired, after.desired);
    let r = http
        .client
        .put(http.url("/v1/agents/web-1/config/live"))
        .bearer_auth(&a.key)
        .json(&json!({"toml": "a = "}))
        .send()
        .await
        .expect("live");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid TOML"),
        "{body}"
    );
    assert_eq!(
        view(&admin_client, &a.agent).await.expect("view").live_toml,
        after.live_toml
    );

    // Other agents' keys cannot read this agent's config.
    let b = add_agent(&admin_client, "web-2").await;
    let r = http
        .client
        .get(&config_url)
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = http.client.get(&config_url).send().await.expect("get");
    assert_eq!(r.status(), 401);

    // Blocked: reports still stored, replies say blocked, and so does the config fetch.
    send_command(
        &js,
        admin(),
        Command::Agent(AgentCommand::Block {
            agent: a.agent.clone(),
            reason: "test".into(),
        }),
    )
    .await;
    let mut blocked = false;
    for _ in 0..200 {
        let r = http
            .client
            .post(http.url("/v1/agents/web-1/report"))
            .bearer_auth(&a.key)
            .json(&report(&a, 9))
            .send()
            .await
            .expect("report");
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.expect("json");
        if v["blocked"] == json!(true) {
            assert_eq!(v["accepted"], json!(1), "{v}");
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(blocked, "report replies never said blocked");
    let d: DesiredReply = http
        .client
        .get(&config_url)
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(d.blocked);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_are_sealed_at_rest_and_recovered_byte_identical_with_the_passphrase() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let a = add_agent(&admin_client, "db-1").await;
    let http = Http {
        client: reqwest::Client::new(),
        base: ingest.base(),
    };
    let snap_url = http.url("/v1/agents/db-1/snapshot");
    let rec_url = http.url("/v1/agents/db-1/recovery");

    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::SetDesired {
            agent: a.agent.clone(),
            toml: "role = \"db\"\n".into(),
        }),
    )
    .await;
    let passphrase = "orbit maple candle river tiger plume";
    send_command(
        &js,
        admin(),
        Command::Config(ConfigCommand::SetPassphrase {
            agent: a.agent.clone(),
            passphrase_hash: hash_passphrase(passphrase),
        }),
    )
    .await;
    wait_view(&admin_client, &a.agent, "managed with passphrase", |v| {
        v.desired.is_some() && v.has_passphrase
    })
    .await;

    // Oversize: 413, nothing stored.
    let big = vec![7u8; 8 * 1024 * 1024 + 1];
    let r = http
        .client
        .post(&snap_url)
        .bearer_auth(&a.key)
        .body(big)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    assert!(config_events(&admin_client, "snapshot_stored")
        .await
        .is_empty());

    // Store six; only the last five are kept.
    let mut last = Vec::new();
    for i in 0..6u8 {
        let mut plain: Vec<u8> =
            format!("[disks]\nsda1 = \"ext4\"\n[secrets]\ndb_password = \"hunter2-{i}\"\n")
                .into_bytes();
        plain.extend((0..=255u8).cycle().take(300_000).map(|b| b ^ i));
        let r = http
            .client
            .post(&snap_url)
            .bearer_auth(&a.key)
            .body(plain.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let stored: StoredReply = r.json().await.expect("json");
        assert_eq!(stored.hash, hex::encode(Sha256::digest(&plain)));
        last = plain;
    }
    let v = wait_view(&admin_client, &a.agent, "five snapshots", |v| {
        v.snapshots.len() == 5
    })
    .await;
    assert_eq!(
        config_events(&admin_client, "snapshot_deleted").await.len(),
        1
    );

    // The bucket holds exactly those five, and none of them shows the plaintext.
    let bucket = js.get_object_store("snapshots").await.expect("bucket");
    let mut names = Vec::new();
    {
        use futures::StreamExt;
        let mut list = bucket.list().await.expect("list");
        while let Some(info) = list.next().await {
            let info = info.expect("info");
            if !info.deleted {
                names.push(info.name);
            }
        }
    }
    names.sort();
    let mut expected: Vec<String> = v.snapshots.iter().map(|s| s.object.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);
    let newest = v.snapshots.last().expect("newest").clone();
    let mut object = bucket.get(&newest.object).await.expect("get");
    let mut sealed = Vec::new();
    object.read_to_end(&mut sealed).await.expect("read");
    assert_eq!(sealed.len() as u64, newest.size);
    assert!(
        !sealed.windows(7).any(|w| w == b"hunter2"),
        "plaintext in the object store"
    );
    assert!(!sealed.windows(last.len().min(64)).any(|w| w == &last[..64]));
    // The key stays with ingest: a 0600 file, never in the log.
    let key_path = dir.path().join("ingest/fleet/snapshot.key");
    let key_text = std::fs::read_to_string(&key_path).expect("key file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let log = std::fs::read(log_path(dir.path())).expect("log file");
    assert!(
        !log.windows(key_text.trim().len())
            .any(|w| w == key_text.trim().as_bytes()),
        "snapshot key in the log"
    );

    // Wrong passphrase → 401 (logged as an event); after the free attempts → 429.
    let r = http.client.get(&rec_url).send().await.expect("get");
    assert_eq!(r.status(), 401, "no passphrase");
    let r = http
        .client
        .get(&rec_url)
        .header(PASSPHRASE_HEADER, "orbit maple candle river tiger WRONG")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    // The right one (spacing and case do not matter) gives config + newest snapshot, byte-identical.
    let r = http
        .client
        .get(&rec_url)
        .header(PASSPHRASE_HEADER, "Orbit  Maple candle river tiger plume")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let bundle: RecoveryReply = r.json().await.expect("json");
    assert_eq!(bundle.toml.as_deref(), Some("role = \"db\"\n"));
    let snap = bundle.snapshot.expect("snapshot");
    assert_eq!(snap.object, newest.object);
    let data = base64::engine::general_purpose::STANDARD
        .decode(&snap.data)
        .expect("base64");
    assert!(
        data == last,
        "recovered snapshot differs from what was pushed"
    );
    for n in 0..3 {
        let r = http
            .client
            .get(&rec_url)
            .header(PASSPHRASE_HEADER, "guess")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "wrong attempt {n}");
    }
    let r = http
        .client
        .get(&rec_url)
        .header(PASSPHRASE_HEADER, passphrase)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429, "throttled even with the right passphrase");
    assert!(r.headers().get("retry-after").is_some());
    let attempts = config_events(&admin_client, "recovery_attempted").await;
    let failed = attempts
        .iter()
        .filter(|e| matches!(e, ConfigEvent::RecoveryAttempted { ok: false, .. }))
        .count();
    let succeeded = attempts
        .iter()
        .filter(|e| matches!(e, ConfigEvent::RecoveryAttempted { ok: true, .. }))
        .count();
    assert!(
        attempts.iter().all(
            |e| matches!(e, ConfigEvent::RecoveryAttempted { remote, .. } if remote == "127.0.0.1")
        ),
        "attempts name the client address: {attempts:?}"
    );
    assert_eq!((failed, succeeded), (4, 1));
    // The passphrase hash never reaches a public event.
    let records: Vec<LogRecord> = query(
        &admin_client,
        "events",
        &EventsQuery {
            domain: Some("config".into()),
            type_name: Some("passphrase_set".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].subject.starts_with("fleet.sec.config.db-1."),
        "{}",
        records[0].subject
    );
    let shown = serde_json::to_string(&records[0].envelope).expect("json");
    assert!(
        !shown.contains("$argon2id$"),
        "the query shows the passphrase hash: {shown}"
    );
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assets_are_served_with_a_manifest_of_sha256_hashes_content_types_and_etags() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let a = add_agent(&admin_client, "app-1").await;
    let http = Http {
        client: reqwest::Client::new(),
        base: ingest.base(),
    };

    let bucket = fleetbus_runtime::objects::bucket(&js, fleetbus_schemas::subjects::ASSETS_BUCKET)
        .await
        .expect("bucket");
    let logo: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let script = b"#!/bin/sh\necho hello\n".to_vec();
    bucket
        .put("logo.png", &mut logo.as_slice())
        .await
        .expect("put");
    bucket
        .put("scripts/setup.sh", &mut script.as_slice())
        .await
        .expect("put");
    bucket.put("gone.txt", &mut &b"x"[..]).await.expect("put");
    bucket.delete("gone.txt").await.expect("delete");

    let r = http
        .client
        .get(http.url("/v1/assets"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let m: Manifest = http
        .client
        .get(http.url("/v1/assets"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = m.assets.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["logo.png", "scripts/setup.sh"]);
    for (entry, bytes) in m.assets.iter().zip([&logo, &script]) {
        assert_eq!(entry.size, bytes.len() as u64);
        assert_eq!(
            entry.sha256,
            hex::encode(Sha256::digest(bytes)),
            "{}",
            entry.name
        );
    }
    let r = http
        .client
        .get(http.url("/v1/assets/scripts/setup.sh"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/x-shellscript; charset=utf-8"
    );
    assert!(r.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .contains("must-revalidate"));
    let etag = r.headers()["etag"].to_str().expect("ascii").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(Sha256::digest(&script)))
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), script.as_slice());
    let r = http
        .client
        .get(http.url("/v1/assets/logo.png"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.expect("body").as_ref(), logo.as_slice());
    let r = http
        .client
        .get(http.url("/v1/assets/scripts/setup.sh"))
        .bearer_auth(&a.key)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 304);
    let r = http
        .client
        .get(http.url("/v1/assets/gone.txt"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    ingest.stop().await;
}
