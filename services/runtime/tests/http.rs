//! `fleetbus_runtime::http::serve` against real sockets: slow clients are closed after the
//! configured timeouts, the connection limit holds, and a normal client is served once a slot
//! frees. Timeouts are short here; assertions count events and order them, and the only time
//! bounds are multiples of the configured timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use fleetbus_runtime::http::{serve_with_stats, HttpLimits, ServeStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const HEADER_MS: u64 = 300;
const BODY_MS: u64 = 300;

struct Server {
    addr: SocketAddr,
    stats: Arc<ServeStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(max_connections: usize) -> Server {
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = HttpLimits {
        max_connections,
        header_read_timeout_ms: HEADER_MS,
        body_read_timeout_ms: BODY_MS,
        request_timeout_ms: 5_000,
    };
    let stats = Arc::new(ServeStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_with_stats(
        listener,
        app,
        limits,
        stop.clone(),
        stats.clone(),
    ));
    Server {
        addr,
        stats,
        stop,
        task,
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_peer(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    read_to_close(&mut s).await
}

#[tokio::test]
async fn slow_headers_are_closed_after_the_header_timeout() {
    let server = start(1000).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("write");
        slow.push(s);
    }
    let closed = tokio::time::timeout(Duration::from_millis(HEADER_MS * 20), async {
        let mut closed = 0;
        for s in &mut slow {
            read_to_close(s).await;
            closed += 1;
        }
        closed
    })
    .await
    .expect("every slow connection is closed within 20 header timeouts");
    assert_eq!(closed, 200);
    assert_eq!(server.stats.accepted(), 200);
    // The guard of each connection task runs just after the socket closes.
    tokio::time::timeout(Duration::from_millis(HEADER_MS * 10), async {
        while server.stats.open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no connection left open");
    server.stop.cancel();
    server.task.await.expect("serve ends");
}

#[tokio::test]
async fn the_connection_limit_holds_and_a_normal_client_is_served_when_a_slot_frees() {
    let limit = 20;
    let server = start(limit).await;
    // Twice the limit of slow clients: the second half waits in the listen backlog.
    let mut slow = Vec::new();
    for _ in 0..2 * limit {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    let normal = tokio::spawn(get_peer(server.addr));
    let mut closed = 0;
    for s in &mut slow {
        read_to_close(s).await;
        closed += 1;
    }
    let answer = tokio::time::timeout(Duration::from_millis(HEADER_MS * 20), normal)
        .await
        .expect("the normal client is served")
        .expect("task");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("127.0.0.1:"),
        "ConnectInfo reaches handlers: {answer}"
    );
    assert_eq!(closed, 2 * limit);
    assert!(
        server.stats.peak() <= limit,
        "peak {} over the limit {limit}",
        server.stats.peak()
    );
    assert_eq!(server.stats.accepted(), 2 * limit + 1);
    server.stop.cancel();
    server.task.await.expect("serve ends");
}

#[tokio::test]
async fn idle_keep_alive_connections_and_stalled_bodies_are_closed() {
    let server = start(100).await;
    // Keep-alive: one request answered, then silence.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    // A body announced as 100 bytes, of which 5 arrive.
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nhello")
        .await
        .expect("write");
    let (idle_seen, stalled_seen) =
        tokio::time::timeout(Duration::from_millis((HEADER_MS + BODY_MS) * 20), async {
            (
                read_to_close(&mut idle).await,
                read_to_close(&mut stalled).await,
            )
        })
        .await
        .expect("both connections are closed by the server");
    assert!(idle_seen.starts_with("HTTP/1.1 200"), "{idle_seen}");
    assert_eq!(
        idle_seen.matches("HTTP/1.1").count(),
        1,
        "one answer, then closed: {idle_seen}"
    );
    assert!(
        !stalled_seen.contains("200 OK"),
        "a stalled body is not echoed: {stalled_seen}"
    );
    server.stop.cancel();
    server.task.await.expect("serve ends");
}

#[tokio::test]
async fn shutdown_lets_the_current_request_finish_then_returns() {
    let server = start(10).await;
    let answer = get_peer(server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // An idle keep-alive connection does not hold shutdown up.
    let _idle = TcpStream::connect(server.addr).await.expect("connect");
    server.stop.cancel();
    tokio::time::timeout(Duration::from_millis(HEADER_MS * 10), server.task)
        .await
        .expect("serve returns after cancel")
        .expect("task");
}
