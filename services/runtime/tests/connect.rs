//! `connect` against a real nats-server: NKey auth, per-role inbox, retry until the server is
//! back, clear errors for bad credentials.

use std::time::Duration;

use fleetbus_bus_config::Role;
use fleetbus_runtime::nats::{connect, NatsConfig};
use fleetbus_runtime::RuntimeError;
use fleetbus_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn connects_with_nkey_and_uses_the_role_inbox() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let client = connect(&server.nats_config(Role::Web), &CancellationToken::new()).await?;
    assert!(client.new_inbox().starts_with("_INBOX.web."));
    // A request round trip works: the reply comes back on the role's own inbox.
    let reply = client.request("$JS.API.INFO", "".into()).await?;
    assert!(!reply.payload.is_empty());
    Ok(())
}

#[tokio::test]
async fn retries_until_the_server_is_back() -> anyhow::Result<()> {
    let mut server = NatsServer::start();
    let config = server.nats_config(Role::Executor);
    server.stop();
    let token = CancellationToken::new();
    let pending = tokio::spawn({
        let token = token.clone();
        async move { connect(&config, &token).await }
    });
    // Give the first attempts a chance to fail, then bring the server back on the same port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "connect gave up while the server was down"
    );
    server.restart();
    let client = tokio::time::timeout(Duration::from_secs(15), pending).await???;
    client.flush().await?;
    Ok(())
}

#[tokio::test]
async fn wrong_seed_is_an_auth_error_not_a_retry_loop() -> anyhow::Result<()> {
    let server = NatsServer::start();
    // A well-formed seed the server does not know: it refuses the key.
    let other = tempfile::tempdir()?;
    let foreign = fleetbus_bus_config::Credentials::ensure(other.path())?;
    let config = NatsConfig {
        url: server.url(),
        user: "web".into(),
        nkey_seed_file: Some(foreign.seed_path(Role::Web)),
    };
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        connect(&config, &CancellationToken::new()),
    )
    .await?
    .err();
    assert!(
        matches!(err, Some(RuntimeError::NatsConnect { .. })),
        "{err:?}"
    );
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("as web"), "{text}");
    let seed = std::fs::read_to_string(foreign.seed_path(Role::Web))?;
    assert!(
        !text.contains(seed.trim()),
        "error must not contain the seed"
    );
    Ok(())
}
