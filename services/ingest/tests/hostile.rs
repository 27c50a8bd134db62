//! Hostile input to the agent API (issue 12, items 4 and 5), against ingest on a real
//! nats-server: non-canonical ids, the same id twice in one batch, skewed times, pings of
//! checks that do not exist or belong to another host, and slow clients.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::{ErrorBody, NoticeBody, NoticesBody, ReportsBody, SubmitReply};
use fleetbus_runtime::http::HttpLimits;
use fleetbus_schemas::events::agent::AgentEventKind;
use fleetbus_schemas::events::check::{CheckKind, CheckSpec};
use fleetbus_schemas::events::{CheckEvent, Event};
use fleetbus_schemas::{CheckId, Envelope, EventId, HostId, Severity};
use fleetbus_testkit::NatsServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn error_of(v: &Value) -> ErrorBody {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an error body: {v} ({e})"))
}

fn reply_of(v: &Value) -> SubmitReply {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a reply: {v} ({e})"))
}

fn notice(agent: &TestAgent) -> NoticeBody {
    NoticeBody {
        id: EventId::new(),
        time: Utc::now(),
        agent: agent.agent.clone(),
        host: agent.host.clone(),
        kind: AgentEventKind::BackupSucceeded,
        severity: Severity::Info,
        message: "ok".into(),
        service: None,
        fields: Default::default(),
    }
}

/// Publishes a check definition on the bus, as the scheduler does.
async fn define_check(js: &jetstream::Context, spec: CheckSpec) {
    publish(js, Event::Check(CheckEvent::Defined(spec))).await;
}

async fn publish(js: &jetstream::Context, event: Event) {
    let env = Envelope::new("scheduler", admin(), None, event);
    let bytes = fleetbus_schemas::encode(&env).expect("encode");
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

fn heartbeat(check: &str, ping_hosts: &[&HostId]) -> CheckSpec {
    CheckSpec {
        check: check.parse().expect("check id"),
        kind: CheckKind::Heartbeat {
            period_s: 60,
            grace_s: 0,
        },
        ping_hosts: ping_hosts.iter().map(|h| (*h).clone()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_ids_times_and_pings_are_refused_with_the_field_named() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = InProcess::start(test_config(&server, dir.path())).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let a = add_agent(&admin_client, "web-a").await;
    let b = add_agent(&admin_client, "web-b").await;
    let http = Http {
        client: reqwest::Client::new(),
        base: ingest.base(),
    };
    let report_path = format!("/v1/agents/{}/report", a.agent);
    let reports_path = format!("/v1/agents/{}/reports", a.agent);
    let events_path = format!("/v1/agents/{}/events", a.agent);

    // --- ids: only the canonical spelling ---
    let canonical = "01M9ZQXW8E6GQ8T3VJ4N5R2Y7K";
    let hostile = [
        ("81M9ZQXW8E6GQ8T3VJ4N5R2Y7K", "0-7"),
        ("ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "0-7"),
        ("01m9zqxw8e6gq8t3vj4n5r2y7k", "uppercase"),
        ("01M9ZQXW8E6GQ8T3VJ4N5R2YLK", "Crockford"),
        ("01M9ZQXW8E6GQ8T3VJ4N5R2Y7K0", "26"),
        ("not-a-ulid", "26"),
        ("01M9ZQXW8E6GQ8T3VJ4N5R2Y!K", "Crockford"),
    ];
    for (id, reason) in hostile {
        let mut body = serde_json::to_value(report(&a, 1)).expect("json");
        body["id"] = json!(id);
        let (s, v) = http.post(&report_path, &a.key, &body).await;
        assert_eq!(
            (s, error_of(&v).path.as_deref()),
            (422, Some("id")),
            "{id}: {v}"
        );
        assert!(error_of(&v).message.contains(reason), "{id}: {v}");

        let mut batch = serde_json::to_value(ReportsBody {
            reports: vec![report(&a, 1), report(&a, 2)],
        })
        .expect("json");
        batch["reports"][1]["id"] = json!(id);
        let (s, v) = http.post(&reports_path, &a.key, &batch).await;
        assert_eq!(
            (s, error_of(&v).path.as_deref()),
            (422, Some("reports[1].id")),
            "{id}: {v}"
        );

        let mut events = serde_json::to_value(NoticesBody {
            events: vec![notice(&a)],
        })
        .expect("json");
        events["events"][0]["id"] = json!(id);
        let (s, v) = http.post(&events_path, &a.key, &events).await;
        assert_eq!(
            (s, error_of(&v).path.as_deref()),
            (422, Some("events[0].id")),
            "{id}: {v}"
        );
    }
    // The canonical id is stored, and the overflowing spelling that used to alias it never was.
    let mut body = serde_json::to_value(report(&a, 1)).expect("json");
    body["id"] = json!(canonical);
    let (s, v) = http.post(&report_path, &a.key, &body).await;
    assert_eq!((s, reply_of(&v).accepted), (202, 1), "{v}");

    // --- the same id twice in one batch ---
    let first = report(&a, 3);
    let batch = ReportsBody {
        reports: vec![first.clone(), report(&a, 4), first.clone()],
    };
    let (s, v) = http
        .post(
            &reports_path,
            &a.key,
            &serde_json::to_value(&batch).expect("json"),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let r = reply_of(&v);
    assert_eq!((r.accepted, r.duplicates), (2, 1), "{v}");
    // Resent as a whole: all three are duplicates now.
    let (s, v) = http
        .post(
            &reports_path,
            &a.key,
            &serde_json::to_value(&batch).expect("json"),
        )
        .await;
    let r = reply_of(&v);
    assert_eq!((s, r.accepted, r.duplicates), (202, 0, 3), "{v}");
    // The same id with different content is a client bug, named.
    let mut changed = report(&a, 5);
    let mut other = report(&a, 6);
    other.id = changed.id;
    changed.agent_version = "9.9.9".into();
    let (s, v) = http
        .post(
            &reports_path,
            &a.key,
            &serde_json::to_value(ReportsBody {
                reports: vec![changed, other],
            })
            .expect("json"),
        )
        .await;
    assert_eq!(
        (s, error_of(&v).path.as_deref()),
        (422, Some("reports[1].id")),
        "{v}"
    );
    let twice = notice(&a);
    let (s, v) = http
        .post(
            &events_path,
            &a.key,
            &serde_json::to_value(NoticesBody {
                events: vec![twice.clone(), twice],
            })
            .expect("json"),
        )
        .await;
    let r = reply_of(&v);
    assert_eq!((s, r.accepted, r.duplicates), (202, 1, 1), "{v}");

    // --- times outside the skew (default: 1 day ahead, 365 days back) ---
    for (time, ok) in [
        ("0001-01-01T00:00:00Z", false),
        ("9999-12-31T23:59:59Z", false),
        (
            &(Utc::now() + chrono::Duration::hours(25)).to_rfc3339()[..],
            false,
        ),
        (
            &(Utc::now() - chrono::Duration::days(366)).to_rfc3339()[..],
            false,
        ),
        (
            &(Utc::now() + chrono::Duration::hours(23)).to_rfc3339()[..],
            true,
        ),
        (
            &(Utc::now() - chrono::Duration::days(364)).to_rfc3339()[..],
            true,
        ),
    ] {
        let mut body = serde_json::to_value(report(&a, 7)).expect("json");
        body["time"] = json!(time);
        let (s, v) = http.post(&report_path, &a.key, &body).await;
        if ok {
            assert_eq!(s, 202, "{time}: {v}");
        } else {
            assert_eq!(
                (s, error_of(&v).path.as_deref()),
                (422, Some("time")),
                "{time}: {v}"
            );
            assert!(error_of(&v).message.contains("skew"), "{v}");
        }
        let mut events = serde_json::to_value(NoticesBody {
            events: vec![notice(&a), notice(&a)],
        })
        .expect("json");
        events["events"][1]["time"] = json!(time);
        let (s, v) = http.post(&events_path, &a.key, &events).await;
        if ok {
            assert_eq!(s, 202, "{time}: {v}");
        } else {
            assert_eq!(
                (s, error_of(&v).path.as_deref()),
                (422, Some("events[1].time")),
                "{time}: {v}"
            );
        }
    }

    // --- pings ---
    let ping = |check: &str| format!("/v1/checks/{check}/ping");
    let (s, v) = http.post(&ping("no-such-check"), &a.key, &json!({})).await;
    assert_eq!((s, error_of(&v).error.as_str()), (404, "not_found"), "{v}");
    let (s, v) = http.post(&ping("Bad.Check"), &a.key, &json!({})).await;
    assert_eq!(
        (s, error_of(&v).path.as_deref()),
        (422, Some("path.check")),
        "{v}"
    );

    define_check(&js, heartbeat("cron-a", &[&a.host])).await;
    define_check(&js, heartbeat("cron-none", &[])).await;
    define_check(
        &js,
        CheckSpec {
            check: "backup-b".parse().expect("check id"),
            kind: CheckKind::Deadline {
                event_kind: "backup_succeeded".into(),
                host: b.host.clone(),
                by: "05:00".into(),
                time_zone: "UTC".into(),
            },
            ping_hosts: vec![],
        },
    )
    .await;
    let known = fleetbus_testkit::wait_for(
        || async {
            let (s, _) = http.post(&ping("backup-b"), &b.key, &json!({})).await;
            s == 202
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(known, "the deadline check's own host may ping it");
    let (s, v) = http.post(&ping("cron-a"), &a.key, &json!({})).await;
    assert_eq!(s, 202, "listed host: {v}");
    let (s, v) = http.post(&ping("cron-a"), &b.key, &json!({})).await;
    assert_eq!((s, error_of(&v).error.as_str()), (403, "forbidden"), "{v}");
    assert!(error_of(&v).message.contains("ping_hosts"), "{v}");
    let (s, v) = http.post(&ping("backup-b"), &a.key, &json!({})).await;
    assert_eq!(s, 403, "another host's deadline check: {v}");
    let (s, v) = http.post(&ping("cron-none"), &a.key, &json!({})).await;
    assert_eq!(s, 403, "no ping_hosts: nobody may ping: {v}");
    let (s, v) = http
        .post(
            &ping("cron-a"),
            &a.key,
            &json!({"id": "81M9ZQXW8E6GQ8T3VJ4N5R2Y7K"}),
        )
        .await;
    assert_eq!((s, error_of(&v).path.as_deref()), (422, Some("id")), "{v}");
    let (s, v) = http.post(&ping("cron-a"), "not-a-key", &json!({})).await;
    assert_eq!(s, 401, "{v}");

    let cron_a: CheckId = "cron-a".parse().expect("check id");
    publish(&js, Event::Check(CheckEvent::Deleted { check: cron_a })).await;
    let gone = fleetbus_testkit::wait_for(
        || async { http.post(&ping("cron-a"), &a.key, &json!({})).await.0 == 404 },
        Duration::from_secs(20),
    )
    .await;
    assert!(gone, "a deleted check is unknown again");

    ingest.stop().await;
}

/// Sends part of a request head, then reads until the server closes the connection.
async fn slow_client(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /v1/agents/web-a/report HTTP/1.1\r\nhost: x\r\nauthorization: Bea")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_closed_and_the_connection_limit_holds() {
    const HEADER_MS: u64 = 500;
    const LIMIT: usize = 50;
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&server, dir.path());
    config.limits.http = HttpLimits {
        max_connections: LIMIT,
        header_read_timeout_ms: HEADER_MS,
        body_read_timeout_ms: HEADER_MS,
        request_timeout_ms: config.limits.commit_timeout_ms + 1_000,
    };
    let ingest = InProcess::start(config).await;
    let addr = ingest.config.http_addr;

    // Four times the limit of slow clients: the server holds at most LIMIT of them at once and
    // closes each after the header timeout, so all are closed after about four timeouts.
    let started = std::time::Instant::now();
    let slow: Vec<_> = (0..4 * LIMIT)
        .map(|_| tokio::spawn(slow_client(addr)))
        .collect();
    // A normal client while every slot is taken: served once slots free.
    tokio::time::sleep(Duration::from_millis(HEADER_MS / 5)).await;
    let health = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_millis(HEADER_MS * 40))
        .send()
        .await
        .expect("a normal client is served");
    assert!(health.status().is_success());
    let mut closed = 0;
    for task in slow {
        tokio::time::timeout(Duration::from_millis(HEADER_MS * 40), task)
            .await
            .expect("every slow client is closed by the server")
            .expect("task");
        closed += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(closed, 4 * LIMIT);
    // With the limit, the slow clients are served in rounds of LIMIT: at least four header
    // timeouts pass before the last is closed (it waited in the backlog meanwhile).
    assert!(
        elapsed >= Duration::from_millis(HEADER_MS * 3),
        "{} slow clients closed in {elapsed:?}: the limit of {LIMIT} did not hold",
        4 * LIMIT
    );
    eprintln!(
        "{} slow clients, limit {LIMIT}, header timeout {HEADER_MS} ms: all closed after {elapsed:?}",
        4 * LIMIT
    );
    ingest.stop().await;
}
