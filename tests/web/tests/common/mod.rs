//! The test stack: a real nats-server with the fleetbus streams, the real ingest (log, queries,
//! registry and user commands) and the web service, plus a stand-in executor that answers
//! `fleet.cmd.job.*` on the bus the way the executor does (Scheduled → Started → output →
//! Succeeded, typed rejections), so handlers are exercised against a real bus end to end.
#![allow(dead_code, unreachable_pub)]

pub mod cdp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fleetbus_bus_config::{CommandArea, Role};
use fleetbus_schemas::commands::job::JobCommand;
use fleetbus_schemas::commands::{HostCommand, UserCommand};
use fleetbus_schemas::events::agent::{AgentReport, Resources, ServiceObservation, ServiceState};
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::{JobOutcome, JobRequest, OutputChunk, OutputStream, RunType};
use fleetbus_schemas::events::service::{
    ServiceAction, ServiceManager, ServiceSpec, ServiceStatus,
};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{AgentEvent, JobEvent, ServiceEvent, SystemEvent};
use fleetbus_schemas::{
    Actor, Command, CommandEnvelope, CommandId, Envelope, Event, HostId, JobId, UserRole,
};
use fleetbus_testkit::NatsServer;
use fleetbus_web::{AppState, Shared, WebConfig};
use futures::StreamExt;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Stack {
    pub nats: NatsServer,
    pub state: Shared,
    pub app: Router,
    pub shutdown: CancellationToken,
    pub admin: async_nats::Client,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
    pub executor: Arc<FakeExecutor>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id")
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut WebConfig)) -> Stack {
        Self::start_opts(true, tweak).await
    }

    /// A stack without the stand-in executor (the real one is started by the test).
    pub async fn start_without_executor() -> Stack {
        Self::start_opts(false, |_| {}).await
    }

    async fn start_opts(fake_executor: bool, tweak: impl FnOnce(&mut WebConfig)) -> Stack {
        let nats = NatsServer::start();
        nats.ensure_streams().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();

        let ingest = fleetbus_ingest::Config {
            state_dir: dir.path().join("state"),
            http_addr: format!("127.0.0.1:{}", fleetbus_testkit::free_port())
                .parse()
                .expect("addr"),
            nats: nats.nats_config(Role::Ingest),
            ..Default::default()
        };
        let ingest_stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = fleetbus_ingest::run(ingest, ingest_stop).await {
                eprintln!("ingest stopped: {e}");
            }
        });

        let mut config = WebConfig {
            nats: nats.nats_config(Role::Web),
            tokens_file: Some(dir.path().join("web/tokens.json")),
            command_timeout_ms: 5_000,
            ..Default::default()
        };
        tweak(&mut config);
        let client = nats.client(Role::Web).await;
        let state = AppState::new(config, client, shutdown.clone()).expect("state");
        state.start_background(&shutdown);
        let app = fleetbus_web::app(state.clone());

        let admin = nats.client(Role::Admin).await;
        let js = jetstream::new(admin.clone());
        let executor = FakeExecutor::spawn(js.clone(), shutdown.clone(), fake_executor).await;
        let stack = Stack {
            nats,
            state,
            app,
            shutdown,
            admin,
            js,
            dir,
            executor,
        };
        // Ingest answers queries once its log is open.
        let ok = fleetbus_testkit::wait_for(
            || async {
                stack
                    .admin
                    .request(
                        "fleet.q.log_head",
                        fleetbus_schemas::encode(&fleetbus_schemas::queries::LogHeadQuery {})
                            .expect("enc")
                            .into(),
                    )
                    .await
                    .is_ok()
            },
            Duration::from_secs(15),
        )
        .await;
        assert!(ok, "ingest did not answer queries");
        stack
    }

    /// Publishes an event on EVENTS (as the executor or an agent would) and waits until the
    /// web service has folded it. Returns its stream sequence.
    pub async fn publish(&self, actor: Actor, causation: Option<CommandId>, event: Event) -> u64 {
        let env = Envelope::new("test", actor, causation, event);
        let seq = publish_env(&self.js, &env).await;
        self.wait_seq(seq).await;
        seq
    }

    pub async fn wait_seq(&self, seq: u64) {
        let hub = self.state.hub.clone();
        let ok = fleetbus_testkit::wait_for(
            || {
                let hub = hub.clone();
                async move { hub.last_seq() >= seq }
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(
            ok,
            "web did not see event {seq} (at {})",
            self.state.hub.last_seq()
        );
    }

    /// Sends a command as the admin tool (fleetctl) would.
    pub async fn command(&self, command: Command) {
        let env = CommandEnvelope::new(Actor::user("root", UserRole::Admin), command);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.to_string().as_str());
        self.js
            .publish_with_headers(
                env.subject(),
                headers,
                fleetbus_schemas::encode(&env).expect("enc").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    pub async fn add_user(&self, name: &str, role: UserRole) {
        let hash = fleetbus_web::auth::hash_password(PASSWORD).expect("hash");
        self.command(Command::User(UserCommand::Add {
            user: id(name),
            role,
            password_hash: hash,
        }))
        .await;
        let admin = self.admin.clone();
        let q = fleetbus_schemas::queries::UserCredentialQuery { user: id(name) };
        let ok = fleetbus_testkit::wait_for(
            || {
                let admin = admin.clone();
                let payload = fleetbus_schemas::encode(&q).expect("enc");
                async move {
                    match admin
                        .request("fleet.q.user_credential", payload.into())
                        .await
                    {
                        Ok(m) => matches!(
                            fleetbus_schemas::decode::<
                                fleetbus_schemas::queries::Reply<fleetbus_projections::UserRecord>,
                            >(&m.payload),
                            Ok(fleetbus_schemas::queries::Reply::Ok(_))
                        ),
                        Err(_) => false,
                    }
                }
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(ok, "user {name} did not appear");
    }

    /// Registers a host and its services through ingest and waits until web knows them.
    pub async fn add_host(&self, host: &str, address: &str, services: &[(&str, &[ServiceAction])]) {
        self.command(Command::Host(HostCommand::Add(HostSpec {
            host: id(host),
            address: address.into(),
            port: 22,
            user: "fleet".into(),
            tags: vec!["web".into()],
            roles: vec!["frontend".into()],
            host_key_policy: HostKeyPolicy::AcceptNew,
            allow_adhoc: true,
            disabled: false,
        })))
        .await;
        for (name, actions) in services {
            self.command(Command::Host(HostCommand::AddService(ServiceSpec {
                host: id(host),
                name: id(name),
                manager: ServiceManager::Systemd,
                unit: format!("{name}.service"),
                actions: actions.to_vec(),
                log_path: None,
                expected_running: true,
            })))
            .await;
        }
        let hub = self.state.hub.clone();
        let h: HostId = id(host);
        let want = services.len();
        let ok = fleetbus_testkit::wait_for(
            || {
                let hub = hub.clone();
                let h = h.clone();
                async move { hub.read_fold(|f| f.proj.registry.services_of(&h).count() == want) }
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(ok, "host {host} was not registered");
    }

    /// An agent report with the given service states.
    pub async fn report(&self, host: &str, services: &[(&str, ServiceState, Option<&str>)]) -> u64 {
        let report = AgentReport {
            agent: id(host),
            host: id(host),
            agent_version: "test".into(),
            resources: Resources {
                cpu_pct: 12.5,
                mem_total_kb: 4_000_000,
                mem_used_kb: 1_000_000,
                disk_total_kb: 50_000_000,
                disk_used_kb: 20_000_000,
                load1: 0.5,
                load5: 0.4,
                load15: 0.3,
                uptime_s: 90_000,
            },
            services: services
                .iter()
                .map(|(n, s, d)| ServiceObservation {
                    name: id(n),
                    state: *s,
                    detail: d.map(String::from),
                })
                .collect(),
            config_version: None,
            config_hash: None,
        };
        self.publish(
            Actor::agent(host),
            None,
            Event::Agent(AgentEvent::Reported(report)),
        )
        .await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Logs in through the form; returns the session cookie and the CSRF token.
    pub async fn login(&self, user: &str) -> Session {
        let page = self
            .send(Request::get("/login").body(Body::empty()).expect("req"))
            .await;
        let login_cookie =
            set_cookie(&page.headers, "__Host-fleetbus-login").expect("login cookie");
        let csrf = between(&page.body, "name=\"_csrf\" value=\"", "\"").expect("csrf field");
        let res = self
            .send(
                Request::post("/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(
                        header::COOKIE,
                        format!("__Host-fleetbus-login={login_cookie}"),
                    )
                    .body(Body::from(format!(
                        "_csrf={csrf}&user={user}&password={}",
                        PASSWORD.replace(' ', "+")
                    )))
                    .expect("req"),
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "login as {user}: {}",
            res.body
        );
        let cookie = set_cookie(&res.headers, "__Host-fleetbus-session").expect("session cookie");
        let home = self
            .send(
                Request::get("/")
                    .header(header::COOKIE, format!("__Host-fleetbus-session={cookie}"))
                    .body(Body::empty())
                    .expect("req"),
            )
            .await;
        let csrf = between(&home.body, "name=\"csrf-token\" content=\"", "\"").expect("csrf meta");
        Session { cookie, csrf }
    }

    pub async fn get(&self, s: &Session, path: &str) -> Resp {
        self.send(
            Request::get(path)
                .header(header::COOKIE, s.cookie_header())
                .body(Body::empty())
                .expect("req"),
        )
        .await
    }

    pub async fn post_form(&self, s: &Session, path: &str, form: &str) -> Resp {
        let body = if form.is_empty() {
            format!("_csrf={}", s.csrf)
        } else {
            format!("_csrf={}&{form}", s.csrf)
        };
        self.send(
            Request::post(path)
                .header(header::COOKIE, s.cookie_header())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("x-requested-with", "fetch")
                .body(Body::from(body))
                .expect("req"),
        )
        .await
    }

    pub async fn api_post(&self, s: &Session, path: &str) -> Resp {
        self.send(
            Request::post(path)
                .header(header::COOKIE, s.cookie_header())
                .header("x-csrf-token", &s.csrf)
                .body(Body::empty())
                .expect("req"),
        )
        .await
    }
}

pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub fn cookie_header(&self) -> String {
        format!("__Host-fleetbus-session={}", self.cookie)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn set_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
}

pub fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_owned())
}

pub async fn publish_env(js: &jetstream::Context, env: &Envelope) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", env.id.to_string().as_str());
    js.publish_with_headers(
        env.subject(),
        headers,
        fleetbus_schemas::encode(env).expect("enc").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack")
    .sequence
}

/// Stands in for the executor on the bus: consumes `fleet.cmd.job.*` from its durable and
/// publishes the events the executor would, with the command id as causation.
pub struct FakeExecutor {
    js: jetstream::Context,
    /// Running jobs by `host:service:action` (for duplicate rejection) and by id.
    running: Mutex<HashMap<String, JobId>>,
    cancelled: Mutex<Vec<JobId>>,
    /// Delay between batch lines.
    pub line_delay: Mutex<Duration>,
}

fn exec() -> Actor {
    Actor::service("executor")
}

impl FakeExecutor {
    async fn spawn(
        js: jetstream::Context,
        shutdown: CancellationToken,
        active: bool,
    ) -> Arc<FakeExecutor> {
        let fake = Arc::new(FakeExecutor {
            js: js.clone(),
            running: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(Vec::new()),
            line_delay: Mutex::new(Duration::from_millis(20)),
        });
        if !active {
            return fake;
        }
        let consumer: jetstream::consumer::PullConsumer = js
            .get_stream("COMMANDS")
            .await
            .expect("COMMANDS")
            .get_consumer(&CommandArea::Job.consumer_name())
            .await
            .expect("job consumer");
        let me = fake.clone();
        tokio::spawn(async move {
            let mut messages = consumer.messages().await.expect("messages");
            loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    () = shutdown.cancelled() => return,
                };
                let Some(Ok(msg)) = next else { return };
                let _ = msg.ack().await;
                if let Ok(cmd) = fleetbus_schemas::decode::<CommandEnvelope>(&msg.payload) {
                    let me = me.clone();
                    tokio::spawn(async move { me.handle(cmd).await });
                }
            }
        });
        fake
    }

    async fn emit(&self, cause: CommandId, event: Event) -> u64 {
        publish_env(
            &self.js,
            &Envelope::new("executor", exec(), Some(cause), event),
        )
        .await
    }

    async fn reject(&self, cmd: &CommandEnvelope, reason: RejectKind, message: &str) {
        self.emit(
            cmd.id,
            Event::System(SystemEvent::CommandRejected {
                component: "executor".into(),
                command: Some(cmd.id),
                subject: cmd.subject(),
                reason,
                message: message.into(),
            }),
        )
        .await;
    }

    async fn chunk(&self, job: JobId, seq: u64, stream: OutputStream, data: &str) {
        let chunk = OutputChunk {
            job,
            seq,
            stream,
            data: data.into(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{job}.{seq}").as_str());
        self.js
            .publish_with_headers(
                fleetbus_schemas::subjects::job_output(job),
                headers,
                fleetbus_schemas::encode(&chunk).expect("enc").into(),
            )
            .await
            .expect("publish output")
            .await
            .expect("output ack");
    }

    fn finished(
        &self,
        job: JobId,
        exit: i32,
        bytes: u64,
        tail: &str,
        run_type: RunType,
    ) -> JobOutcome {
        let _ = job;
        JobOutcome {
            exit_code: Some(exit),
            duration_ms: 1234,
            run_type,
            output_bytes: bytes,
            tail: tail.into(),
        }
    }

    async fn handle(&self, cmd: CommandEnvelope) {
        let Command::Job(job_cmd) = cmd.command.clone() else {
            return;
        };
        let role = cmd.actor.role.unwrap_or(UserRole::Viewer);
        match job_cmd {
            JobCommand::RunAction {
                host,
                service,
                action,
                lines,
            } => {
                if role < UserRole::Operator
                    && !matches!(action, ServiceAction::Status | ServiceAction::Logs)
                {
                    return self
                        .reject(
                            &cmd,
                            RejectKind::Forbidden,
                            "role viewer may not change services",
                        )
                        .await;
                }
                let key = format!("{host}:{service}:{}", action.as_str());
                let job = JobId::new();
                let existing = {
                    let mut running = self.running.lock().expect("lock");
                    let existing = running.get(&key).copied();
                    if existing.is_none() {
                        running.insert(key.clone(), job);
                    }
                    existing
                };
                if let Some(existing) = existing {
                    return self
                        .reject(
                            &cmd,
                            RejectKind::Duplicate { job: existing },
                            &format!("{key} is already running as job {existing}"),
                        )
                        .await;
                }
                let summary = format!("{} {host}:{service}", action.as_str());
                self.emit(
                    cmd.id,
                    Event::Job(JobEvent::Scheduled {
                        job,
                        host: host.clone(),
                        run_type: RunType::Action,
                        summary,
                        queue_position: 0,
                        request: JobRequest::Action {
                            service: service.clone(),
                            action,
                            lines,
                        },
                        idempotent: false,
                    }),
                )
                .await;
                self.emit(
                    cmd.id,
                    Event::Job(JobEvent::Started {
                        job,
                        host: host.clone(),
                    }),
                )
                .await;
                // A service named `slow` keeps running until cancelled.
                if service.as_str() == "slow" {
                    return;
                }
                let text = match action {
                    ServiceAction::Logs => (1..=lines.unwrap_or(10).min(500))
                        .map(|i| format!("log line {i} <b>x</b>\n"))
                        .collect::<String>(),
                    _ => format!("{} done\n", action.as_str()),
                };
                self.chunk(job, 1, OutputStream::Stdout, &text).await;
                if matches!(action, ServiceAction::Restart | ServiceAction::Start) {
                    self.emit(
                        cmd.id,
                        Event::Service(ServiceEvent::StatusObserved {
                            host: host.clone(),
                            name: service.clone(),
                            status: ServiceStatus {
                                state: ServiceState::Running,
                                sub_state: "running".into(),
                                main_pid: Some(42),
                                since: None,
                            },
                        }),
                    )
                    .await;
                }
                self.running.lock().expect("lock").remove(&key);
                self.emit(
                    cmd.id,
                    Event::Job(JobEvent::Succeeded {
                        job,
                        outcome: self.finished(job, 0, text.len() as u64, &text, RunType::Action),
                    }),
                )
                .await;
            }
            JobCommand::RunBatch { script, targets } => {
                let lines: Vec<String> = script
                    .lines()
                    .map(String::from)
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                for host in targets.hosts {
                    let job = JobId::new();
                    self.emit(
                        cmd.id,
                        Event::Job(JobEvent::Scheduled {
                            job,
                            host: host.clone(),
                            run_type: RunType::Batch,
                            summary: format!("batch of {} lines on {host}", lines.len()),
                            queue_position: 0,
                            request: JobRequest::Batch {
                                script: script.clone(),
                            },
                            idempotent: false,
                        }),
                    )
                    .await;
                    self.emit(
                        cmd.id,
                        Event::Job(JobEvent::Started {
                            job,
                            host: host.clone(),
                        }),
                    )
                    .await;
                    let mut seq = 0;
                    let mut all = String::new();
                    let total = lines.len() as u32;
                    let mut was_cancelled = false;
                    for (i, line) in lines.iter().enumerate() {
                        if self.cancelled.lock().expect("lock").contains(&job) {
                            was_cancelled = true;
                            break;
                        }
                        self.emit(
                            cmd.id,
                            Event::Job(JobEvent::Progress {
                                job,
                                step: i as u32 + 1,
                                total,
                                message: line.clone(),
                            }),
                        )
                        .await;
                        seq += 1;
                        let out = format!("\u{1b}[32m$ {line}\u{1b}[0m\n");
                        all.push_str(&out);
                        self.chunk(job, seq, OutputStream::Stdout, &out).await;
                        if line.contains("fail") {
                            seq += 1;
                            let err = format!("error: {line} <script>alert(1)</script>\n");
                            all.push_str(&err);
                            self.chunk(job, seq, OutputStream::Stderr, &err).await;
                        }
                        let delay = *self.line_delay.lock().expect("lock");
                        tokio::time::sleep(delay).await;
                    }
                    let event = if was_cancelled {
                        JobEvent::Cancelled {
                            job,
                            outcome: JobOutcome {
                                exit_code: None,
                                ..self.finished(job, 0, all.len() as u64, &all, RunType::Batch)
                            },
                        }
                    } else {
                        JobEvent::Succeeded {
                            job,
                            outcome: self.finished(job, 0, all.len() as u64, &all, RunType::Batch),
                        }
                    };
                    self.emit(cmd.id, Event::Job(event)).await;
                }
            }
            JobCommand::Cancel { job } => {
                self.cancelled.lock().expect("lock").push(job);
                let slow = {
                    let mut running = self.running.lock().expect("lock");
                    let key = running
                        .iter()
                        .find(|(_, j)| **j == job)
                        .map(|(k, _)| k.clone());
                    key.and_then(|k| running.remove(&k))
                };
                if slow.is_some() {
                    self.emit(
                        cmd.id,
                        Event::Job(JobEvent::Cancelled {
                            job,
                            outcome: JobOutcome {
                                exit_code: None,
                                duration_ms: 10,
                                run_type: RunType::Action,
                                output_bytes: 0,
                                tail: String::new(),
                            },
                        }),
                    )
                    .await;
                }
            }
            JobCommand::SaveTask(spec) => {
                self.emit(cmd.id, Event::Job(JobEvent::TaskSaved(spec)))
                    .await;
            }
            JobCommand::DeleteTask { task } => {
                self.emit(cmd.id, Event::Job(JobEvent::TaskDeleted { task }))
                    .await;
            }
            _ => {
                self.reject(
                    &cmd,
                    RejectKind::Invalid,
                    "not supported by the test executor",
                )
                .await
            }
        }
    }
}
