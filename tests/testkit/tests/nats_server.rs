//! The harness itself: a server starts, keeps JetStream data across a crash-restart on the
//! same port, stops; helpers behave.

use std::time::Duration;

use async_nats::jetstream;
use fleetbus_bus_config::Role;
use fleetbus_testkit::{bin_path, free_port, wait_for, NatsServer};

#[tokio::test]
async fn restart_keeps_port_and_jetstream_data() -> anyhow::Result<()> {
    let mut server = NatsServer::start();
    let port = server.port();
    let report = server.ensure_streams().await;
    assert!(!report.has_drift(), "{report}");
    let js = jetstream::new(server.client(Role::Ingest).await);
    js.publish("fleet.evt.host.h1.registered", "e".into())
        .await?
        .await?;

    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    let admin = jetstream::new(server.client(Role::Admin).await);
    let mut events = admin.get_stream("EVENTS").await?;
    assert_eq!(events.info().await?.state.messages, 1);
    let again = server.ensure_streams().await;
    assert!(again.is_clean(), "{again}");

    server.stop();
    assert!(!server.is_running());
    Ok(())
}

#[tokio::test]
async fn wait_for_returns_true_when_the_condition_holds_and_false_on_timeout() {
    let mut calls = 0;
    let ok = wait_for(
        || {
            calls += 1;
            let done = calls >= 3;
            async move { done }
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(ok);
    assert_eq!(calls, 3);
    let never = wait_for(|| async { false }, Duration::from_millis(50)).await;
    assert!(!never);
}

#[test]
fn free_ports_are_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn bin_path_names_the_build_command_for_a_missing_binary() {
    let err = std::panic::catch_unwind(|| bin_path("fleetbus-no-such-binary"));
    let msg = err
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        msg.contains("cargo build -p fleetbus-no-such-binary"),
        "{msg}"
    );
}
