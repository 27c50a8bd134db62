//! nats-server dies and comes back: while it is down ingest's `/healthz` says so (503, NATS
//! disconnected); once it is back ingest reads its streams again by itself (no restart of
//! ingest, no waiting for a long timer), `/healthz` turns 200 with lag 0, and an event published
//! after the restart reaches the log.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_schemas::events::{Event, SystemEvent};
use fleetbus_schemas::queries::{model, Committed, CommittedQuery, Reply};
use fleetbus_schemas::{Actor, Envelope, EventId};
use fleetbus_testkit::NatsServer;

fn event() -> Envelope {
    Envelope::new(
        "scheduler",
        Actor::service("scheduler"),
        None,
        Event::System(SystemEvent::ComponentStarted {
            component: "scheduler".into(),
            version: "test".into(),
        }),
    )
}

/// Publishes until JetStream acknowledges (the client may still be reconnecting).
async fn publish(js: &jetstream::Context, env: &Envelope) {
    let bytes = Bytes::from(fleetbus_schemas::encode(env).expect("encode"));
    for _ in 0..100 {
        let publish = Publish::build()
            .payload(bytes.clone())
            .message_id(env.id.to_string());
        if let Ok(ack) = js.send_publish(env.subject(), publish).await {
            if ack.await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("JetStream never acknowledged {}", env.id);
}

async fn committed(client: &async_nats::Client, id: EventId) -> bool {
    let q = CommittedQuery { id, wait_ms: 0 };
    let payload = fleetbus_schemas::encode(&q).expect("encode");
    let Ok(Ok(msg)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.request(
            fleetbus_schemas::subjects::query(model::COMMITTED),
            payload.into(),
        ),
    )
    .await
    else {
        return false;
    };
    matches!(
        fleetbus_schemas::decode::<Reply<Committed>>(&msg.payload),
        Ok(Reply::Ok(_))
    )
}

async fn health(base: &str) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::get(format!("{base}/healthz")).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_restart_ingest_reads_again_by_itself_and_healthz_tells_the_truth() {
    let mut server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let base = ingest.base();
    let (status, body) = health(&base).await.expect("healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nats"], "connected", "{body}");
    assert_eq!(body["streams"][0]["stream"], "EVENTS", "{body}");
    assert_eq!(body["streams"][0]["reader"], "consuming", "{body}");

    let js = jetstream::new(server.client(Role::Scheduler).await);
    let web = server.client(Role::Web).await;
    let before = event();
    publish(&js, &before).await;
    assert!(
        fleetbus_testkit::wait_for(|| committed(&web, before.id), Duration::from_secs(10)).await,
        "the first event never reached the log"
    );

    server.stop();
    let down = fleetbus_testkit::wait_for(
        || async {
            health(&base)
                .await
                .is_some_and(|(s, b)| s == 503 && b["nats"] == "disconnected")
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(down, "healthz did not report the lost NATS connection");

    server.restart();
    let restarted = Instant::now();
    let after = event();
    publish(&js, &after).await;
    let back =
        fleetbus_testkit::wait_for(|| committed(&web, after.id), Duration::from_secs(30)).await;
    let took = restarted.elapsed();
    println!(
        "an event published after the restart was in the log {took:?} after the server restart"
    );
    assert!(back, "ingest never read the stream again after the restart");
    let healthy = fleetbus_testkit::wait_for(
        || async {
            health(&base).await.is_some_and(|(s, b)| {
                s == 200
                    && b["streams"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|x| x["lag"] == 0))
            })
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(healthy, "healthz never returned to 200 with lag 0");
    ingest.stop().await;
}
