//! The `fleetbus-web` binary: config from `FLEETBUS_WEB__*`, serves, answers `/healthz` (503
//! without ingest, as the query path is down), and exits 0 on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use fleetbus_bus_config::Role;

#[tokio::test]
async fn binary_serves_reports_health_and_stops_on_sigterm() {
    let nats = fleetbus_testkit::NatsServer::start();
    nats.ensure_streams().await;
    let port = fleetbus_testkit::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(fleetbus_testkit::bin_path("fleetbus-web"))
        .env("FLEETBUS_STATE", dir.path())
        .env("FLEETBUS_WEB__HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("FLEETBUS_WEB__NATS__USER", "web")
        .env("FLEETBUS_WEB__NATS__URL", nats.url())
        .env(
            "FLEETBUS_WEB__NATS__NKEY_SEED_FILE",
            nats.credentials().seed_path(Role::Web),
        )
        .env("FLEETBUS_WEB__QUERY_TIMEOUT_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleetbus-web");
    let url = format!("http://127.0.0.1:{port}/healthz");
    let http = reqwest::Client::new();
    let mut health = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(&url).send().await {
            health = Some((r.status().as_u16(), r.text().await.unwrap_or_default()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some((status, body)) = health else {
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        panic!(
            "web did not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert_eq!(status, 503, "no ingest answers queries: {body}");
    assert!(body.contains("\"bus\":true"), "{body}");
    let login = http
        .get(format!("http://127.0.0.1:{port}/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(login.status().as_u16(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().expect("wait") {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("fleetbus-web did not stop on SIGTERM")
    });
    assert!(status.success(), "exit status {status}");
}
