//! Notifier benchmark (run through `ops/bench/notifier`, which builds it in release mode).
//!
//! 1. Engine only: alert events folded against 1,000 rules, no I/O.
//! 2. End to end: a real nats-server, alert-opening events published into `EVENTS` at a target
//!    rate (10,000/s), the notifier in-process with 1,000 rules; every alert gets one decision
//!    event (a tenth are delivered to an axum webhook receiver, the rest are suppressed by a
//!    recipient preference, so every alert costs a decision and a published event). Webhook
//!    delivery latency = receiver arrival − event time.
//! 3. Baseline in the same run: the same webhook POSTed straight from a plain reqwest client.
//!
//! Bounded: `BENCH_SECONDS` (default 3) of load, every wait has a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use fleetbus_bus_config::Role;
use fleetbus_notifier::engine::{Catalog, Engine};
use fleetbus_notifier::Config;
use fleetbus_schemas::commands::notify::{
    AlertMatch, ChannelKind, ChannelSpec, RecipientKind, RecipientSpec, RuleSpec,
};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::service::ServiceStatus;
use fleetbus_schemas::events::ServiceEvent;
use fleetbus_schemas::{Actor, Envelope, Event, Severity};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const RULES: usize = 1_000;
const TARGET_RATE: u64 = 10_000;

fn alert_event(i: u64) -> Envelope {
    Envelope::new(
        "bench",
        Actor::service("bench"),
        None,
        Event::Service(ServiceEvent::StatusObserved {
            host: format!("h-{}", i % RULES as u64).parse().unwrap(),
            name: format!("s-{i}").parse().unwrap(),
            status: ServiceStatus {
                state: ServiceState::Failed,
                sub_state: "failed".into(),
                main_pid: None,
                since: None,
            },
        }),
    )
}

/// 1,000 rules, one per host; every tenth routes to `hook` for `ops`, the others to `quiet`
/// (a recipient who only wants critical alerts, so those decisions are suppressions).
fn catalog(url: &str) -> (Vec<ChannelSpec>, Vec<RecipientSpec>, Vec<RuleSpec>) {
    let channels = vec![ChannelSpec {
        channel: "hook".parse().unwrap(),
        kind: ChannelKind::Webhook {
            url: url.into(),
            hmac_secret: Some("bench-hmac".into()),
        },
        timeout_ms: 5_000,
        max_attempts: 3,
    }];
    let recipient = |id: &str, min| RecipientSpec {
        recipient: id.parse().unwrap(),
        display_name: id.into(),
        kind: RecipientKind::Operator,
        owns: vec![],
        email: None,
        min_severity: min,
        channels: vec![],
        quiet_hours: None,
    };
    let recipients = vec![
        recipient("ops", Severity::Info),
        recipient("quiet", Severity::Critical),
    ];
    let rules = (0..RULES)
        .map(|i| RuleSpec {
            rule: format!("r-{i}").parse().unwrap(),
            matches: AlertMatch {
                kinds: vec!["service_down".into()],
                hosts: vec![format!("h-{i}").parse().unwrap()],
                ..AlertMatch::default()
            },
            recipients: vec![if i % 10 == 0 { "ops" } else { "quiet" }.parse().unwrap()],
            channels: vec!["hook".parse().unwrap()],
            cooldown_s: 300,
            escalation: vec![],
            notify_resolved: true,
        })
        .collect();
    (channels, recipients, rules)
}

#[derive(Clone, Default)]
struct Rx {
    latencies_us: Arc<Mutex<Vec<u64>>>,
    count: Arc<AtomicU64>,
}

async fn receive(State(rx): State<Rx>, body: Bytes) -> &'static str {
    let now = Utc::now();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        let t = v["alert"]["opened_at"]
            .as_str()
            .or(v["sent_at"].as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        if let Some(t) = t {
            let us = (now - t.with_timezone(&Utc))
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            rx.latencies_us.lock().unwrap().push(us as u64);
        }
    }
    rx.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .clamp(1, 30);
    let total = TARGET_RATE * seconds;

    // --- 1. engine only ---------------------------------------------------------------------
    let (channels, recipients, rules) = catalog("http://127.0.0.1:9/unused");
    let mut c = Catalog::default();
    channels
        .iter()
        .for_each(|x| drop(c.channels.insert(x.channel.clone(), x.clone())));
    recipients
        .iter()
        .for_each(|x| drop(c.recipients.insert(x.recipient.clone(), x.clone())));
    rules
        .iter()
        .for_each(|x| drop(c.rules.insert(x.rule.clone(), x.clone())));
    let mut engine = Engine::new(c);
    let events: Vec<Envelope> = (0..100_000).map(alert_event).collect();
    let t = Instant::now();
    let mut decisions = 0usize;
    for e in &events {
        decisions += engine.apply(e).len();
    }
    let engine_rate = events.len() as f64 / t.elapsed().as_secs_f64();
    // Baseline for the engine: the same events through the alert folds with no rules.
    let mut bare = Engine::new(Catalog::default());
    let t = Instant::now();
    for e in &events {
        bare.apply(e);
    }
    let fold_rate = events.len() as f64 / t.elapsed().as_secs_f64();

    // --- receiver ----------------------------------------------------------------------------
    let rx = Rx::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // --- 3. baseline: plain reqwest POSTs at the webhook rate ---------------------------------
    let webhook_rate = TARGET_RATE / 10;
    let n_base = webhook_rate * seconds;
    let client = reqwest::Client::new();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n_base {
        let due = t + Duration::from_secs_f64(i as f64 / webhook_rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let body = serde_json::json!({ "id": format!("b-{i}"), "sent_at": Utc::now().to_rfc3339(), "pad": "x".repeat(400) });
            let _ = client.post(url).json(&body).send().await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut base_lat = std::mem::take(&mut *rx.latencies_us.lock().unwrap());
    rx.count.store(0, Ordering::Relaxed);

    // --- 2. end to end -----------------------------------------------------------------------
    let server = fleetbus_testkit::NatsServer::start();
    server.ensure_streams().await;
    let admin = server.client(Role::Admin).await;
    let js = jetstream::new(admin.clone());
    let dir = tempfile::tempdir()?;
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "bench-hmac = \"0123456789abcdef\"\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
    }
    let (channels, recipients, rules) = catalog(&url);
    let mut config = Config {
        nats: server.nats_config(Role::Notifier),
        secrets_file: Some(secrets),
        channels,
        recipients,
        rules,
        max_in_flight: 128,
        ..Config::default()
    };
    config.digest.threshold = 0;

    let decided = Arc::new(AtomicU64::new(0));
    let mut sub = admin.subscribe("fleet.evt.notification.>").await?;
    let d = decided.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            d.fetch_add(1, Ordering::Relaxed);
        }
    });
    admin.flush().await?;
    let stop = CancellationToken::new();
    let notifier = tokio::spawn(fleetbus_notifier::run(config, stop.clone()));
    // Let it finish its (empty) replay and start consuming.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Light load first (500 alert events/s for 2 s): the pipeline's latency without queueing.
    let light = 1_000u64;
    let tl = Instant::now();
    for i in 0..light {
        tokio::time::sleep_until((tl + Duration::from_millis(i * 2)).into()).await;
        let env = alert_event(500_000 + i);
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", env.id.to_string().as_str());
        let _ack = js
            .publish_with_headers(env.subject(), h, fleetbus_schemas::encode(&env)?.into())
            .await?;
    }
    wait_until(Duration::from_secs(20), || {
        decided.load(Ordering::Relaxed) >= light && rx.count.load(Ordering::Relaxed) >= light / 10
    })
    .await;
    let mut light_lat = std::mem::take(&mut *rx.latencies_us.lock().unwrap());
    decided.store(0, Ordering::Relaxed);
    rx.count.store(0, Ordering::Relaxed);

    let t0 = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / TARGET_RATE as f64);
        if i % 100 == 0 {
            tokio::time::sleep_until(due.into()).await;
        }
        let env = alert_event(1_000_000 + i);
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", env.id.to_string().as_str());
        acks.push(std::future::IntoFuture::into_future(
            js.publish_with_headers(env.subject(), h, fleetbus_schemas::encode(&env)?.into())
                .await?,
        ));
        while acks.len() > 512 {
            acks.next().await;
        }
    }
    while acks.next().await.is_some() {}
    let publish_s = t0.elapsed().as_secs_f64();
    let all = wait_until(Duration::from_secs(30 + seconds * 5), || {
        decided.load(Ordering::Relaxed) >= total && rx.count.load(Ordering::Relaxed) >= total / 10
    })
    .await;
    let e2e_s = t0.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), notifier).await;
    let mut lat = std::mem::take(&mut *rx.latencies_us.lock().unwrap());
    let got = decided.load(Ordering::Relaxed);

    println!();
    println!("fleetbus notifier benchmark ({RULES} rules, {seconds} s at a target of {TARGET_RATE} alert events/s)");
    println!();
    println!("| measurement                                  | result          |");
    println!("|----------------------------------------------|-----------------|");
    println!(
        "| engine only: alert events/s vs {RULES} rules    | {:>12.0}/s  |",
        engine_rate
    );
    println!(
        "|   decisions made                             | {:>12}    |",
        decisions
    );
    println!(
        "| end to end: alert events published           | {:>12}    |",
        total
    );
    println!(
        "|   publish rate achieved                      | {:>12.0}/s  |",
        total as f64 / publish_s
    );
    println!(
        "|   decisions recorded (sent + suppressed)     | {:>12}    |",
        got
    );
    println!(
        "|   throughput, publish start → last decision  | {:>12.0}/s  |",
        got as f64 / e2e_s
    );
    println!(
        "|   webhooks delivered (signed)                | {:>12}    |",
        lat.len()
    );
    println!(
        "|   webhook latency p50 (event → receiver)     | {:>11.2} ms  |",
        pct(&mut lat, 0.50)
    );
    println!(
        "|   webhook latency p99                        | {:>11.2} ms  |",
        pct(&mut lat, 0.99)
    );
    println!(
        "|   webhook latency max                        | {:>11.2} ms  |",
        pct(&mut lat, 1.0)
    );
    println!(
        "| baseline: same events, folds only (0 rules)  | {:>12.0}/s  |",
        fold_rate
    );
    println!("| light load: 500 alert events/s, 2 s          |                 |");
    println!(
        "|   webhook latency p50 (event → receiver)     | {:>11.2} ms  |",
        pct(&mut light_lat, 0.50)
    );
    println!(
        "|   webhook latency p99                        | {:>11.2} ms  |",
        pct(&mut light_lat, 0.99)
    );
    println!("| baseline: plain reqwest POST, same receiver  |                 |");
    println!(
        "|   requests at {webhook_rate}/s                          | {:>12}    |",
        base_lat.len()
    );
    println!(
        "|   latency p50 (send → receiver)              | {:>11.2} ms  |",
        pct(&mut base_lat, 0.50)
    );
    println!(
        "|   latency p99                                | {:>11.2} ms  |",
        pct(&mut base_lat, 0.99)
    );
    println!(
        "|   notifier p99 / baseline p99                | {:>12.1}x   |",
        pct(&mut lat, 0.99) / pct(&mut base_lat, 0.99)
    );
    println!();
    if !all {
        println!("NOTE: not every decision arrived within the time bound ({got} of {total}).");
    }
    Ok(())
}
