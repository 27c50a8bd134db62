//! `StreamReader` against a real nats-server: it starts where the caller says, returns every
//! message exactly once in stream order across a server restart and across its consumer being
//! deleted under it, and reports what it is doing.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use fleetbus_bus_config::Role;
use fleetbus_runtime::reader::{ReaderStatus, StreamReader};
use fleetbus_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

async fn publish(js: &jetstream::Context, from: u64, to: u64) -> anyhow::Result<()> {
    for i in from..=to {
        // The client may still be reconnecting after a restart: retry until acknowledged.
        let mut tries = 0;
        loop {
            let sent = async {
                js.publish(
                    format!("fleet.evt.host.h{i}.registered"),
                    Bytes::from(i.to_string()),
                )
                .await?
                .await
                .map_err(anyhow::Error::from)
            };
            match sent.await {
                Ok(ack) => {
                    assert_eq!(ack.sequence, i);
                    break;
                }
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "publish retry");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Reads `n` messages and returns their stream sequences.
async fn read(reader: &mut StreamReader, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(n);
    while seqs.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(20), reader.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("reader stopped"))?;
        seqs.push(
            m.info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence,
        );
    }
    Ok(seqs)
}

#[tokio::test]
async fn reads_in_order_from_a_position_across_restarts_and_deleted_consumers() -> anyhow::Result<()>
{
    let mut server = NatsServer::start();
    server.ensure_streams().await;
    let js = jetstream::new(server.client(Role::Ingest).await);
    publish(&js, 1, 50).await?;

    let stop = CancellationToken::new();
    let mut reader = StreamReader::new(js.clone(), "EVENTS", "ingest-events", 1, stop.clone());
    let status = reader.status();
    assert_eq!(read(&mut reader, 20).await?, (1..=20).collect::<Vec<_>>());
    assert_eq!(*status.borrow(), ReaderStatus::Consuming);
    assert_eq!(reader.next_seq(), 21);

    // The server dies with messages still to read and comes back; more arrive.
    server.restart();
    publish(&js, 51, 80).await?;
    assert_eq!(read(&mut reader, 60).await?, (21..=80).collect::<Vec<_>>());

    // Someone deletes the consumer under the reader.
    let admin = jetstream::new(server.client(Role::Admin).await);
    admin
        .get_stream("EVENTS")
        .await?
        .delete_consumer("ingest-events")
        .await?;
    publish(&js, 81, 90).await?;
    assert_eq!(read(&mut reader, 10).await?, (81..=90).collect::<Vec<_>>());

    // A second reader of the same name (a restarted process) starts where it is told and
    // replaces the first one's consumer.
    let mut again = StreamReader::new(js.clone(), "EVENTS", "ingest-events", 85, stop.clone());
    assert_eq!(read(&mut again, 6).await?, (85..=90).collect::<Vec<_>>());

    // A position beyond the stream (the stream was recreated) reads it from its start.
    let mut beyond = StreamReader::new(js.clone(), "EVENTS", "ingest-events", 1_000, stop.clone());
    assert_eq!(read(&mut beyond, 3).await?, vec![1, 2, 3]);

    stop.cancel();
    assert!(beyond.next().await.is_none(), "shutdown ends the reader");
    Ok(())
}
