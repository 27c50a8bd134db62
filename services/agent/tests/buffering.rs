//! The agent against a real HTTP receiver (axum on loopback) that can be switched between
//! answering 503, answering 400, accepting, and not listening at all: reports taken while
//! ingest is away are buffered and arrive later, in order, each exactly once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use fleetbus_agent::wire::{NoticeBatch, NoticePush, ReportBatch, ReportPush};
use fleetbus_agent::{Agent, AgentConfig};
use fleetbus_schemas::EventId;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    Fail503,
    Reject400,
}

#[derive(Default)]
struct Seen {
    ids: Vec<EventId>,
    batches: usize,
    notices: Vec<NoticePush>,
    auth_ok: bool,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

fn check_auth(headers: &HeaderMap, r: &Receiver) {
    let ok =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer test-key-123");
    if let Ok(mut s) = r.seen.lock() {
        s.auth_ok = ok;
    }
}

fn answer(r: &Receiver) -> Result<StatusCode, (StatusCode, String)> {
    match r.mode.lock().map(|m| *m) {
        Ok(Mode::Accept) => Ok(StatusCode::ACCEPTED),
        Ok(Mode::Fail503) => Err((StatusCode::SERVICE_UNAVAILABLE, "log not ready".into())),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "$.report.host: unknown host".into(),
        )),
    }
}

async fn one(
    State(r): State<Receiver>,
    UrlPath(agent): UrlPath<String>,
    headers: HeaderMap,
    Json(push): Json<ReportPush>,
) -> Result<StatusCode, (StatusCode, String)> {
    check_auth(&headers, &r);
    assert_eq!(agent, push.report.agent.as_str());
    let status = answer(&r)?;
    if let Ok(mut s) = r.seen.lock() {
        s.ids.push(push.id);
    }
    Ok(status)
}

async fn batch(
    State(r): State<Receiver>,
    headers: HeaderMap,
    Json(b): Json<ReportBatch>,
) -> Result<StatusCode, (StatusCode, String)> {
    check_auth(&headers, &r);
    let status = answer(&r)?;
    if let Ok(mut s) = r.seen.lock() {
        s.ids.extend(b.reports.iter().map(|p| p.id));
        s.batches += 1;
    }
    Ok(status)
}

async fn notice(
    State(r): State<Receiver>,
    Json(n): Json<NoticeBatch>,
) -> Result<StatusCode, (StatusCode, String)> {
    let status = answer(&r)?;
    if let Ok(mut s) = r.seen.lock() {
        s.notices.extend(n.events);
    }
    Ok(status)
}

struct Running {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

async fn start_receiver(port: u16, receiver: Receiver) -> Running {
    let app = Router::new()
        .route("/v1/agents/{agent}/report", post(one))
        .route("/v1/agents/{agent}/reports", post(batch))
        .route("/v1/agents/{agent}/events", post(notice))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind receiver");
    let url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running { url, task }
}

fn config(dir: &Path, url: &str, batch_max: usize, buffer_max: u64) -> AgentConfig {
    let key = dir.join("agent.key");
    std::fs::write(&key, "test-key-123\n").expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = format!(
        "version = 1\ningest_url = \"{url}\"\nagent = \"web-1\"\nhost = \"web-1\"\n\
         key_file = \"{}\"\nbuffer_dir = \"{}\"\nbatch_max = {batch_max}\nbuffer_max_bytes = {buffer_max}\n\
         request_timeout_secs = 2\n",
        key.display(),
        dir.join("buffer").display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    AgentConfig::load(Some(&path)).expect("load config")
}

fn set_mode(r: &Receiver, m: Mode) {
    if let Ok(mut g) = r.mode.lock() {
        *g = m;
    }
}

fn seen_ids(r: &Receiver) -> Vec<EventId> {
    r.seen.lock().map(|s| s.ids.clone()).unwrap_or_default()
}

#[tokio::test]
async fn outage_then_recovery_delivers_every_report_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver {
        mode: Arc::new(Mutex::new(Mode::Accept)),
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let running = start_receiver(0, receiver.clone()).await;
    let port: u16 = running
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut agent = Agent::new(config(dir.path(), &running.url, 3, 1 << 20))
        .await
        .expect("agent");
    let mut taken = Vec::new();

    // 1. Healthy: delivered directly.
    let r = agent.collect().await.expect("collect");
    taken.push(r.id);
    let o = agent.submit(r).await.expect("submit");
    assert_eq!((o.delivered, o.buffered), (1, 0));
    assert!(receiver.seen.lock().map(|s| s.auth_ok).unwrap_or(false));

    // 2. Ingest answers 503: buffered.
    set_mode(&receiver, Mode::Fail503);
    for _ in 0..3 {
        let r = agent.collect().await.expect("collect");
        taken.push(r.id);
        let o = agent.submit(r).await.expect("submit");
        assert_eq!(o.delivered, 0);
    }
    assert_eq!(agent.buffer().len(), 3);

    // 3. Ingest gone (connection refused): still buffered.
    running.task.abort();
    let _ = running.task.await;
    for _ in 0..4 {
        let r = agent.collect().await.expect("collect");
        taken.push(r.id);
        let o = agent.submit(r).await.expect("submit");
        assert!(o.last_error.is_some());
    }
    assert_eq!(agent.buffer().len(), 7);
    assert_eq!(seen_ids(&receiver), taken[..1].to_vec());

    // 4. Back on the same port and accepting: the next round drains the buffer in batches
    //    of three, oldest first, then the new report.
    set_mode(&receiver, Mode::Accept);
    let _running = start_receiver(port, receiver.clone()).await;
    let r = agent.collect().await.expect("collect");
    taken.push(r.id);
    let o = agent.submit(r).await.expect("submit");
    assert_eq!((o.delivered, o.buffered, o.rejected), (8, 0, 0));
    assert_eq!(seen_ids(&receiver), taken, "every report once, in order");
    assert_eq!(receiver.seen.lock().map(|s| s.batches).unwrap_or(0), 3);
    assert!(agent.buffer().is_empty());
    let left = std::fs::read_dir(dir.path().join("buffer"))
        .map(|d| d.count())
        .unwrap_or(99);
    assert_eq!(left, 0, "delivered reports leave no files behind");
}

#[tokio::test]
async fn buffer_survives_a_restart_of_the_agent_and_keeps_original_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver {
        mode: Arc::new(Mutex::new(Mode::Fail503)),
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let running = start_receiver(0, receiver.clone()).await;
    let cfg = config(dir.path(), &running.url, 100, 1 << 20);
    let mut taken = Vec::new();
    {
        let mut agent = Agent::new(cfg.clone()).await.expect("agent");
        for _ in 0..2 {
            let r = agent.collect().await.expect("collect");
            taken.push(r.id);
            agent.submit(r).await.expect("submit");
        }
    }
    set_mode(&receiver, Mode::Accept);
    let mut agent = Agent::new(cfg).await.expect("agent again");
    assert_eq!(agent.buffer().len(), 2);
    let o = agent.flush().await.expect("flush");
    assert_eq!(o.delivered, 2);
    assert_eq!(seen_ids(&receiver), taken);
}

#[tokio::test]
async fn bounded_buffer_drops_the_oldest_and_4xx_is_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver {
        mode: Arc::new(Mutex::new(Mode::Fail503)),
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let running = start_receiver(0, receiver.clone()).await;
    // About two reports fit in 4 KiB... measure one first.
    let mut agent = Agent::new(config(dir.path(), &running.url, 100, 1 << 20))
        .await
        .expect("agent");
    let probe = agent.collect().await.expect("collect");
    let one = serde_json::to_vec(&probe)
        .map(|v| v.len() as u64)
        .unwrap_or(0);
    drop(agent);
    let bound = (one * 2 + one / 2).max(4096);
    let fits = (bound / one) as usize;
    let sub = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::new(config(sub.path(), &running.url, 100, bound))
        .await
        .expect("agent");
    let mut taken = Vec::new();
    for _ in 0..fits + 3 {
        let r = agent.collect().await.expect("collect");
        taken.push(r.id);
        agent.submit(r).await.expect("submit");
    }
    assert_eq!(agent.buffer().len(), fits);
    assert_eq!(agent.buffer().dropped(), 3);
    set_mode(&receiver, Mode::Accept);
    agent.flush().await.expect("flush");
    assert_eq!(
        seen_ids(&receiver),
        taken[3..].to_vec(),
        "the newest survive"
    );

    // 4xx: logged, dropped, never retried.
    set_mode(&receiver, Mode::Reject400);
    let r = agent.collect().await.expect("collect");
    let o = agent.submit(r).await.expect("submit");
    assert_eq!((o.rejected, o.buffered), (1, 0));
    assert_eq!(o.rejection.map(|(s, _)| s), Some(400));
    set_mode(&receiver, Mode::Accept);
    let o = agent.flush().await.expect("flush");
    assert_eq!(o.delivered, 0, "the rejected report is not sent again");
}

#[tokio::test]
async fn binary_once_and_event_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver {
        mode: Arc::new(Mutex::new(Mode::Accept)),
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let running = start_receiver(0, receiver.clone()).await;
    let _ = config(dir.path(), &running.url, 100, 1 << 20);
    let bin = env!("CARGO_BIN_EXE_fleetbus-agent");
    let cfg = dir.path().join("agent.toml");
    let run = |args: Vec<&'static str>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .arg("--config")
                .arg(cfg)
                .args(args)
                .output()
                .expect("run agent binary")
        })
    };

    let out = run(vec!["once"]).await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen_ids(&receiver).len(), 1);

    let out = run(vec![
        "event",
        "--kind",
        "backup_failed",
        "--severity",
        "error",
        "--message",
        "nightly backup failed",
        "--field",
        "target=s3",
    ])
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notice = receiver
        .seen
        .lock()
        .ok()
        .and_then(|s| s.notices.first().cloned())
        .expect("notice");
    assert_eq!(notice.notice.message, "nightly backup failed");
    assert_eq!(
        notice.notice.fields.get("target").map(String::as_str),
        Some("s3")
    );

    // Usage errors exit 2 with a message naming the problem.
    let out = run(vec!["event", "--kind", "bogus", "--message", "x"])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));

    // Ingest down: `once` exits 1, says the report is buffered, and the next `once` sends both.
    set_mode(&receiver, Mode::Fail503);
    let out = run(vec!["once"]).await.expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("buffered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(&receiver, Mode::Accept);
    let out = run(vec!["once"]).await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen_ids(&receiver).len(), 3);

    // 4xx on an event: exit 1 with ingest's reason.
    set_mode(&receiver, Mode::Reject400);
    let out = run(vec!["event", "--kind", "custom", "--message", "x"])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown host"));

    // A bad config file exits 2 naming the key.
    std::fs::write(&cfg, "version = 1\nagent = \"x\"\n").expect("write");
    let out = run(vec!["once"]).await.expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
