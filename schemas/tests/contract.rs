//! Pins the rest of the contract: `fleet.q.config` requests and replies (MessagePack, like every
//! query), the agent ↔ ingest HTTP bodies of the managed-config and asset routes (JSON), and the
//! bus names (streams, consumers, buckets, subscribed subjects). Golden files under
//! `fixtures/v<SCHEMA_VERSION>/{replies,http}/` and `fixtures/v<SCHEMA_VERSION>/names.json`, JSON
//! Schemas under `json/`. After an intended change, regenerate with
//! `UPDATE_FIXTURES=1 cargo test -p fleetbus-schemas --test contract` and commit the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fleetbus_schemas::events::config::Instruction;
use fleetbus_schemas::http::{
    AckBody, AssetEntry, DesiredReply, InstructionOut, LiveBody, Manifest, RecoveredSnapshot,
    RecoveryReply, StoredReply,
};
use fleetbus_schemas::queries::config::{
    Ack, AgentConfigView, AgentLine, ConfigQuery, ConfigSummary, Desired, DiffKind, Difference,
    DriftState, DriftView, Management, Pending, SnapshotMeta, TemplateLine,
};
use fleetbus_schemas::{subjects, AgentId, EventId, SCHEMA_VERSION};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_FIXTURES").is_some()
}

fn time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

fn id(n: u128) -> EventId {
    EventId(ulid::Ulid::from_parts(1_767_225_600_000, n))
}

fn agent() -> AgentId {
    "web-1".parse().unwrap()
}

fn desired() -> Desired {
    Desired {
        version: 3,
        toml: "[nginx]\nworkers = 4\n".into(),
        hash: "ab".repeat(32),
        template: Some("web".into()),
        overrides: Some("[nginx]\nworkers = 4\n".into()),
        volatile: vec!["nginx.pid".into()],
        actor: "alice".into(),
        time: time(),
        seq: 42,
    }
}

fn pending() -> Pending {
    Pending {
        id: id(7),
        target: "3".into(),
        actor: "alice".into(),
        issued: time(),
        ack: Some(Ack {
            ok: true,
            message: "applied".into(),
            time: time(),
        }),
    }
}

fn drift() -> DriftView {
    DriftView {
        agent: agent(),
        management: Management::Managed,
        state: DriftState::Drifted,
        desired_version: Some(3),
        desired_hash: Some("ab".repeat(32)),
        template: Some("web".into()),
        applied_version: Some(2),
        live_hash: Some("cd".repeat(32)),
        live_known: true,
        volatile: vec!["nginx.pid".into()],
        differences: vec![Difference {
            path: "nginx.workers".into(),
            kind: DiffKind::Changed,
            desired: Some(serde_json::json!(4)),
            live: Some(serde_json::json!(2)),
        }],
        error: None,
    }
}

/// `fleet.q.config` requests and replies, MessagePack.
fn replies() -> BTreeMap<String, Vec<u8>> {
    let summary = ConfigSummary {
        agents: vec![AgentLine {
            agent: agent(),
            management: Management::Managed,
            state: DriftState::InSync,
            template: Some("web".into()),
            desired_version: Some(3),
            applied_version: Some(3),
            differences: 0,
            blocked: false,
            snapshots: 1,
            has_passphrase: true,
        }],
        templates: vec![TemplateLine {
            name: "web".into(),
            hash: "ab".repeat(32),
            toml: "[nginx]\nworkers = 2\n".into(),
            volatile: vec![],
            agents: 1,
            actor: "alice".into(),
            time: time(),
        }],
    };
    let view = AgentConfigView {
        drift: drift(),
        desired: Some(desired()),
        live_toml: Some("[nginx]\nworkers = 2\n".into()),
        push: Some(pending()),
        update: None,
        snapshots: vec![SnapshotMeta {
            object: "web-1/01KDTH6K00000000000000000A".into(),
            size: 120,
            hash: "ef".repeat(32),
            time: time(),
        }],
        has_passphrase: true,
        blocked: false,
    };
    BTreeMap::from([
        ("config.query".into(), enc(&ConfigQuery { agent: None })),
        (
            "config.query.agent".into(),
            enc(&ConfigQuery {
                agent: Some(agent()),
            }),
        ),
        ("config.summary".into(), enc(&summary)),
        ("config.agent_view".into(), enc(&view)),
    ])
}

/// The HTTP bodies, JSON (pretty, as a reader would diff them).
fn http_bodies() -> BTreeMap<String, Vec<u8>> {
    let json = |v: serde_json::Value| {
        let mut text = serde_json::to_string_pretty(&v).unwrap();
        text.push('\n');
        text.into_bytes()
    };
    let asset = AssetEntry {
        name: "scripts/backup.sh".into(),
        size: 512,
        sha256: "12".repeat(32),
        content_type: "text/x-shellscript; charset=utf-8".into(),
        modified: Some("2026-01-01 0:00:00.0 +00:00:00".into()),
    };
    BTreeMap::from([
        (
            "desired_reply".into(),
            json(
                serde_json::to_value(DesiredReply {
                    agent: agent(),
                    managed: true,
                    version: Some(3),
                    hash: Some("ab".repeat(32)),
                    toml: Some("[nginx]\nworkers = 4\n".into()),
                    volatile: vec!["nginx.pid".into()],
                    instructions: vec![InstructionOut {
                        id: id(7),
                        instruction: Instruction::Push,
                        target: "3".into(),
                    }],
                    blocked: false,
                })
                .unwrap(),
            ),
        ),
        (
            "live_body".into(),
            json(
                serde_json::to_value(LiveBody {
                    version: Some(3),
                    toml: "[nginx]\nworkers = 4\n".into(),
                })
                .unwrap(),
            ),
        ),
        (
            "ack_body".into(),
            json(
                serde_json::to_value(AckBody {
                    request: id(7),
                    instruction: Instruction::Update,
                    ok: false,
                    message: "download failed".into(),
                })
                .unwrap(),
            ),
        ),
        (
            "stored_reply".into(),
            json(
                serde_json::to_value(StoredReply {
                    stored: true,
                    seq: 43,
                    object: Some("web-1/01KDTH6K00000000000000000A".into()),
                    hash: "ef".repeat(32),
                    size: 120,
                })
                .unwrap(),
            ),
        ),
        (
            "recovery_reply".into(),
            json(
                serde_json::to_value(RecoveryReply {
                    agent: agent(),
                    version: Some(3),
                    toml: Some("[nginx]\nworkers = 4\n".into()),
                    snapshot: Some(RecoveredSnapshot {
                        object: "web-1/01KDTH6K00000000000000000A".into(),
                        hash: "ef".repeat(32),
                        time: time(),
                        data: "c2VjcmV0".into(),
                    }),
                })
                .unwrap(),
            ),
        ),
        (
            "manifest".into(),
            json(
                serde_json::to_value(Manifest {
                    assets: vec![asset],
                })
                .unwrap(),
            ),
        ),
    ])
}

/// Every bus name in one document.
fn names() -> Vec<u8> {
    let commands: BTreeMap<&str, String> = [
        "host", "agent", "user", "alert", "config", "job", "schedule", "check", "notify",
    ]
    .into_iter()
    .map(|area| (area, subjects::command_consumer(area)))
    .collect();
    let doc = serde_json::json!({
        "streams": {
            "events": subjects::EVENTS_STREAM,
            "secrets": subjects::SECRETS_STREAM,
            "commands": subjects::COMMANDS_STREAM,
            "output": subjects::OUTPUT_STREAM,
        },
        "stream_subjects": [
            subjects::EVENTS_ALL, subjects::SECRETS_ALL, subjects::COMMANDS_ALL,
            subjects::OUTPUT_ALL, subjects::QUERIES_ALL,
        ],
        "consumers": {
            "ingest_events": subjects::INGEST_EVENTS_CONSUMER,
            "ingest_secrets": subjects::INGEST_SECRETS_CONSUMER,
            "job_commands": subjects::JOB_COMMANDS_CONSUMER,
            "schedule_commands": subjects::SCHEDULE_COMMANDS_CONSUMER,
            "check_commands": subjects::CHECK_COMMANDS_CONSUMER,
            "commands_by_area": commands,
        },
        "buckets": subjects::OBJECT_BUCKETS,
        "executor_event_filters": subjects::EXECUTOR_EVENT_FILTERS,
        "query_config": subjects::query(fleetbus_schemas::queries::model::CONFIG),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    text.push('\n');
    text.into_bytes()
}

/// MessagePack with named fields, as every query reply is encoded.
fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    fleetbus_schemas::encode(value).unwrap()
}

fn check_dir(dir: &Path, ext: &str, expected: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    if updating() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in expected {
            std::fs::write(dir.join(format!("{name}.{ext}")), bytes).unwrap();
        }
        return vec![];
    }
    let mut problems = vec![];
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_FIXTURES=1", dir.display()))
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.trim_end_matches(&format!(".{ext}")).to_string()
        })
        .collect();
    for (name, bytes) in expected {
        match std::fs::read(dir.join(format!("{name}.{ext}"))) {
            Ok(stored) if &stored == bytes => {}
            Ok(_) => problems.push(format!(
                "{name}: encoding changed without a schema version bump"
            )),
            Err(_) => problems.push(format!("{name}: no fixture (new type? regenerate)")),
        }
    }
    for name in on_disk.difference(&expected.keys().cloned().collect()) {
        problems.push(format!("{name}: fixture exists but no sample produces it"));
    }
    problems
}

#[test]
fn golden_fixtures_pin_query_replies_http_bodies_and_names() {
    let dir = root().join(format!("fixtures/v{SCHEMA_VERSION}"));
    let mut problems = check_dir(&dir.join("replies"), "msgpack", &replies());
    problems.extend(check_dir(&dir.join("http"), "json", &http_bodies()));
    let path = dir.join("names.json");
    if updating() {
        std::fs::write(&path, names()).unwrap();
    } else if std::fs::read(&path).ok() != Some(names()) {
        problems.push("names.json: a stream, consumer, bucket or subject name changed".into());
    }
    assert!(
        problems.is_empty(),
        "contract drift:\n{}\nrun UPDATE_FIXTURES=1 cargo test -p fleetbus-schemas --test contract",
        problems.join("\n")
    );
}

#[test]
fn reply_and_body_fixtures_still_decode() {
    let dir = root().join(format!("fixtures/v{SCHEMA_VERSION}"));
    let read = |sub: &str, name: &str| std::fs::read(dir.join(sub).join(name)).unwrap();
    let _: ConfigQuery =
        fleetbus_schemas::decode(&read("replies", "config.query.msgpack")).unwrap();
    let _: ConfigSummary =
        fleetbus_schemas::decode(&read("replies", "config.summary.msgpack")).unwrap();
    let _: AgentConfigView =
        fleetbus_schemas::decode(&read("replies", "config.agent_view.msgpack")).unwrap();
    let _: DesiredReply = serde_json::from_slice(&read("http", "desired_reply.json")).unwrap();
    let _: LiveBody = serde_json::from_slice(&read("http", "live_body.json")).unwrap();
    let _: AckBody = serde_json::from_slice(&read("http", "ack_body.json")).unwrap();
    let _: StoredReply = serde_json::from_slice(&read("http", "stored_reply.json")).unwrap();
    let _: RecoveryReply = serde_json::from_slice(&read("http", "recovery_reply.json")).unwrap();
    let _: Manifest = serde_json::from_slice(&read("http", "manifest.json")).unwrap();
}

#[test]
fn command_consumer_names_match_the_named_ones() {
    assert_eq!(
        subjects::command_consumer("job"),
        subjects::JOB_COMMANDS_CONSUMER
    );
    assert_eq!(
        subjects::command_consumer("schedule"),
        subjects::SCHEDULE_COMMANDS_CONSUMER
    );
    assert_eq!(
        subjects::command_consumer("check"),
        subjects::CHECK_COMMANDS_CONSUMER
    );
}

fn schema_text<T: schemars::JsonSchema>() -> String {
    let mut text = serde_json::to_string_pretty(&schemars::schema_for!(T)).unwrap();
    text.push('\n');
    text
}

#[test]
fn json_schemas_of_replies_and_bodies_are_up_to_date() {
    let schemas = [
        ("query-config", schema_text::<ConfigQuery>()),
        ("reply-config-summary", schema_text::<ConfigSummary>()),
        ("reply-agent-config-view", schema_text::<AgentConfigView>()),
        ("http-desired-reply", schema_text::<DesiredReply>()),
        ("http-live-body", schema_text::<LiveBody>()),
        ("http-ack-body", schema_text::<AckBody>()),
        ("http-stored-reply", schema_text::<StoredReply>()),
        ("http-recovery-reply", schema_text::<RecoveryReply>()),
        ("http-manifest", schema_text::<Manifest>()),
        (
            "reply-log-head",
            schema_text::<fleetbus_schemas::queries::LogHead>(),
        ),
        (
            "reply-log-record",
            schema_text::<fleetbus_schemas::queries::LogRecord>(),
        ),
    ];
    let dir = root().join("json");
    let mut stale = vec![];
    for (name, text) in schemas {
        let path = dir.join(format!("{name}.schema.json"));
        if updating() {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas {stale:?}: run UPDATE_FIXTURES=1 cargo test -p fleetbus-schemas --test contract"
    );
}
