//! End to end through a real nats-server: agents push 10,000 reports over HTTP with deliberate
//! resends (inside and after the JetStream duplicate window); the log holds each event once,
//! verifies, rebuild equals live, queries (with time travel) answer, and tampering is named.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::{ReportsBody, SubmitReply};
use fleetbus_log::LogStore;
use fleetbus_projections::FleetStatus;
use fleetbus_projections::State;
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::queries::{AsOf, EventsQuery, LogHeadQuery, OverviewQuery};
use fleetbus_schemas::queries::{LogHead, LogRecord};
use fleetbus_testkit::NatsServer;
use redb::ReadableTable;

const AGENTS: usize = 5;
const BATCHES: usize = 20;
const PER_BATCH: usize = 100;

async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    agent: &TestAgent,
    batch: &ReportsBody,
) -> SubmitReply {
    let resp = http
        .post(format!("{base}/v1/agents/{}/reports", agent.agent))
        .bearer_auth(&agent.key)
        .json(batch)
        .send()
        .await
        .expect("post batch");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    resp.json().await.expect("reply json")
}

async fn stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream("EVENTS")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_reports_with_resends_are_logged_once_and_rebuild_equals_live() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(add_agent(&admin_client, &format!("web-{i}")).await);
    }
    let registry_seq = (AGENTS * 2) as u64;
    // Queries read the folded state, which takes a group before its fsync; `log_head` is the
    // committed head, so it may trail the registry by one group commit.
    let committed = fleetbus_testkit::wait_for(
        || {
            let client = admin_client.clone();
            async move {
                let head: LogHead = query(&client, "log_head", &LogHeadQuery {}).await;
                head.seq >= registry_seq
            }
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(committed, "the registry's events were never committed");
    let head: LogHead = query(&admin_client, "log_head", &LogHeadQuery {}).await;
    assert_eq!(head.seq, registry_seq, "host + key events");

    // Each agent sends its batches concurrently with the others; every fourth batch is sent
    // twice at once (a resend racing the original) and every fifth again after its 202.
    let http = reqwest::Client::new();
    let base = ingest.base();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, agent) in agents.into_iter().enumerate() {
        let http = http.clone();
        let base = base.clone();
        tasks.spawn(async move {
            let mut sent = Vec::new();
            let mut accepted = 0;
            for b in 0..BATCHES {
                let batch = ReportsBody {
                    reports: (0..PER_BATCH)
                        .map(|n| report(&agent, (i * 10_000 + b * PER_BATCH + n) as u64))
                        .collect(),
                };
                let reply = if b % 4 == 0 {
                    let (r1, r2) = tokio::join!(
                        post_batch(&http, &base, &agent, &batch),
                        post_batch(&http, &base, &agent, &batch)
                    );
                    assert_eq!(r1.accepted + r1.duplicates, PER_BATCH);
                    assert_eq!(r2.accepted + r2.duplicates, PER_BATCH);
                    assert!(r1.accepted + r2.accepted <= PER_BATCH * 2);
                    r1
                } else {
                    post_batch(&http, &base, &agent, &batch).await
                };
                accepted += reply.accepted;
                if b % 5 == 0 {
                    let again = post_batch(&http, &base, &agent, &batch).await;
                    assert_eq!(
                        (again.accepted, again.duplicates),
                        (0, PER_BATCH),
                        "resend after 202"
                    );
                    assert!(again.seq >= reply.seq.min(again.seq) && again.seq > 0);
                }
                assert!(!reply.blocked);
                sent.push(batch);
            }
            (agent, sent, accepted)
        });
    }
    let mut all_ids = HashSet::new();
    let mut kept = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (agent, sent, _accepted) = r.expect("agent task");
        for batch in &sent {
            for rep in &batch.reports {
                assert!(all_ids.insert(rep.id), "test generated a duplicate id");
            }
        }
        kept.push((agent, sent));
    }
    assert_eq!(all_ids.len(), AGENTS * BATCHES * PER_BATCH);
    let head: LogHead = query(&admin_client, "log_head", &LogHeadQuery {}).await;
    assert_eq!(
        head.seq,
        registry_seq + all_ids.len() as u64,
        "every unique report once"
    );

    // A resend after the JetStream duplicate window (1 s in this test's stream config): the
    // bus stores it again, the log recognises it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let before = stream_messages(&js).await;
    let (agent, sent) = &kept[0];
    let late = post_batch(&http, &base, agent, &sent[3]).await;
    assert_eq!((late.accepted, late.duplicates), (0, PER_BATCH));
    assert_eq!(
        stream_messages(&js).await,
        before + PER_BATCH as u64,
        "JetStream took the late resend"
    );
    let head2: LogHead = query(&admin_client, "log_head", &LogHeadQuery {}).await;
    assert_eq!(head2, head, "the log did not grow");

    // Replay through the events query: each report once, in order, secrets redacted.
    let mut after = 0;
    let mut reports = HashSet::new();
    let mut key_events = 0;
    loop {
        let page: Vec<LogRecord> = query(
            &admin_client,
            "events",
            &EventsQuery {
                after_seq: Some(after),
                limit: 1000,
                ..Default::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        for (i, r) in page.iter().enumerate() {
            assert_eq!(r.seq, after + 1 + i as u64, "gapless, oldest first");
            match &r.envelope.event {
                Event::Agent(AgentEvent::Reported(_)) => assert!(reports.insert(r.envelope.id)),
                Event::Agent(AgentEvent::KeyIssued { key_hash, .. }) => {
                    key_events += 1;
                    assert_eq!(key_hash, "redacted");
                    assert!(r.subject.starts_with("fleet.sec."));
                }
                _ => {}
            }
        }
        after = last.seq;
    }
    assert_eq!(after, head.seq);
    assert_eq!(reports, all_ids);
    assert_eq!(key_events, AGENTS);

    // Time travel: before any report, in the middle, and by time.
    let live: FleetStatus = query(&admin_client, "overview", &OverviewQuery::default()).await;
    assert_eq!(live.hosts.len(), AGENTS);
    let at_registry: FleetStatus = query(
        &admin_client,
        "overview",
        &OverviewQuery {
            as_of: Some(AsOf::Seq(registry_seq)),
        },
    )
    .await;
    assert!(
        at_registry.hosts.values().all(|h| h.resources.is_none()),
        "no report yet at seq {registry_seq}"
    );
    let mid_seq = registry_seq + 4321;
    let at_mid: FleetStatus = query(
        &admin_client,
        "overview",
        &OverviewQuery {
            as_of: Some(AsOf::Seq(mid_seq)),
        },
    )
    .await;
    let before_all: FleetStatus = query(
        &admin_client,
        "overview",
        &OverviewQuery {
            as_of: Some(AsOf::Time(
                chrono::DateTime::from_timestamp(1_000_000_000, 0).expect("time"),
            )),
        },
    )
    .await;
    assert!(before_all.hosts.is_empty());
    let now: FleetStatus = query(
        &admin_client,
        "overview",
        &OverviewQuery {
            as_of: Some(AsOf::Time(chrono::Utc::now())),
        },
    )
    .await;
    assert_eq!(now, live, "as of now equals live");

    ingest.stop().await;

    // Offline: verify, rebuild == live (the snapshot saved at shutdown), time travel == refold.
    let path = log_path(dir.path());
    let store = LogStore::open(&path).expect("open log");
    let report = store.verify().expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, head.seq);
    let (rebuild, rebuilt) = store.rebuild_as::<State>().expect("rebuild");
    assert!(rebuild.equal(), "{rebuild:?}");
    assert_eq!(
        rebuild.latest_snapshot,
        Some(head.seq),
        "snapshot at shutdown"
    );
    assert!(rebuild.snapshots_compared >= 10, "{rebuild:?}");
    assert_eq!(rebuilt.projections.fleet, live);
    let (mid_state, at) = store.state_at::<State>(mid_seq).expect("state_at");
    assert_eq!(at.seq, mid_seq);
    assert_eq!(mid_state.projections.fleet, at_mid);
    let mut full = State::default();
    for e in store.export(1).expect("export").take(mid_seq as usize) {
        let e = e.expect("entry");
        fleetbus_log::Fold::apply(&mut full, e.seq, &e.envelope().expect("envelope"));
    }
    assert_eq!(
        full.projections.fleet, at_mid,
        "snapshot + refold == full refold"
    );
    drop(store);

    // Tampering: flip one byte of entry 5000 directly in the redb file.
    {
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("entries");
        let db = redb::Database::open(&path).expect("redb open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(table).expect("table");
            let mut v = t.get(5000).expect("get").expect("entry").value().to_vec();
            let i = v.len() - 10;
            v[i] ^= 0x20;
            t.insert(5000, v.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = LogStore::open(&path).expect("reopen");
    let report = store.verify().expect("verify");
    let bad = report.first_bad.expect("tampering detected");
    assert_eq!(bad.seq, 5000, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_answers_once_the_event_is_durable_and_names_what_is_missing() {
    use fleetbus_schemas::queries::{model, Committed, CommittedQuery, QueryErrorKind, Reply};
    use fleetbus_schemas::EventId;

    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let agent = add_agent(&admin_client, "web-c").await;
    let http = reqwest::Client::new();

    // Asked before the event exists, the query waits and answers once it is committed.
    let early = report(&agent, 1);
    let asked = {
        let (client, id) = (admin_client.clone(), early.id);
        tokio::spawn(async move {
            let q = CommittedQuery { id, wait_ms: 8000 };
            query_reply::<_, Committed>(&client, model::COMMITTED, &q).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "answered before the event existed");
    let batch = ReportsBody {
        reports: vec![early.clone()],
    };
    let sent = post_batch(&http, &ingest.base(), &agent, &batch).await;
    assert_eq!(sent.accepted, 1);
    let Reply::Ok(Committed { seq }) = asked.await.expect("task") else {
        panic!("the committed event was not found");
    };
    let head: LogHead = query(&admin_client, "log_head", &LogHeadQuery {}).await;
    assert!(seq >= 1 && seq <= head.seq, "seq {seq}, head {}", head.seq);
    let at: Vec<LogRecord> = query(
        &admin_client,
        "events",
        &EventsQuery {
            after_seq: Some(seq - 1),
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(at[0].envelope.id, early.id, "seq names the event");

    // Already committed: answered at once, also without a wait.
    let q = CommittedQuery {
        id: early.id,
        wait_ms: 0,
    };
    let again: Committed = query(&admin_client, model::COMMITTED, &q).await;
    assert_eq!(again.seq, seq);

    // Never published: NotFound after the wait, naming the event.
    let missing = EventId::new();
    let q = CommittedQuery {
        id: missing,
        wait_ms: 200,
    };
    match query_reply::<_, Committed>(&admin_client, model::COMMITTED, &q).await {
        Reply::Error(e) => {
            assert_eq!(e.kind, QueryErrorKind::NotFound);
            assert!(e.message.contains(&missing.to_string()), "{}", e.message);
        }
        Reply::Ok(c) => panic!("an unknown event was found at {}", c.seq),
    }
    // Garbage is a bad request, and the service goes on.
    for payload in [
        b"\xc1".to_vec(),
        b"\x81\xa2id\xa3bad".to_vec(),
        vec![0x92; 100_000],
    ] {
        let msg = admin_client
            .request(
                fleetbus_schemas::subjects::query(model::COMMITTED),
                payload.into(),
            )
            .await
            .expect("request");
        let reply: Reply<Committed> = fleetbus_schemas::decode(&msg.payload).expect("reply");
        assert!(
            matches!(&reply, Reply::Error(e) if e.kind == QueryErrorKind::BadRequest),
            "{reply:?}"
        );
    }
    let q = CommittedQuery {
        id: early.id,
        wait_ms: 0,
    };
    let again: Committed = query(&admin_client, model::COMMITTED, &q).await;
    assert_eq!(again.seq, seq, "still answering after garbage");
    ingest.stop().await;
}
