//! The 3-node cluster config: three real nats-servers form a cluster, the streams are created
//! with three replicas, and publishing keeps working with one node down.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use fleetbus_bus_config::streams::Outcome;
use fleetbus_bus_config::{ensure_bus, Retention, Role};
use fleetbus_testkit::NatsCluster;

#[tokio::test]
async fn three_nodes_form_a_cluster_with_r3_streams() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3);
    assert!(
        cluster.wait_jetstream().await,
        "no JetStream meta leader:\n{}",
        cluster.logs()
    );
    let admin_client = cluster.client(Role::Admin).await;
    let admin = jetstream::new(admin_client.clone());
    let report = ensure_bus(&admin_client, &Retention::default(), 3).await?;
    assert!(
        report.items.iter().all(|i| i.outcome == Outcome::Created),
        "{report}"
    );
    let again = ensure_bus(&admin_client, &Retention::default(), 3).await?;
    assert!(again.is_clean(), "{again}");

    let mut events = admin.get_stream("EVENTS").await?;
    let info = events.info().await?;
    assert_eq!(info.config.num_replicas, 3);
    let raft = info
        .cluster
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no cluster info"))?;
    assert_eq!(raft.name.as_deref(), Some("fleetbus-test"));
    assert!(raft.leader.is_some(), "no stream leader");
    assert_eq!(raft.replicas.len(), 2, "leader + 2 replicas expected");

    let mut ingest = jetstream::new(cluster.client(Role::Ingest).await);
    // Short ack timeout: during the fail-over below an unanswered publish is retried sooner.
    ingest.set_timeout(Duration::from_millis(500));
    ingest
        .publish("fleet.evt.host.h1.registered", Bytes::from_static(b"e1"))
        .await?
        .await?;

    // One replica down: the remaining two are a quorum and still accept writes. (Stopping a
    // follower, not the stream leader, keeps the test about quorum rather than elections,
    // which take seconds on a loaded 2-core machine.)
    let leader = raft.leader.clone().unwrap_or_default();
    let follower = (0..3)
        .find(|i| leader != format!("fleetbus-{i}"))
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    cluster.stop_node(follower);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut acked = false;
    while !acked && std::time::Instant::now() < deadline {
        let sent = ingest
            .publish("fleet.evt.host.h2.registered", Bytes::from_static(b"e2"))
            .await;
        if let Ok(ack) = sent {
            acked = ack.await.is_ok();
        }
        if !acked {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(acked, "no ack with 2 of 3 nodes:\n{}", cluster.logs());
    let state = events.info().await?.state.clone();
    assert!(state.messages >= 2, "{state:?}");
    Ok(())
}
