//! Hostile clients against web served on a real socket (issue 12, item 5): login throttling per
//! (account, client address) with growing backoff that survives a restart and believes
//! `X-Forwarded-For` only from trusted proxies; slow clients closed after the header timeout
//! while the connection limit holds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fleetbus_bus_config::Role;
use fleetbus_runtime::http::HttpLimits;
use fleetbus_schemas::UserRole;
use fleetbus_web::{AppState, Shared, WebConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One web "process": its state on a real listener.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(state: Shared) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            fleetbus_web::serve(listener, state, token)
                .await
                .expect("serve");
        });
        Served { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("serve task");
    }
}

/// A fresh web state (as after a restart) with `config`, on the stack's bus.
async fn restart(stack: &Stack, config: WebConfig) -> Shared {
    let client = stack.nats.client(Role::Web).await;
    AppState::new(config, client, stack.shutdown.clone()).expect("state")
}

/// One login through the form; returns the status and `Retry-After`.
async fn attempt(
    http: &reqwest::Client,
    addr: SocketAddr,
    user: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>) {
    let page = http
        .get(format!("http://{addr}/login"))
        .send()
        .await
        .expect("login form");
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-fleetbus-login="))
        .and_then(|c| c.split(';').next())
        .expect("login cookie")
        .to_owned();
    let mut req = http
        .post(format!("http://{addr}/login"))
        .header("cookie", format!("__Host-fleetbus-login={cookie}"))
        .form(&[
            ("_csrf", cookie.as_str()),
            ("user", user),
            ("password", password),
        ]);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    let res = req.send().await.expect("login post");
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (res.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_backoff_is_per_account_and_address_survives_a_restart_and_trusts_only_proxies() {
    let stack = Stack::start_with(|c| {
        c.login_free_failures = 2;
        c.login_backoff_base_ms = 1_000;
    })
    .await;
    stack.add_user("ann", UserRole::Admin).await;
    stack.add_user("bob", UserRole::Viewer).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let served = Served::start(stack.state.clone()).await;
    let addr = served.addr;
    let wrong = "wrong horse battery";

    // Two free failures, then waits of 1, 2, 4 s after each further failure.
    assert_eq!(attempt(&http, addr, "ann", wrong, None).await.0, 401);
    assert_eq!(attempt(&http, addr, "ann", wrong, None).await.0, 401);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (status, retry_after) = attempt(&http, addr, "ann", PASSWORD, None).await;
        assert_eq!(status, 429, "even the right password waits");
        let wait = retry_after.expect("Retry-After");
        waits.push(wait);
        tokio::time::sleep(Duration::from_secs(wait)).await;
        assert_eq!(attempt(&http, addr, "ann", wrong, None).await.0, 401);
    }
    assert_eq!(waits, [1, 2, 4], "the backoff doubles");

    // Another account from the same address logs in; the guessed one still waits.
    assert_eq!(attempt(&http, addr, "bob", PASSWORD, None).await.0, 303);
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    let (status, retry_after) = attempt(&http, addr, "ann", PASSWORD, Some("203.0.113.9")).await;
    assert_eq!(status, 429, "X-Forwarded-For is ignored");
    assert!(
        retry_after.is_some_and(|s| s > 4),
        "still ann's 8 s wait: {retry_after:?}"
    );
    served.stop().await;

    // Restart: the throttle is read back from its file.
    let config = stack.state.config.clone();
    assert!(config.login_throttle_path().exists());
    let served = Served::start(restart(&stack, config.clone()).await).await;
    let (status, retry_after) = attempt(&http, served.addr, "ann", PASSWORD, None).await;
    assert_eq!(status, 429, "a restart does not reset the throttle");
    assert!(
        retry_after.is_some_and(|s| (1..=8).contains(&s)),
        "{retry_after:?}"
    );
    served.stop().await;

    // Behind a trusted proxy (the test's own address), the forwarded client is the key.
    let mut behind_proxy = config;
    behind_proxy.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    let served = Served::start(restart(&stack, behind_proxy).await).await;
    let addr = served.addr;
    assert_eq!(
        attempt(&http, addr, "ann", PASSWORD, None).await.0,
        429,
        "the proxy's own address is still the throttled one"
    );
    assert_eq!(
        attempt(&http, addr, "ann", PASSWORD, Some("203.0.113.9"))
            .await
            .0,
        303,
        "another client behind the proxy is not locked out"
    );
    assert_eq!(
        attempt(
            &http,
            addr,
            "ann",
            PASSWORD,
            Some("198.51.100.1, 127.0.0.1")
        )
        .await
        .0,
        303,
        "trusted hops are skipped from the right"
    );
    served.stop().await;
}

async fn slow_client(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /login HTTP/1.1\r\nhost: x\r\nuser-agent: slo")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_closed_and_the_connection_limit_holds() {
    const HEADER_MS: u64 = 500;
    const LIMIT: usize = 50;
    let stack = Stack::start_with(|c| {
        c.http = HttpLimits {
            max_connections: LIMIT,
            header_read_timeout_ms: HEADER_MS,
            body_read_timeout_ms: HEADER_MS,
            request_timeout_ms: c.command_timeout_ms + 1_000,
        };
    })
    .await;
    let served = Served::start(stack.state.clone()).await;
    let addr = served.addr;
    let started = Instant::now();
    let slow: Vec<_> = (0..4 * LIMIT)
        .map(|_| tokio::spawn(slow_client(addr)))
        .collect();
    tokio::time::sleep(Duration::from_millis(HEADER_MS / 5)).await;
    let page = reqwest::Client::new()
        .get(format!("http://{addr}/login"))
        .timeout(Duration::from_millis(HEADER_MS * 40))
        .send()
        .await
        .expect("a normal client is served once slots free");
    assert!(page.status().is_success());
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
    // Served in rounds of LIMIT: the last slow client waited in the backlog for three rounds.
    assert!(
        elapsed >= Duration::from_millis(HEADER_MS * 3),
        "{} slow clients closed in {elapsed:?}: the limit of {LIMIT} did not hold",
        4 * LIMIT
    );
    eprintln!(
        "web: {} slow clients, limit {LIMIT}, header timeout {HEADER_MS} ms: all closed after {elapsed:?}",
        4 * LIMIT
    );
    served.stop().await;
}
