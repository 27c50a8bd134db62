//! Shared harness for the notifier's integration tests: a real nats-server, a real HTTP receiver
//! (axum) with scripted failures, the notification log as seen on the bus.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use fleetbus_bus_config::Role;
use fleetbus_notifier::Config;
use fleetbus_schemas::commands::notify::{
    AlertMatch, ChannelKind, ChannelSpec, NotifyCommand, RecipientKind, RecipientSpec, RuleSpec,
};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::service::ServiceStatus;
use fleetbus_schemas::events::{HostEvent, NotificationEvent, ServiceEvent, SystemEvent};
use fleetbus_schemas::{Actor, Command, CommandEnvelope, Envelope, Event, Severity, UserRole};
use fleetbus_testkit::NatsServer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub const HMAC_KEY: &str = "test-hmac-key-0123456789";

/// A NATS server with the fleetbus streams, an admin client, and the notification log.
pub struct Bus {
    pub server: NatsServer,
    pub admin: async_nats::Client,
    pub js: jetstream::Context,
    pub log: Arc<Mutex<Vec<Envelope>>>,
}

impl Bus {
    pub async fn start() -> Bus {
        let server = NatsServer::start();
        server.ensure_streams().await;
        let admin = server.client(Role::Admin).await;
        let js = jetstream::new(admin.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        for subject in ["fleet.evt.notification.>", "fleet.evt.system.>"] {
            let mut sub = admin.subscribe(subject).await.expect("subscribe");
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    if let Ok(env) = fleetbus_schemas::decode::<Envelope>(&msg.payload) {
                        log.lock().unwrap().push(env);
                    }
                }
            });
        }
        admin.flush().await.expect("flush");
        Bus {
            server,
            admin,
            js,
            log,
        }
    }

    pub async fn publish(&self, event: Event) -> Envelope {
        let env = Envelope::new("test", Actor::service("test"), None, event);
        self.publish_env(&env).await;
        env
    }

    pub async fn publish_env(&self, env: &Envelope) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.to_string().as_str());
        self.js
            .publish_with_headers(
                env.subject(),
                headers,
                fleetbus_schemas::encode(env).unwrap().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    pub async fn command(&self, actor: Actor, c: NotifyCommand) -> CommandEnvelope {
        let cmd = CommandEnvelope::new(actor, Command::Notify(c));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", cmd.id.to_string().as_str());
        self.js
            .publish_with_headers(
                cmd.subject(),
                headers,
                fleetbus_schemas::encode(&cmd).unwrap().into(),
            )
            .await
            .expect("publish command")
            .await
            .expect("command ack");
        cmd
    }

    pub fn notification_events(&self) -> Vec<NotificationEvent> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.event {
                Event::Notification(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn sent(&self) -> Vec<(String, u32, Option<String>)> {
        self.notification_events()
            .into_iter()
            .filter_map(|n| match n {
                NotificationEvent::Sent {
                    notification,
                    attempts,
                    digest,
                } => Some((notification.id, attempts, digest)),
                _ => None,
            })
            .collect()
    }

    pub fn rejections(&self) -> Vec<(Option<fleetbus_schemas::CommandId>, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.event {
                Event::System(SystemEvent::CommandRejected {
                    command, message, ..
                }) => Some((*command, message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Waits until `pred` holds over the notification events (10 s).
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&[NotificationEvent]) -> bool) {
        let ok = fleetbus_testkit::wait_for(
            || {
                let events = self.notification_events();
                let ok = pred(&events);
                async move { ok }
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(
            ok,
            "timed out waiting for {what}; log: {:#?}",
            self.notification_events()
        );
    }

    pub fn config(&self) -> Config {
        let mut c = Config {
            nats: self.server.nats_config(notifier_role()),
            tick_ms: 50,
            ..Config::default()
        };
        c.retry.base_ms = 40;
        c.retry.max_ms = 200;
        c.digest.threshold = 0;
        c
    }
}

/// The role the notifier connects as: its own `notifier` user, whose permissions (bus-config)
/// must allow replaying `EVENTS`, publishing notification/system events and `fleet.notify.*`,
/// and consuming `cmd-notify`.
pub fn notifier_role() -> Role {
    Role::Notifier
}

/// Starts the notifier in-process; cancel the token to stop it.
pub fn spawn_notifier(config: Config) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = fleetbus_notifier::run(config, t).await {
            panic!("notifier failed: {e}");
        }
    });
    (token, handle)
}

pub fn write_secrets(dir: &Path, pairs: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("secrets.toml");
    let text: String = pairs
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

// ---- specs -----------------------------------------------------------------------------------

pub fn webhook(
    id: &str,
    url: &str,
    secret: Option<&str>,
    attempts: u32,
    timeout_ms: u64,
) -> ChannelSpec {
    ChannelSpec {
        channel: id.parse().unwrap(),
        kind: ChannelKind::Webhook {
            url: url.into(),
            hmac_secret: secret.map(str::to_owned),
        },
        timeout_ms,
        max_attempts: attempts,
    }
}

pub fn operator(id: &str) -> RecipientSpec {
    RecipientSpec {
        recipient: id.parse().unwrap(),
        display_name: id.to_uppercase(),
        kind: RecipientKind::Operator,
        owns: vec![],
        email: Some(format!("{id}@example.com")),
        min_severity: Severity::Info,
        channels: vec![],
        quiet_hours: None,
    }
}

pub fn rule(id: &str, recipients: &[&str], channels: &[&str]) -> RuleSpec {
    RuleSpec {
        rule: id.parse().unwrap(),
        matches: AlertMatch::default(),
        recipients: recipients.iter().map(|s| s.parse().unwrap()).collect(),
        channels: channels.iter().map(|s| s.parse().unwrap()).collect(),
        cooldown_s: 0,
        escalation: vec![],
        notify_resolved: true,
    }
}

pub fn admin() -> Actor {
    Actor::user("ada", UserRole::Admin)
}

// ---- events ----------------------------------------------------------------------------------

pub fn host_registered(host: &str, tags: &[&str]) -> Event {
    Event::Host(HostEvent::Registered(HostSpec {
        host: host.parse().unwrap(),
        address: "127.0.0.2".into(),
        port: 22,
        user: "fleet".into(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        roles: vec![],
        host_key_policy: HostKeyPolicy::AcceptNew,
        allow_adhoc: false,
        disabled: false,
    }))
}

pub fn agent_report(host: &str) -> Event {
    use fleetbus_schemas::events::agent::{AgentReport, Resources};
    Event::Agent(fleetbus_schemas::events::AgentEvent::Reported(
        AgentReport {
            agent: host.parse().unwrap(),
            host: host.parse().unwrap(),
            agent_version: "test".into(),
            resources: Resources::default(),
            services: vec![],
            config_version: None,
            config_hash: None,
        },
    ))
}

pub fn service(host: &str, name: &str, state: ServiceState) -> Event {
    Event::Service(ServiceEvent::StatusObserved {
        host: host.parse().unwrap(),
        name: name.parse().unwrap(),
        status: ServiceStatus {
            state,
            sub_state: state.as_str().into(),
            main_pid: None,
            since: None,
        },
    })
}

// ---- HTTP receiver ---------------------------------------------------------------------------

/// What the receiver does with the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    Sleep(Duration),
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Clone, Default)]
struct RxState {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    delay: Arc<Mutex<Duration>>,
}

/// A real HTTP server on 127.0.0.1 recording every request; replies 200 unless scripted.
pub struct Receiver {
    pub addr: SocketAddr,
    state: RxState,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = RxState::default();
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Replies for the next requests (any path), in order.
    pub fn script(&self, replies: &[Reply]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(replies.iter().cloned());
    }

    /// Every request waits this long before answering (a slow receiver).
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn accepted(&self, path: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.status == 200 && h.path == path)
            .collect()
    }

    pub async fn wait_accepted(&self, path: &str, n: usize) -> Vec<Hit> {
        let ok = fleetbus_testkit::wait_for(
            || {
                let ok = self.accepted(path).len() >= n;
                async move { ok }
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(
            ok,
            "receiver /{path}: expected {n} accepted requests, got {:?}",
            self.hits()
        );
        self.accepted(path)
    }
}

async fn handle(
    State(s): State<RxState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = s.script.lock().unwrap().pop_front();
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, retry_after) = match reply {
        None => (200, None),
        Some(Reply::Status(c)) => (c, None),
        Some(Reply::RetryAfter(c, secs)) => (c, Some(secs)),
        Some(Reply::Sleep(d)) => {
            // Record the attempt as timed out: the notifier gives up before this returns.
            s.hits.lock().unwrap().push(Hit {
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
                status: 0,
            });
            tokio::time::sleep(d).await;
            return StatusCode::OK.into_response();
        }
    };
    s.hits.lock().unwrap().push(Hit {
        path,
        headers,
        body,
        status,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match retry_after {
        Some(secs) => (code, [("retry-after", secs.to_string())]).into_response(),
        None => code.into_response(),
    }
}

/// Verifies `sha256=<hex>` with an independent HMAC computation (constant-time compare).
pub fn signature_ok(key: &str, body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}
