//! `ops/bench/web`: overview render time with 10,000 services, SSE fan-out to 200 clients, and
//! action click → job started latency — each beside a baseline measured in the same run.
//! Bounded: fixed counts, every wait has a deadline. Prints a table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::body::Body;
use axum::http::{header, Request};
use fleetbus_bus_config::{CommandArea, Role};
use fleetbus_schemas::commands::job::JobCommand;
use fleetbus_schemas::events::agent::{AgentReport, Resources, ServiceObservation, ServiceState};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::{JobRequest, RunType};
use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};
use fleetbus_schemas::events::{AgentEvent, HostEvent, JobEvent, ServiceEvent};
use fleetbus_schemas::{Actor, Command, CommandEnvelope, Envelope, Event, JobId, UserRole};
use std::future::IntoFuture;

use futures::StreamExt;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const HOSTS: usize = 500;
const SERVICES_PER_HOST: usize = 20;
const RENDERS: usize = 30;
const SSE_CLIENTS: usize = 200;
const SSE_EVENTS: usize = 100;
const CLICKS: usize = 200;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id")
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn publish_all(js: &jetstream::Context, events: Vec<Envelope>) -> u64 {
    let mut acks = futures::stream::FuturesOrdered::new();
    let mut last = 0;
    for env in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.to_string().as_str());
        let ack = js
            .publish_with_headers(
                env.subject(),
                headers,
                fleetbus_schemas::encode(&env).expect("enc").into(),
            )
            .await
            .expect("publish");
        acks.push_back(ack.into_future());
        if acks.len() >= 256 {
            last = acks.next().await.expect("ack").expect("ack").sequence;
        }
    }
    while let Some(a) = acks.next().await {
        last = a.expect("ack").sequence;
    }
    last
}

async fn wait_seq(state: &fleetbus_web::Shared, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.hub.last_seq() < seq {
        assert!(Instant::now() < deadline, "web did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nats = fleetbus_testkit::NatsServer::start();
    nats.ensure_streams().await;
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fleetbus_web::WebConfig {
        nats: nats.nats_config(Role::Web),
        tokens_file: Some(dir.path().join("tokens.json")),
        ..Default::default()
    };
    let state = fleetbus_web::AppState::new(config, nats.client(Role::Web).await, shutdown.clone())
        .expect("state");
    state.start_background(&shutdown);
    let app = fleetbus_web::app(state.clone());
    let (token, _) = state
        .tokens
        .create("bench", UserRole::Operator, "bench")
        .await
        .expect("token");
    let admin = nats.client(Role::Admin).await;
    let js = jetstream::new(admin.clone());

    // --- a fleet of 500 hosts × 20 services
    let agent = Actor::agent("bench");
    let mut events = Vec::new();
    for h in 0..HOSTS {
        let host = format!("host-{h:03}");
        events.push(Envelope::new(
            "bench",
            Actor::service("ingest"),
            None,
            Event::Host(HostEvent::Registered(HostSpec {
                host: id(&host),
                address: format!("127.0.1.{}", h % 250 + 1),
                port: 22,
                user: "fleet".into(),
                tags: vec![format!("rack{}", h % 10)],
                roles: vec!["app".into()],
                host_key_policy: HostKeyPolicy::AcceptNew,
                allow_adhoc: false,
                disabled: false,
            })),
        ));
        for s in 0..SERVICES_PER_HOST {
            events.push(Envelope::new(
                "bench",
                Actor::service("ingest"),
                None,
                Event::Service(ServiceEvent::Registered(ServiceSpec {
                    host: id(&host),
                    name: id(&format!("svc-{s:02}")),
                    manager: ServiceManager::Systemd,
                    unit: format!("svc-{s:02}.service"),
                    actions: vec![ServiceAction::Status, ServiceAction::Restart],
                    log_path: None,
                    expected_running: true,
                })),
            ));
        }
        events.push(Envelope::new(
            "bench",
            agent.clone(),
            None,
            Event::Agent(AgentEvent::Reported(AgentReport {
                agent: id(&host),
                host: id(&host),
                agent_version: "bench".into(),
                resources: Resources {
                    cpu_pct: 10.0,
                    mem_total_kb: 1 << 20,
                    mem_used_kb: 1 << 19,
                    disk_total_kb: 1 << 24,
                    disk_used_kb: 1 << 22,
                    load1: 0.1,
                    load5: 0.1,
                    load15: 0.1,
                    uptime_s: 1000,
                },
                services: (0..SERVICES_PER_HOST)
                    .map(|s| ServiceObservation {
                        name: id(&format!("svc-{s:02}")),
                        state: if s == 7 {
                            ServiceState::Failed
                        } else {
                            ServiceState::Running
                        },
                        detail: None,
                    })
                    .collect(),
                config_version: None,
                config_hash: None,
            })),
        ));
    }
    let n_events = events.len();
    let t = Instant::now();
    let last = publish_all(&js, events).await;
    wait_seq(&state, last).await;
    let fold_time = t.elapsed();

    // --- overview render
    let get = |path: &str| {
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("req")
    };
    let mut renders = Vec::new();
    let mut size = 0;
    for _ in 0..RENDERS {
        let t = Instant::now();
        let res = app.clone().oneshot(get("/")).await.expect("render");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        renders.push(t.elapsed());
        size = body.len();
    }
    let services: usize = state
        .hub
        .read_fold(|f| f.proj.fleet.hosts.values().map(|h| h.services.len()).sum());
    let mut baseline = Vec::new();
    for _ in 0..RENDERS {
        let t = Instant::now();
        let json = state
            .hub
            .read_fold(|f| serde_json::to_vec(&f.proj.fleet).expect("json"));
        baseline.push(t.elapsed());
        std::hint::black_box(json);
    }

    // --- SSE fan-out
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(fleetbus_web::serve(
        listener,
        state.clone(),
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let received = Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    let mut clients = Vec::new();
    for _ in 0..SSE_CLIENTS {
        let res = http
            .get(format!("{base}/live"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sse connect");
        let rec = received.clone();
        clients.push(tokio::spawn(async move {
            let mut stream = res.bytes_stream();
            let mut buf = String::new();
            let mut got = 0;
            while let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_secs(20), stream.next()).await
            {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let frame: String = buf.drain(..i + 2).collect();
                    if let Some(seq) = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("id: "))
                        .and_then(|s| s.parse().ok())
                    {
                        rec.lock().expect("lock").push((seq, Instant::now()));
                        got += 1;
                    }
                }
                if got >= SSE_EVENTS {
                    return;
                }
            }
        }));
    }
    // Raw NATS baseline: the same events to 200 core subscribers.
    let mut raw_subs = Vec::new();
    let raw_received = Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    for _ in 0..SSE_CLIENTS {
        let mut sub = admin.subscribe("fleet.evt.agent.>").await.expect("sub");
        let rec = raw_received.clone();
        raw_subs.push(tokio::spawn(async move {
            let mut got = 0;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(20), sub.next()).await
            {
                let env: Envelope = fleetbus_schemas::decode(&m.payload).expect("decode");
                rec.lock()
                    .expect("lock")
                    .push((env.id.to_string(), Instant::now()));
                got += 1;
                if got >= SSE_EVENTS {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent_at = std::collections::HashMap::new();
    let mut raw_sent = std::collections::HashMap::new();
    let fan_start = Instant::now();
    for i in 0..SSE_EVENTS {
        let env = Envelope::new(
            "bench",
            agent.clone(),
            None,
            Event::Agent(AgentEvent::Recovered {
                agent: id(&format!("host-{:03}", i % HOSTS)),
            }),
        );
        raw_sent.insert(env.id.to_string(), Instant::now());
        let seq = publish_all(&js, vec![env]).await;
        sent_at.insert(seq, *raw_sent.values().max().expect("time"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    for c in raw_subs {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let fan_time = fan_start.elapsed();
    let sse: Vec<Duration> = received
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(seq, at)| sent_at.get(seq).map(|s| at.duration_since(*s)))
        .collect();
    let raw: Vec<Duration> = raw_received
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(id, at)| raw_sent.get(id).map(|s| at.duration_since(*s)))
        .collect();

    // --- click → job started
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("COMMANDS")
        .await
        .expect("stream")
        .get_consumer(&CommandArea::Job.consumer_name())
        .await
        .expect("consumer");
    let exec_js = js.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut messages = consumer.messages().await.expect("messages");
        loop {
            let m = tokio::select! { m = messages.next() => m, () = stop.cancelled() => return };
            let Some(Ok(m)) = m else { return };
            let _ = m.ack().await;
            let Ok(cmd) = fleetbus_schemas::decode::<CommandEnvelope>(&m.payload) else {
                continue;
            };
            if let Command::Job(JobCommand::RunAction {
                host,
                service,
                action,
                lines,
            }) = cmd.command
            {
                let job = JobId::new();
                let ev = |e| {
                    Envelope::new(
                        "executor",
                        Actor::service("executor"),
                        Some(cmd.id),
                        Event::Job(e),
                    )
                };
                publish_all(
                    &exec_js,
                    vec![
                        ev(JobEvent::Scheduled {
                            job,
                            host: host.clone(),
                            run_type: RunType::Action,
                            summary: "bench".into(),
                            queue_position: 0,
                            request: JobRequest::Action {
                                service,
                                action,
                                lines,
                            },
                            idempotent: false,
                        }),
                        ev(JobEvent::Started { job, host }),
                    ],
                )
                .await;
            }
        }
    });
    let mut clicks = Vec::new();
    for i in 0..CLICKS {
        let path = format!(
            "/api/services/host-{:03}:svc-{:02}/restart",
            i % HOSTS,
            i % SERVICES_PER_HOST
        );
        let t = Instant::now();
        let res = app
            .clone()
            .oneshot(
                Request::post(path)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("click");
        assert_eq!(res.status(), 202);
        clicks.push(t.elapsed());
    }
    // Baseline: publish a command and see the executor's event, without web.
    let mut events_sub = admin.subscribe("fleet.evt.job.>").await.expect("sub");
    let mut raw_clicks = Vec::new();
    for i in 0..CLICKS {
        let cmd = CommandEnvelope::new(
            Actor::user("bench", UserRole::Operator),
            Command::Job(JobCommand::RunAction {
                host: id(&format!("host-{:03}", i % HOSTS)),
                service: id("svc-00"),
                action: ServiceAction::Status,
                lines: None,
            }),
        );
        let t = Instant::now();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", cmd.id.to_string().as_str());
        js.publish_with_headers(
            cmd.subject(),
            headers,
            fleetbus_schemas::encode(&cmd).expect("enc").into(),
        )
        .await
        .expect("pub")
        .await
        .expect("ack");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), events_sub.next())
                .await
                .expect("event in time")
                .expect("sub");
            let env: Envelope = fleetbus_schemas::decode(&m.payload).expect("decode");
            if env.causation == Some(cmd.id) {
                break;
            }
        }
        raw_clicks.push(t.elapsed());
    }

    println!("fleetbus web benchmark ({HOSTS} hosts × {SERVICES_PER_HOST} services = {services} services; {n_events} events folded in {})", ms(fold_time));
    println!();
    println!("| measurement | fleetbus web p50 | p99 | baseline | baseline p50 | ratio (p50) |");
    println!("|---|---|---|---|---|---|");
    println!("| overview render, {services} services ({} KiB HTML), {RENDERS} runs | {} | {} | serde_json of FleetStatus | {} | {:.1}× |",
        size / 1024, ms(pct(renders.clone(), 0.5)), ms(pct(renders.clone(), 0.99)), ms(pct(baseline.clone(), 0.5)),
        pct(renders, 0.5).as_secs_f64() / pct(baseline, 0.5).as_secs_f64().max(1e-9));
    println!("| SSE fan-out, {SSE_CLIENTS} clients × {SSE_EVENTS} events: publish → client ({} deliveries of {}) | {} | {} | raw NATS, {SSE_CLIENTS} core subscribers | {} | {:.1}× |",
        sse.len(), SSE_CLIENTS * SSE_EVENTS, ms(pct(sse.clone(), 0.5)), ms(pct(sse.clone(), 0.99)), ms(pct(raw.clone(), 0.5)),
        pct(sse, 0.5).as_secs_f64() / pct(raw, 0.5).as_secs_f64().max(1e-9));
    println!("| click → job started (POST → 202 after Scheduled), {CLICKS} clicks | {} | {} | JetStream command → executor event | {} | {:.1}× |",
        ms(pct(clicks.clone(), 0.5)), ms(pct(clicks.clone(), 0.99)), ms(pct(raw_clicks.clone(), 0.5)),
        pct(clicks, 0.5).as_secs_f64() / pct(raw_clicks, 0.5).as_secs_f64().max(1e-9));
    println!();
    println!("fan-out wall time: {}", ms(fan_time));
    shutdown.cancel();
}
