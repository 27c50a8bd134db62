//! Real `nats-server` processes for tests.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetbus_bus_config::conf::{self, NodePorts, ServerConf};
use fleetbus_bus_config::{Credentials, Report, Retention, Role};
use fleetbus_runtime::nats::NatsConfig;
use tokio_util::sync::CancellationToken;

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::free_port;

/// How long a server may take to accept connections before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nats-server` binary: `FLEETBUS_NATS_SERVER`, then `PATH`, then `/usr/sbin`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEETBUS_NATS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

fn spawn(conf_path: &Path, log_path: &Path) -> Child {
    let log = fs::File::create(log_path).expect("create nats-server log file");
    let log2 = log.try_clone().expect("clone log file handle");
    Command::new(nats_server_bin())
        .arg("-c")
        .arg(conf_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", nats_server_bin().display()))
}

fn wait_accepting(port: u16, child: &mut Child, log_path: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "nats-server exited with {status} before accepting on port {port}:\n{}",
                fs::read_to_string(log_path).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "nats-server did not accept on port {port} within {START_TIMEOUT:?}:\n{}",
                fs::read_to_string(log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Errors the server sent to one client (`-ERR` lines such as
/// `permissions violation for publish to "fleet.cmd.x"`), collected for assertions.
#[derive(Clone, Default)]
pub struct ServerErrors {
    seen: Arc<Mutex<Vec<String>>>,
    notify: Arc<Notify>,
}

impl ServerErrors {
    fn push(&self, e: String) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(e);
        }
        self.notify.notify_waiters();
    }

    /// Every error so far.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `true` if an error containing `needle` was seen.
    pub fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|e| e.contains(needle))
    }

    /// `true` if the server reported a permissions violation naming `subject` (publish or
    /// subscribe).
    pub fn has_violation(&self, subject: &str) -> bool {
        let quoted = format!("\"{subject}\"");
        self.all()
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(&quoted))
    }

    /// Wait until [`ServerErrors::has_violation`] holds (returns at once if it does already).
    pub async fn wait_violation(&self, subject: &str) {
        loop {
            let notified = self.notify.notified();
            if self.has_violation(subject) {
                return;
            }
            notified.await;
        }
    }
}

/// Connect like `fleetbus_runtime::nats::connect` (NKey, per-role inbox prefix), but also
/// collect the server's `-ERR` messages so tests can see permission violations.
pub async fn connect_with_errors(config: &NatsConfig) -> (async_nats::Client, ServerErrors) {
    let role = config.role().unwrap_or_else(|e| panic!("{e}"));
    let seed = fleetbus_bus_config::conf::load_seed(&config.seed_file())
        .and_then(|k| {
            k.seed()
                .map_err(|e| fleetbus_bus_config::BusConfigError::Seed {
                    path: config.seed_file(),
                    reason: e.to_string(),
                })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let errors = ServerErrors::default();
    let sink = errors.clone();
    let client = async_nats::ConnectOptions::with_nkey(seed)
        .name(format!("fleetbus-test-{}", role.name()))
        .custom_inbox_prefix(role.inbox_prefix())
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.push(e.to_string());
                }
            }
        })
        .connect(config.server_addrs().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("test client connect as {role} failed: {e}"));
    (client, errors)
}

async fn connect(config: &NatsConfig) -> async_nats::Client {
    fleetbus_runtime::nats::connect(config, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("test client connect failed: {e}"))
}

/// One `nats-server` with JetStream and the fleetbus users, in a temp dir, killed on drop.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    http_port: u16,
    creds: Credentials,
    conf_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Start a server on a free port; returns once it accepts connections.
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("fleetbus-nats-")
            .tempdir()
            .expect("create temp dir");
        let creds = Credentials::ensure(&dir.path().join("nats")).expect("generate nkey seeds");
        let port = free_port();
        let http_port = free_port();
        let conf_text = ServerConf::single(dir.path(), port, Some(http_port)).render(&creds);
        let conf_path = dir.path().join("nats-server.conf");
        fs::write(&conf_path, conf_text).expect("write nats-server.conf");
        let log_path = dir.path().join("nats-server.log");
        let mut server = NatsServer {
            dir,
            port,
            http_port,
            creds,
            conf_path,
            log_path,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = spawn(&self.conf_path, &self.log_path);
        wait_accepting(self.port, &mut child, &self.log_path);
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The temp dir (the server's state dir: `nats/js`, the seeds in `nats/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the seeds are (`<dir>/nats/<role>.nk`).
    pub fn creds_dir(&self) -> &Path {
        self.creds.dir()
    }

    /// The credentials (public keys, seed paths).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A service config that connects to this server as `role`.
    pub fn nats_config(&self, role: Role) -> NatsConfig {
        NatsConfig {
            url: self.url(),
            user: role.name().to_owned(),
            nkey_seed_file: Some(self.creds.seed_path(role)),
        }
    }

    /// A client connected as `role` (through `fleetbus_runtime::nats::connect`).
    pub async fn client(&self, role: Role) -> async_nats::Client {
        connect(&self.nats_config(role)).await
    }

    /// A client connected as `role` that also records the server's `-ERR` messages.
    pub async fn client_with_errors(&self, role: Role) -> (async_nats::Client, ServerErrors) {
        connect_with_errors(&self.nats_config(role)).await
    }

    /// Apply bus-config's definitions (default retention, R1) as `admin`: the fleet's
    /// streams and consumers and the `TAP` account's `EVENTS` mirror.
    pub async fn ensure_streams(&self) -> Report {
        let admin = self.client(Role::Admin).await;
        fleetbus_bus_config::ensure_bus(&admin, &Retention::default(), 1)
            .await
            .unwrap_or_else(|e| panic!("ensure streams: {e}\n{}", self.log()))
    }

    /// Wait (max 10 s) until the `TAP` account's mirror of `EVENTS` has caught up with the
    /// fleet's `EVENTS` (same last sequence). Tap replays see events only after that.
    pub async fn wait_tap_mirror(&self) -> bool {
        let client = self.client(Role::Admin).await;
        let admin = async_nats::jetstream::new(client.clone());
        let tap_admin = fleetbus_bus_config::streams::tap_context(&client);
        crate::wait_for(
            || {
                let (admin, tap_admin) = (admin.clone(), tap_admin.clone());
                async move {
                    let last = |js: async_nats::jetstream::Context| async move {
                        let mut s = js.get_stream("EVENTS").await.ok()?;
                        s.info().await.ok().map(|i| i.state.last_sequence)
                    };
                    match (last(admin).await, last(tap_admin).await) {
                        (Some(a), Some(t)) => a == t,
                        _ => false,
                    }
                }
            },
            Duration::from_secs(10),
        )
        .await
    }

    /// Kill the server (SIGKILL, like a crash) and start it again on the same port and dir.
    pub fn restart(&mut self) {
        stop_child(&mut self.child);
        self.spawn();
    }

    /// Kill the server; [`NatsServer::restart`] brings it back.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// `true` while the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// An N-node cluster on loopback with JetStream on every node, killed on drop.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    creds: Credentials,
    nodes: Vec<NodePorts>,
    children: Vec<Option<Child>>,
}

impl NatsCluster {
    /// Start `n` nodes and wait until each accepts client connections. The JetStream meta
    /// leader may take a moment longer: use [`NatsCluster::wait_jetstream`].
    pub fn start(n: usize) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("fleetbus-nats-cluster-")
            .tempdir()
            .expect("create temp dir");
        let creds = Credentials::ensure(&dir.path().join("nats")).expect("generate nkey seeds");
        let nodes: Vec<NodePorts> = (0..n)
            .map(|_| NodePorts {
                client: free_port(),
                route: free_port(),
                http: Some(free_port()),
            })
            .collect();
        let confs = conf::cluster(dir.path(), "fleetbus-test", &nodes);
        let mut children = Vec::new();
        let mut pending = Vec::new();
        for (i, c) in confs.iter().enumerate() {
            let conf_path = dir.path().join(format!("nats-server-{i}.conf"));
            fs::write(&conf_path, c.render(&creds)).expect("write node conf");
            let log_path = dir.path().join(format!("nats-server-{i}.log"));
            pending.push((spawn(&conf_path, &log_path), log_path, c.port));
        }
        for (mut child, log_path, port) in pending {
            wait_accepting(port, &mut child, &log_path);
            children.push(Some(child));
        }
        NatsCluster {
            dir,
            creds,
            nodes,
            children,
        }
    }

    /// Comma-separated client URLs of all nodes.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URL of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client)
    }

    /// The ports of every node.
    pub fn nodes(&self) -> &[NodePorts] {
        &self.nodes
    }

    /// A service config for `role` that knows every node.
    pub fn nats_config(&self, role: Role) -> NatsConfig {
        NatsConfig {
            url: self.url(),
            user: role.name().to_owned(),
            nkey_seed_file: Some(self.creds.seed_path(role)),
        }
    }

    /// A client connected as `role`.
    pub async fn client(&self, role: Role) -> async_nats::Client {
        connect(&self.nats_config(role)).await
    }

    /// Wait (max 30 s) until JetStream can place a stream on every node: account info answers
    /// without an error (a meta leader was elected), then a probe stream with one replica per
    /// node is created and deleted (the leader knows all its peers as current; before that,
    /// creating one fails with "no suitable peers for placement"). Raw requests: async-nats
    /// 0.42 cannot parse a clustered 2.9 server's account info.
    pub async fn wait_jetstream(&self) -> bool {
        let client = self.client(Role::Admin).await;
        let probe = format!(
            r#"{{"name":"FLEETBUS_PROBE","subjects":["fleetbus.probe"],"storage":"memory","num_replicas":{}}}"#,
            self.nodes.len()
        );
        crate::wait_for(
            || {
                let (client, probe) = (client.clone(), probe.clone());
                async move {
                    // Before the meta leader exists a request may go unanswered: ask again
                    // soon instead of waiting out the client's 10 s request timeout.
                    let ask = |subject: &'static str, body: String| {
                        let client = client.clone();
                        async move {
                            let reply = client.request(subject, body.into());
                            match tokio::time::timeout(Duration::from_secs(2), reply).await {
                                Ok(Ok(r)) => Some(String::from_utf8_lossy(&r.payload).into_owned()),
                                _ => None,
                            }
                        }
                    };
                    let ok = |text: &Option<String>| {
                        text.as_ref().is_some_and(|t| !t.contains("\"error\""))
                    };
                    ok(&ask("$JS.API.INFO", String::new()).await)
                        && ok(&ask("$JS.API.STREAM.CREATE.FLEETBUS_PROBE", probe).await)
                        && ok(&ask("$JS.API.STREAM.DELETE.FLEETBUS_PROBE", String::new()).await)
                }
            },
            Duration::from_secs(30),
        )
        .await
    }

    /// Combined logs of all nodes.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let p = self.dir.path().join(format!("nats-server-{i}.log"));
                format!(
                    "--- node {i}\n{}",
                    fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Kill node `i`.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(c) = self.children.get_mut(i) {
            stop_child(c);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop_child(c);
        }
    }
}
