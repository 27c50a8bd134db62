//! Bad input for the agent HTTP API, the command bus, the event bus and queries: each gets a
//! clear error (status + JSON path, or a typed `CommandRejected` event / error reply), and the
//! service keeps working afterwards.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use fleetbus_bus_config::Role;
use fleetbus_ingest::api::{ErrorBody, ReportBody, ReportsBody, SubmitReply};
use fleetbus_schemas::commands::{AgentCommand, HostCommand, UserCommand};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{Event, SystemEvent};
use fleetbus_schemas::queries::{EventsQuery, LogHeadQuery, QueryErrorKind, Reply};
use fleetbus_schemas::queries::{LogHead, LogRecord};
use fleetbus_schemas::{Actor, Command, CommandEnvelope, UserName, UserRole};
use fleetbus_testkit::NatsServer;
use serde_json::json;

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn post(&self, path: &str, key: Option<&str>, body: Vec<u8>) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, value)
    }

    async fn report(
        &self,
        agent: &TestAgent,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post(
            &format!("/v1/agents/{}/report", agent.agent),
            key,
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }
}

fn error_of(v: &serde_json::Value) -> ErrorBody {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an error body: {v} ({e})"))
}

/// Waits for the `CommandRejected` event that names `pred`.
async fn rejection(
    client: &async_nats::Client,
    pred: impl Fn(&SystemEvent) -> bool,
) -> (RejectKind, String) {
    for _ in 0..200 {
        let page: Vec<LogRecord> = query(
            client,
            "events",
            &EventsQuery {
                domain: Some("system".into()),
                type_name: Some("command_rejected".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await;
        for r in page {
            if let Event::System(
                e @ SystemEvent::CommandRejected {
                    reason, message, ..
                },
            ) = &r.envelope.event
            {
                if pred(e) {
                    return (reason.clone(), message.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no matching CommandRejected event");
}

fn for_command(id: fleetbus_schemas::CommandId) -> impl Fn(&SystemEvent) -> bool {
    move |e| matches!(e, SystemEvent::CommandRejected { command: Some(c), .. } if *c == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_clear_errors_and_the_service_keeps_working() {
    let server = NatsServer::start();
    ensure_test_streams(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&server, dir.path());
    config.limits.agent_requests_per_s = 5;
    config.limits.agent_burst = 40;
    let ingest = InProcess::start(config).await;
    let admin_client = server.client(Role::Admin).await;
    let js = jetstream::new(admin_client.clone());
    let a = add_agent(&admin_client, "web-a").await;
    let b = add_agent(&admin_client, "web-b").await;
    let flood = add_agent(&admin_client, "web-flood").await;
    let http = Http {
        client: reqwest::Client::new(),
        base: ingest.base(),
    };
    let good = |agent: &TestAgent| serde_json::to_value(report(agent, 1)).expect("json");

    // --- HTTP: auth ---
    let (s, v) = http.report(&a, None, &good(&a)).await;
    assert_eq!(s, 401, "{v}");
    assert!(error_of(&v).message.contains("Bearer"));
    let (s, v) = http.report(&a, Some("not-a-key"), &good(&a)).await;
    assert_eq!((s, error_of(&v).error.as_str()), (401, "unauthorized"));
    let (s, v) = http.report(&a, Some(&b.key), &good(&a)).await;
    assert_eq!(s, 403, "other agent's key: {v}");
    assert!(error_of(&v).message.contains("web-b"), "{v}");
    let (s, v) = http.report(&a, Some(&a.key), &good(&b)).await;
    assert_eq!(s, 403, "body names another agent: {v}");
    let mut wrong_host = good(&a);
    wrong_host["host"] = json!("web-b");
    let (s, v) = http.report(&a, Some(&a.key), &wrong_host).await;
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).message.starts_with("host: "), "{v}");
    let mut batch: Vec<ReportBody> = (0..3).map(|n| report(&a, n)).collect();
    batch[2].host = "web-b".parse().expect("host id");
    let (s, v) = http
        .post(
            "/v1/agents/web-a/reports",
            Some(&a.key),
            serde_json::to_vec(&ReportsBody { reports: batch }).expect("json"),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        error_of(&v).message.starts_with("reports[2].host: "),
        "the batch item is named: {v}"
    );

    // --- HTTP: malformed and invalid bodies, with JSON paths ---
    let (s, v) = http
        .post(
            "/v1/agents/web-a/report",
            Some(&a.key),
            b"{\"id\": ".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = http
        .post(
            "/v1/agents/web-a/report",
            Some(&a.key),
            b"\xff\xfe garbage".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let mut wrong_type = good(&a);
    wrong_type["resources"]["cpu_pct"] = json!("high");
    let (s, v) = http.report(&a, Some(&a.key), &wrong_type).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        error_of(&v).path.as_deref(),
        Some("resources.cpu_pct"),
        "{v}"
    );
    let mut unknown = good(&a);
    unknown["colour"] = json!("blue");
    let (s, v) = http.report(&a, Some(&a.key), &unknown).await;
    assert_eq!(s, 422, "{v}");
    assert!(error_of(&v).message.contains("colour"), "{v}");
    let mut bad_id = good(&a);
    bad_id["id"] = json!("not-a-ulid");
    let (s, v) = http.report(&a, Some(&a.key), &bad_id).await;
    assert_eq!((s, error_of(&v).path.as_deref()), (422, Some("id")), "{v}");
    let mut reports: Vec<ReportBody> = (0..3).map(|n| report(&a, n)).collect();
    reports[1].resources.cpu_pct = 250.0;
    let (s, v) = http
        .post(
            "/v1/agents/web-a/reports",
            Some(&a.key),
            serde_json::to_vec(&ReportsBody { reports }).expect("json"),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        error_of(&v).path.as_deref(),
        Some("reports[1].resources.cpu_pct"),
        "{v}"
    );
    let too_many = ReportsBody {
        reports: (0..501).map(|n| report(&a, n)).collect(),
    };
    let (s, v) = http
        .post(
            "/v1/agents/web-a/reports",
            Some(&a.key),
            serde_json::to_vec(&too_many).expect("json"),
        )
        .await;
    assert_eq!(
        (s, error_of(&v).path.as_deref()),
        (422, Some("reports")),
        "{v}"
    );
    let mut hostile = good(&a);
    hostile["agent_version"] = json!("1.0\u{0000}<script>");
    let (s, v) = http.report(&a, Some(&a.key), &hostile).await;
    assert_eq!(
        (s, error_of(&v).path.as_deref()),
        (422, Some("agent_version")),
        "{v}"
    );
    let (s, v) = http
        .post("/v1/agents/Web%20A/report", Some(&a.key), b"{}".to_vec())
        .await;
    assert_eq!(
        (s, error_of(&v).path.as_deref()),
        (422, Some("path.agent")),
        "{v}"
    );

    // --- HTTP: oversize ---
    let mut huge = good(&a);
    huge["agent_version"] = json!("x".repeat(300 * 1024));
    let (s, v) = http.report(&a, Some(&a.key), &huge).await;
    assert_eq!(s, 413, "{v}");

    // Hostile but valid text is stored verbatim.
    let mut odd = report(&a, 2);
    odd.services[0].detail = Some("'; DROP TABLE x; -- \u{202e}evil <b>".into());
    let (s, v) = http
        .report(&a, Some(&a.key), &serde_json::to_value(&odd).expect("json"))
        .await;
    assert_eq!(s, 202, "{v}");

    // --- HTTP: flood ---
    let mut statuses = Vec::new();
    for n in 0..60 {
        let (s, _) = http
            .report(
                &flood,
                Some(&flood.key),
                &serde_json::to_value(report(&flood, n)).expect("json"),
            )
            .await;
        statuses.push(s);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&202), "{statuses:?}");
    let (s, _) = http.report(&a, Some(&a.key), &good(&a)).await;
    assert_eq!(s, 202, "another agent is not limited by the flood");

    // --- blocked agents are stored and told so; revoked keys are refused ---
    send_command(
        &js,
        admin(),
        Command::Agent(AgentCommand::Block {
            agent: b.agent.clone(),
            reason: "test".into(),
        }),
    )
    .await;
    let blocked = fleetbus_testkit::wait_for(
        || {
            let client = admin_client.clone();
            async move {
                let reg: fleetbus_projections::Registry = query(
                    &client,
                    "registry",
                    &fleetbus_schemas::queries::RegistryQuery {},
                )
                .await;
                reg.is_blocked(&"web-b".parse().expect("id"))
            }
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(blocked);
    let (s, v) = http.report(&b, Some(&b.key), &good(&b)).await;
    assert_eq!(s, 202, "{v}");
    let reply: SubmitReply = serde_json::from_value(v).expect("reply");
    assert!(reply.blocked && reply.accepted == 1);
    send_command(
        &js,
        admin(),
        Command::Agent(AgentCommand::RevokeKey {
            agent: b.agent.clone(),
        }),
    )
    .await;
    let revoked = fleetbus_testkit::wait_for(
        || {
            let http = &http;
            let b = &b;
            async move {
                http.report(
                    b,
                    Some(&b.key),
                    &serde_json::to_value(report(b, 9)).expect("json"),
                )
                .await
                .0 == 403
            }
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(revoked, "revoked key refused with 403");

    // --- commands: typed rejections naming the command ---
    let dup_host = send_command(
        &js,
        admin(),
        Command::Host(HostCommand::Add(host_spec(&a.host))),
    )
    .await;
    let (kind, msg) = rejection(&admin_client, for_command(dup_host.id)).await;
    assert_eq!(kind, RejectKind::Conflict, "{msg}");
    let bad_hash = send_command(
        &js,
        admin(),
        Command::Agent(AgentCommand::IssueKey {
            agent: "web-z".parse().expect("id"),
            host: a.host.clone(),
            key_id: "k".into(),
            key_hash: "XYZ".into(),
        }),
    )
    .await;
    let (kind, msg) = rejection(&admin_client, for_command(bad_hash.id)).await;
    assert_eq!(kind, RejectKind::Invalid);
    assert!(msg.contains("64"), "{msg}");
    let bad_password = send_command(
        &js,
        admin(),
        Command::User(UserCommand::Add {
            user: UserName::new("eve").expect("name"),
            role: UserRole::Viewer,
            password_hash: "hunter2".into(),
        }),
    )
    .await;
    let (kind, msg) = rejection(&admin_client, for_command(bad_password.id)).await;
    assert_eq!(kind, RejectKind::Invalid);
    assert!(msg.contains("argon2id"), "{msg}");
    let viewer = send_command(
        &js,
        Actor::user("vic", UserRole::Viewer),
        Command::Host(HostCommand::Remove {
            host: a.host.clone(),
        }),
    )
    .await;
    assert_eq!(
        rejection(&admin_client, for_command(viewer.id)).await.0,
        RejectKind::Forbidden
    );

    // Garbage msgpack, a command on the wrong subject, an unknown verb.
    js.send_publish(
        "fleet.cmd.host.add",
        jetstream::context::Publish::build().payload(b"\xc1\xc1garbage".as_slice().into()),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let (kind, _) = rejection(&admin_client, |e| {
        matches!(e, SystemEvent::CommandRejected { command: None, subject, .. } if subject == "fleet.cmd.host.add")
    })
    .await;
    assert_eq!(kind, RejectKind::Malformed);
    let misplaced = CommandEnvelope::new(
        admin(),
        Command::Host(HostCommand::Remove {
            host: a.host.clone(),
        }),
    );
    let bytes = fleetbus_schemas::encode(&misplaced).expect("encode");
    js.send_publish(
        "fleet.cmd.host.explode",
        jetstream::context::Publish::build().payload(bytes.into()),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let (kind, msg) = rejection(&admin_client, for_command(misplaced.id)).await;
    assert_eq!(kind, RejectKind::Malformed);
    assert!(msg.contains("fleet.cmd.host.remove"), "{msg}");

    // A good command still works: a user with a real argon2id hash.
    let phc =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$J1s0wZkH4PGGr1JYRRuzEhTj9Iu2OXTRMcGZy7mmIt8";
    send_command(
        &js,
        admin(),
        Command::User(UserCommand::Add {
            user: UserName::new("ann").expect("name"),
            role: UserRole::Operator,
            password_hash: phc.into(),
        }),
    )
    .await;
    let ann = fleetbus_testkit::wait_for(
        || {
            let client = admin_client.clone();
            async move {
                matches!(
                    query_reply::<_, fleetbus_projections::UserRecord>(
                        &client,
                        "user_credential",
                        &fleetbus_schemas::queries::UserCredentialQuery { user: UserName::new("ann").expect("name") }
                    )
                    .await,
                    Reply::Ok(r) if r.password_hash.as_deref() == Some(phc)
                )
            }
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(ann, "user added");
    let users: serde_json::Value = query(
        &admin_client,
        "users",
        &fleetbus_schemas::queries::UsersQuery {},
    )
    .await;
    assert!(
        !users.to_string().contains("argon2"),
        "users query leaks hashes: {users}"
    );

    // --- events bus: garbage and misplaced events are not stored ---
    let head: LogHead = query(&admin_client, "log_head", &LogHeadQuery {}).await;
    js.send_publish(
        "fleet.evt.agent.web-a.reported",
        jetstream::context::Publish::build().payload(b"\x93garbage".as_slice().into()),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let good_report = report(&a, 77);
    let (s, v) = http
        .report(
            &a,
            Some(&a.key),
            &serde_json::to_value(&good_report).expect("json"),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    // Everything stored since is a decodable event (the events query decodes every entry and
    // would fail on garbage), and the good report is there. Other components may add events
    // of their own meanwhile, so the count is not asserted.
    let since: Vec<LogRecord> = query(
        &admin_client,
        "events",
        &EventsQuery {
            after_seq: Some(head.seq),
            ..Default::default()
        },
    )
    .await;
    assert!(
        since.iter().any(|r| r.envelope.id == good_report.id),
        "good report stored"
    );
    assert!(
        since
            .iter()
            .all(|r| r.subject != "fleet.evt.agent.web-a.reported"
                || r.envelope.id == good_report.id),
        "the garbage payload was not stored"
    );

    // --- queries: garbage and unknown models get typed errors ---
    let msg = admin_client
        .request("fleet.q.events", b"\xc1".as_slice().into())
        .await
        .expect("request");
    let reply: Reply<()> = fleetbus_schemas::decode(&msg.payload).expect("reply");
    assert!(matches!(reply, Reply::Error(e) if e.kind == QueryErrorKind::BadRequest));
    let msg = admin_client
        .request("fleet.q.nope", b"".as_slice().into())
        .await
        .expect("request");
    let reply: Reply<()> = fleetbus_schemas::decode(&msg.payload).expect("reply");
    assert!(
        matches!(reply, Reply::Error(e) if e.kind == QueryErrorKind::BadRequest && e.message.contains("unknown model"))
    );
    let reply: Reply<fleetbus_projections::HostStatus> = query_reply(
        &admin_client,
        "host",
        &fleetbus_schemas::queries::HostQuery {
            host: "ghost".parse().expect("id"),
        },
    )
    .await;
    assert!(matches!(reply, Reply::Error(e) if e.kind == QueryErrorKind::NotFound));

    // Still alive and serving.
    let (s, _) = http.report(&a, Some(&a.key), &good(&a)).await;
    assert_eq!(s, 202);
    ingest.stop().await;
}
