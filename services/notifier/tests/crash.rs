//! kill -9 of the real `fleetbus-notifier` binary in the middle of a burst, then restart:
//! nobody receives a notification twice, except those delivered in the honest window between
//! sending and recording (whose `sent` event was not yet in the stream when the process died),
//! and those arrive with the same `Idempotency-Key`. The log holds exactly one `sent` per id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use common::*;
use fleetbus_schemas::commands::notify::{ChannelSpec, RecipientSpec, RuleSpec};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::NotificationEvent;
use fleetbus_schemas::{Envelope, Event};
use futures::StreamExt;
use serde::Serialize;

const ALERTS: usize = 240;
const IN_FLIGHT: usize = 8;

#[derive(Serialize)]
struct NatsToml {
    url: String,
    user: String,
    nkey_seed_file: std::path::PathBuf,
}

#[derive(Serialize)]
struct FileConfig {
    version: u32,
    tick_ms: u64,
    max_in_flight: usize,
    nats: NatsToml,
    digest: toml::Table,
    channels: Vec<ChannelSpec>,
    recipients: Vec<RecipientSpec>,
    rules: Vec<RuleSpec>,
}

fn spawn_binary(config: &std::path::Path, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_fleetbus-notifier"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start fleetbus-notifier")
}

/// Every `sent` event in the EVENTS stream right now: notification id → count.
async fn sent_in_stream(js: &jetstream::Context) -> BTreeMap<String, usize> {
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = BTreeMap::new();
    if last == 0 {
        return out;
    }
    let mut msgs = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await {
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(last);
        if let Ok(env) = fleetbus_schemas::decode::<Envelope>(&msg.payload) {
            if let Event::Notification(NotificationEvent::Sent { notification, .. }) = env.event {
                *out.entry(notification.id).or_default() += 1;
            }
        }
        if seq >= last {
            break;
        }
    }
    out
}

#[tokio::test]
async fn kill_9_during_a_burst_then_restart_sends_nothing_twice_outside_the_honest_window() {
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    // A slow receiver, so the burst is still being delivered when the process dies.
    rx.set_delay(Duration::from_millis(15));
    let dir = tempfile::tempdir().unwrap();
    let nats = bus.server.nats_config(notifier_role());
    let file = FileConfig {
        version: 1,
        tick_ms: 50,
        max_in_flight: IN_FLIGHT,
        nats: NatsToml {
            url: nats.url,
            user: nats.user,
            nkey_seed_file: nats.nkey_seed_file.unwrap(),
        },
        digest: toml::toml! { threshold = 0 },
        channels: vec![webhook("hook", &rx.url("burst"), None, 3, 2000)],
        recipients: vec![operator("alice")],
        rules: vec![rule("all", &["alice"], &["hook"])],
    };
    let config_path = dir.path().join("notifier.toml");
    std::fs::write(&config_path, toml::to_string(&file).unwrap()).unwrap();
    let log_path = dir.path().join("notifier.log");

    let mut child = spawn_binary(&config_path, &log_path);
    for i in 0..ALERTS {
        bus.publish(service(&format!("h-{i}"), "app", ServiceState::Failed))
            .await;
    }
    // Kill mid-burst: some delivered and recorded, some in flight, most not yet started.
    let started = fleetbus_testkit::wait_for(
        || {
            let n = rx.accepted("burst").len();
            async move { n >= ALERTS / 4 }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(
        started,
        "notifier delivered nothing:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let delivered_before = rx.accepted("burst").len();
    assert!(
        delivered_before < ALERTS,
        "the burst finished before the kill; nothing tested"
    );
    let recorded_before: BTreeSet<String> = sent_in_stream(&bus.js).await.into_keys().collect();

    let mut child = spawn_binary(&config_path, &log_path);
    let done = fleetbus_testkit::wait_for(
        || {
            let js = bus.js.clone();
            async move { sent_in_stream(&js).await.len() >= ALERTS }
        },
        Duration::from_secs(60),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let sent = sent_in_stream(&bus.js).await;
    assert!(
        done,
        "only {} of {ALERTS} sent after restart:\n{}",
        sent.len(),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for hit in rx.accepted("burst") {
        let key = hit.header("idempotency-key").expect("idempotency key");
        assert_eq!(hit.json()["id"].as_str(), Some(key.as_str()));
        *received.entry(key).or_default() += 1;
    }
    assert_eq!(received.len(), ALERTS, "every alert notified exactly by id");
    let twice: Vec<&String> = received
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    for key in &twice {
        assert!(
            !recorded_before.contains(*key),
            "{key} was recorded as sent before the kill and still delivered again"
        );
        assert_eq!(received[*key], 2);
    }
    assert!(
        twice.len() <= IN_FLIGHT * 2,
        "{} duplicates is more than the deliveries that can be in the honest window",
        twice.len()
    );
    assert!(
        sent.values().all(|n| *n == 1),
        "one sent event per notification in the log: {sent:?}"
    );
    eprintln!(
        "kill -9 after {delivered_before} deliveries ({} recorded); {} redelivered in the honest window",
        recorded_before.len(),
        twice.len()
    );
}
