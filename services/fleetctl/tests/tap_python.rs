//! The external-tool test: `tests/python/tap_replay.py` (Python with only nats-py and msgpack)
//! connects as `tap` to a real nats-server, replays known events from a stream sequence,
//! follows live ones, and is refused publishing commands/events and reading secrets.
//!
//! Needs `FLEETBUS_PYTHON` pointing at an interpreter with `nats-py[nkeys]` and `msgpack`
//! (`ops/test` sets it up); without it the test says so and does nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use fleetbus_bus_config::Role;
use fleetbus_schemas::events::agent::AgentEvent;
use fleetbus_schemas::events::host::{HostEvent, HostKeyPolicy, HostSpec};
use fleetbus_schemas::{Actor, Envelope, Event};
use fleetbus_testkit::NatsServer;
use tokio::io::{AsyncBufReadExt, BufReader};

fn host_event(n: u32) -> Envelope {
    let spec = HostSpec {
        host: format!("web-{n}").parse().expect("host id"),
        address: format!("127.0.0.{}", n + 1),
        port: 22,
        user: "fleet".into(),
        tags: vec!["web".into()],
        roles: vec![],
        host_key_policy: HostKeyPolicy::AcceptNew,
        allow_adhoc: false,
        disabled: false,
    };
    Envelope::new(
        "tap-test",
        Actor::service("tap-test"),
        None,
        Event::Host(HostEvent::Registered(spec)),
    )
}

async fn publish(js: &jetstream::Context, env: &Envelope) {
    let bytes = fleetbus_schemas::encode(env).expect("encode");
    js.send_publish(
        env.subject(),
        jetstream::context::Publish::build()
            .payload(bytes.into())
            .message_id(env.id.to_string()),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
}

#[tokio::test]
async fn python_tap_replays_and_follows_events_and_cannot_write() {
    let Some(python) = std::env::var_os("FLEETBUS_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("FLEETBUS_PYTHON is not set: skipping the Python tap test (ops/test sets it)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/tap_replay.py");
    let server = NatsServer::start();
    server.ensure_streams().await;
    let js = jetstream::new(server.client(Role::Ingest).await);

    let known: Vec<Envelope> = (1..=5).map(host_event).collect();
    for e in &known {
        publish(&js, e).await;
    }
    // A credential-bearing event: tap must never see it.
    let secret = Envelope::new(
        "tap-test",
        Actor::service("tap-test"),
        None,
        Event::Agent(AgentEvent::KeyIssued {
            agent: "web-1".parse().expect("agent"),
            host: "web-1".parse().expect("host"),
            key_id: "k-1".into(),
            key_hash: "ab".repeat(32),
        }),
    );
    publish(&js, &secret).await;

    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("--server")
        .arg(server.url())
        .arg("--seed")
        .arg(server.credentials().seed_path(Role::Tap))
        .args([
            "--from-seq",
            "2",
            "--count",
            "3",
            "--live",
            "2",
            "--try-forbidden",
            "--timeout",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut got: Vec<serde_json::Value> = Vec::new();
    let live: Vec<Envelope> = (6..=7).map(host_event).collect();
    let read_all = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if v["kind"] == "ready" {
                for e in &live {
                    publish(&js, e).await;
                }
            }
            got.push(v);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("script finished in time");
    let out = child.wait_with_output().await.expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {err}\n{got:?}");

    let of = |kind: &str| -> Vec<serde_json::Value> {
        got.iter().filter(|v| v["kind"] == kind).cloned().collect()
    };

    // Forbidden: every attempt refused by the server.
    let forbidden = of("forbidden");
    assert_eq!(forbidden.len(), 3, "{got:?}");
    for f in &forbidden {
        assert_eq!(f["refused"], true, "{f}");
    }
    assert!(forbidden
        .iter()
        .any(|f| f["subject"] == "fleet.cmd.host.remove"));

    // Replay: stream sequences 2, 3, 4 with the ids and fields we published.
    let replay = of("replay");
    let seqs: Vec<u64> = replay
        .iter()
        .filter_map(|r| r["stream_seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4], "{replay:?}");
    for (r, e) in replay.iter().zip(&known[1..4]) {
        assert_eq!(r["id"], e.id.to_string());
        assert_eq!(r["subject"], e.subject());
        assert_eq!(r["domain"], "host");
        assert_eq!(r["type"], "registered");
        assert_eq!(r["actor"], "tap-test");
        assert_eq!(r["schema"], 1);
        let Event::Host(HostEvent::Registered(spec)) = &e.event else {
            panic!("only host registrations were published");
        };
        assert_eq!(r["data"]["host"], spec.host.as_str());
        assert_eq!(r["data"]["address"], spec.address);
    }
    assert_eq!(
        of("caught_up").first().map(|c| c["replayed"].clone()),
        Some(serde_json::json!(3))
    );

    // Live: the two events published after "ready", in order.
    let seen_live: Vec<String> = of("live")
        .iter()
        .filter_map(|l| l["id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        seen_live,
        live.iter().map(|e| e.id.to_string()).collect::<Vec<_>>()
    );

    // Nothing secret reached tap, and its forbidden publishes stored nothing.
    let all = serde_json::to_string(&got).unwrap_or_default();
    assert!(
        !all.contains("key_hash") && !all.contains(&secret.id.to_string()),
        "{all}"
    );
    let admin = jetstream::new(server.client(Role::Admin).await);
    let mut events = admin.get_stream("EVENTS").await.expect("EVENTS");
    assert_eq!(events.info().await.expect("info").state.messages, 7);
    let mut commands = admin.get_stream("COMMANDS").await.expect("COMMANDS");
    assert_eq!(commands.info().await.expect("info").state.messages, 0);
}
