//! `ensure` / `check` against a real nats-server.

use std::time::Duration;

use async_nats::jetstream;
use fleetbus_bus_config::streams::{Outcome, OUTPUT_STREAM};
use fleetbus_bus_config::{check, definitions, ensure, Retention, Role};
use fleetbus_testkit::NatsServer;

#[tokio::test]
async fn ensure_creates_all_then_is_a_noop() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let js = jetstream::new(server.client(Role::Admin).await);
    let defs = definitions(&Retention::default(), 1);

    let before = check(&js, &defs).await?;
    assert!(before.has_drift());
    assert!(
        before.items.iter().all(|i| i.outcome == Outcome::Missing),
        "{before}"
    );

    let first = ensure(&js, &defs).await?;
    assert_eq!(first.items.len(), defs.streams.len() + defs.consumers.len());
    assert!(
        first.items.iter().all(|i| i.outcome == Outcome::Created),
        "{first}"
    );

    let second = ensure(&js, &defs).await?;
    assert!(
        second.is_clean(),
        "second ensure must be a no-op:\n{second}"
    );
    let checked = check(&js, &defs).await?;
    assert!(checked.is_clean() && !checked.has_drift(), "{checked}");
    Ok(())
}

#[tokio::test]
async fn manual_change_is_drift_then_fixed_by_ensure() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    let js = jetstream::new(server.client(Role::Admin).await);
    let defs = definitions(&Retention::default(), 1);

    // Someone shortens OUTPUT's retention and a consumer's ack wait by hand.
    let mut changed = defs.stream(OUTPUT_STREAM).cloned().unwrap_or_default();
    changed.max_age = Duration::from_secs(3600);
    js.update_stream(changed).await?;
    let mut consumer = defs
        .consumer("cmd-job")
        .cloned()
        .map(|c| c.config)
        .unwrap_or_default();
    consumer.ack_wait = Duration::from_secs(5);
    js.create_consumer_on_stream(consumer, "COMMANDS").await?;

    let report = check(&js, &defs).await?;
    assert!(report.has_drift(), "{report}");
    let output = report.item("OUTPUT").cloned();
    let output = output.ok_or_else(|| anyhow::anyhow!("no OUTPUT item"))?;
    assert_eq!(output.outcome, Outcome::Drifted);
    assert_eq!(output.drift.len(), 1, "{report}");
    assert_eq!(output.drift[0].field, "max_age");
    assert_eq!(output.drift[0].expected, "604800s");
    assert_eq!(output.drift[0].actual, "3600s");
    let cmd = report.item("COMMANDS/cmd-job").map(|i| i.drift.clone());
    assert_eq!(
        cmd.as_ref().map(|d| d[0].field),
        Some("ack_wait"),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("stream OUTPUT: DRIFT"), "{text}");
    assert!(
        text.contains("max_age: expected 604800s, found 3600s"),
        "{text}"
    );
    assert_eq!(report.to_json()["items"][3]["drift"][0]["actual"], "3600s");

    let fixed = ensure(&js, &defs).await?;
    assert_eq!(
        fixed.item("OUTPUT").map(|i| i.outcome),
        Some(Outcome::Updated)
    );
    assert_eq!(
        fixed.item("COMMANDS/cmd-job").map(|i| i.outcome),
        Some(Outcome::Updated)
    );
    let after = check(&js, &defs).await?;
    assert!(after.is_clean(), "{after}");
    Ok(())
}

#[tokio::test]
async fn immutable_change_is_reported_not_fixed() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let js = jetstream::new(server.client(Role::Admin).await);
    let defs = definitions(&Retention::default(), 1);
    // OUTPUT created by hand in memory instead of on file: storage cannot be updated in place.
    let mut wrong = defs.stream(OUTPUT_STREAM).cloned().unwrap_or_default();
    wrong.storage = jetstream::stream::StorageType::Memory;
    js.create_stream(wrong).await?;

    let report = ensure(&js, &defs).await?;
    let item = report.item("OUTPUT").cloned();
    let item = item.ok_or_else(|| anyhow::anyhow!("no OUTPUT item"))?;
    assert_eq!(item.outcome, Outcome::Drifted, "{report}");
    assert!(
        item.drift
            .iter()
            .any(|d| d.field == "storage" && !d.updatable),
        "{report}"
    );
    assert!(report.to_string().contains("not updatable"), "{report}");
    assert!(report.has_drift());
    Ok(())
}

#[tokio::test]
async fn ensure_bus_adds_the_tap_mirror_and_is_idempotent() -> anyhow::Result<()> {
    use fleetbus_bus_config::streams::tap_context;
    use fleetbus_bus_config::{check_bus, ensure_bus};
    let server = NatsServer::start();
    let admin = server.client(Role::Admin).await;
    let first = ensure_bus(&admin, &Retention::default(), 1).await?;
    assert_eq!(
        first.item("TAP:EVENTS").map(|i| i.outcome),
        Some(Outcome::Created),
        "{first}"
    );
    let second = ensure_bus(&admin, &Retention::default(), 1).await?;
    assert!(second.is_clean(), "{second}");

    // The mirror follows EVENTS with the same sequence numbers.
    let ingest = jetstream::new(server.client(Role::Ingest).await);
    for i in 0..3 {
        ingest
            .publish(format!("fleet.evt.agent.a{i}.registered"), "e".into())
            .await?
            .await?;
    }
    assert!(server.wait_tap_mirror().await, "mirror did not catch up");
    let mirror = tap_context(&admin)
        .get_stream("EVENTS")
        .await?
        .info()
        .await?
        .state
        .clone();
    assert_eq!((mirror.first_sequence, mirror.last_sequence), (1, 3));

    let checked = check_bus(&admin, &Retention::default(), 1).await?;
    assert!(checked.is_clean(), "{checked}");
    Ok(())
}
