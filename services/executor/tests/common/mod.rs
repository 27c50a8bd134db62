//! Shared rig for the executor's bus tests: a real nats-server with fleetbus' streams, real sshd
//! targets with runit services and scoped sudoers, and the executor (in-process or as a binary).

#![allow(dead_code, unreachable_pub)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use fleetbus_bus_config::Role;
use fleetbus_executor::config::Limits;
use fleetbus_executor::Config;
use fleetbus_schemas::commands::JobCommand;
use fleetbus_schemas::events::host::{HostEvent, HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::job::{JobEvent, OutputChunk};
use fleetbus_schemas::events::service::{ServiceAction, ServiceEvent, ServiceManager, ServiceSpec};
use fleetbus_schemas::{
    Actor, Command, CommandEnvelope, Envelope, Event, HostId, JobId, ServiceName, UserRole,
};
use fleetbus_testkit::sshd::{RunitHost, Sshd, SshdOptions, SudoersFile};
use fleetbus_testkit::NatsServer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A target as a test describes it. The executor knows hosts only from the log, so the rig
/// registers these as `host.registered` / `service.registered` events before it starts one.
#[derive(Debug, Clone)]
pub struct StaticHost {
    pub id: HostId,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub host_key_policy: HostKeyPolicy,
    pub tags: Vec<String>,
    pub roles: Vec<String>,
    pub allow_adhoc: bool,
    pub services: Vec<StaticService>,
}

/// A service of a [`StaticHost`].
#[derive(Debug, Clone)]
pub struct StaticService {
    pub name: ServiceName,
    pub manager: ServiceManager,
    pub unit: String,
    pub actions: Vec<ServiceAction>,
    pub log_path: Option<String>,
}

impl StaticHost {
    /// As registry specs.
    pub fn specs(&self) -> (HostSpec, Vec<ServiceSpec>) {
        let host = HostSpec {
            host: self.id.clone(),
            address: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            tags: self.tags.clone(),
            roles: self.roles.clone(),
            host_key_policy: self.host_key_policy,
            allow_adhoc: self.allow_adhoc,
            disabled: false,
        };
        let services = self
            .services
            .iter()
            .map(|s| ServiceSpec {
                host: self.id.clone(),
                name: s.name.clone(),
                manager: s.manager,
                unit: s.unit.clone(),
                actions: s.actions.clone(),
                log_path: s.log_path.clone(),
                expected_running: true,
            })
            .collect();
        (host, services)
    }
}

/// One target: sshd + runit services + sudoers.
pub struct Host {
    pub id: HostId,
    pub sshd: Sshd,
    pub runit: RunitHost,
    pub sudoers: Option<SudoersFile>,
    pub big_log: PathBuf,
}

impl Host {
    pub fn start(n: u8) -> anyhow::Result<Host> {
        let ip = Ipv4Addr::new(127, 0, 0, n);
        let sshd = Sshd::start(ip, SshdOptions::default())?;
        let runit = RunitHost::start(ip)?;
        let big_log = runit.root().join("big.log");
        let lines: String = (1..=800).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&big_log, lines)?;
        let mut host = Host {
            id: HostId::new(format!("t{n}"))?,
            sshd,
            runit,
            sudoers: None,
            big_log,
        };
        let (spec, services) = host.static_host(true).specs();
        let text =
            fleetbus_executor::sudoers::for_host(spec.host.as_str(), "fleet", &services, &[])?;
        host.sudoers = Some(SudoersFile::install(
            &format!("fleetbus-test-{n}-{}", std::process::id()),
            &text,
        )?);
        Ok(host)
    }

    pub fn static_host(&self, allow_adhoc: bool) -> StaticHost {
        let svc = |name: &str, log: Option<String>| StaticService {
            name: name.parse().expect("literal service name"),
            manager: ServiceManager::Runit,
            unit: self.runit.service_dir(name).display().to_string(),
            actions: ServiceAction::ALL.to_vec(),
            log_path: log,
        };
        StaticHost {
            id: self.id.clone(),
            address: self.sshd.ip().to_string(),
            port: self.sshd.port(),
            user: "fleet".into(),
            host_key_policy: HostKeyPolicy::AcceptNew,
            tags: vec!["test".into()],
            roles: vec![],
            allow_adhoc,
            services: vec![
                svc("web", None),
                svc("worker", None),
                svc("flaky", None),
                StaticService {
                    name: "biglog".parse().expect("literal service name"),
                    manager: ServiceManager::Runit,
                    unit: self.runit.service_dir("worker").display().to_string(),
                    actions: vec![ServiceAction::Logs, ServiceAction::Status],
                    log_path: Some(self.big_log.display().to_string()),
                },
                StaticService {
                    name: "readonly".parse().expect("literal service name"),
                    manager: ServiceManager::Runit,
                    unit: self.runit.service_dir("web").display().to_string(),
                    actions: vec![ServiceAction::Status],
                    log_path: None,
                },
            ],
        }
    }

    pub fn key(&self) -> PathBuf {
        self.sshd
            .client_key()
            .map(|k| k.private.clone())
            .unwrap_or_default()
    }
}

pub struct Rig {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub events: Events,
    pub state: tempfile::TempDir,
    /// Hosts named in a config, registered on the bus before the executor starts.
    pub hosts: std::sync::Mutex<Vec<StaticHost>>,
}

impl Rig {
    pub async fn start() -> anyhow::Result<Rig> {
        let nats = NatsServer::start();
        nats.ensure_streams().await;
        let client = nats.client(Role::Admin).await;
        let js = async_nats::jetstream::new(client.clone());
        let sub = client.subscribe("fleet.evt.>").await?;
        client.flush().await?;
        Ok(Rig {
            nats,
            client,
            js,
            events: Events {
                sub,
                seen: Vec::new(),
            },
            state: tempfile::tempdir()?,
            hosts: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self, hosts: Vec<StaticHost>, key: PathBuf) -> Config {
        let mut c = Config::demo();
        c.nats = self.nats.nats_config(Role::Executor);
        c.state_dir = Some(self.state.path().join("executor"));
        c.ssh.key = Some(key);
        c.ssh.kill_grace_secs = 1;
        c.limits = Limits {
            max_concurrent: 16,
            max_per_host: 4,
        };
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(hosts);
        c
    }

    /// Publishes the registration events of the hosts named in configs so far (the executor
    /// replays them from `EVENTS` when it starts).
    pub async fn register_hosts(&self) -> anyhow::Result<()> {
        let hosts = std::mem::take(&mut *self.hosts.lock().unwrap_or_else(|e| e.into_inner()));
        let admin = Actor::user("admin", UserRole::Admin);
        for h in hosts {
            let (host, services) = h.specs();
            let mut events = vec![Event::Host(HostEvent::Registered(host))];
            events.extend(
                services
                    .into_iter()
                    .map(|s| Event::Service(ServiceEvent::Registered(s))),
            );
            for event in events {
                let env = Envelope::new("test", admin.clone(), None, event);
                let message = fleetbus_runtime::bus::Outgoing::event(&env)?;
                fleetbus_runtime::bus::publish(&self.js, &message).await?;
            }
        }
        Ok(())
    }

    /// Starts the executor in-process and waits for its `component_started` event.
    pub async fn spawn(&mut self, config: Config) -> anyhow::Result<Running> {
        self.register_hosts().await?;
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move { fleetbus_executor::run(config, t).await });
        self.events
            .wait("executor started", |e| matches!(&e.event, Event::System(fleetbus_schemas::events::system::SystemEvent::ComponentStarted { component, .. }) if component == "executor"))
            .await?;
        Ok(Running { token, handle })
    }

    pub async fn send(&self, actor: Actor, cmd: JobCommand) -> anyhow::Result<CommandEnvelope> {
        let env = CommandEnvelope::new(actor, Command::Job(cmd));
        let payload = fleetbus_schemas::encode(&env)?;
        self.publish_raw(&env.subject(), &env.id.to_string(), payload)
            .await?;
        Ok(env)
    }

    pub async fn publish_raw(
        &self,
        subject: &str,
        id: &str,
        payload: Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        self.js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await?
            .await?;
        Ok(())
    }

    /// The job scheduled for a command (first one).
    pub async fn scheduled(&mut self, env: &CommandEnvelope) -> anyhow::Result<JobId> {
        let id = env.id;
        let e = self
            .events
            .wait("job scheduled", |e| {
                e.causation == Some(id) && matches!(e.event, Event::Job(JobEvent::Scheduled { .. }))
            })
            .await?;
        match e.event {
            Event::Job(JobEvent::Scheduled { job, .. }) => Ok(job),
            _ => anyhow::bail!("not scheduled"),
        }
    }

    /// The final event of a job.
    pub async fn finished(&mut self, job: JobId) -> anyhow::Result<JobEvent> {
        let e = self
            .events
            .wait("job finished", |e| match &e.event {
                Event::Job(
                    JobEvent::Succeeded { job: j, .. }
                    | JobEvent::Failed { job: j, .. }
                    | JobEvent::Cancelled { job: j, .. },
                ) => *j == job,
                _ => false,
            })
            .await?;
        match e.event {
            Event::Job(j) => Ok(j),
            _ => anyhow::bail!("not a job event"),
        }
    }

    /// The rejection of a command.
    pub async fn rejected(
        &mut self,
        env: &CommandEnvelope,
    ) -> anyhow::Result<(fleetbus_schemas::events::system::RejectKind, String)> {
        let id = env.id;
        let e = self
            .events
            .wait("command rejected", |e| matches!(&e.event, Event::System(fleetbus_schemas::events::system::SystemEvent::CommandRejected { command: Some(c), .. }) if *c == id))
            .await?;
        match e.event {
            Event::System(fleetbus_schemas::events::system::SystemEvent::CommandRejected {
                reason,
                message,
                ..
            }) => Ok((reason, message)),
            _ => anyhow::bail!("not a rejection"),
        }
    }

    /// Runs a command to its end and returns the final event.
    pub async fn run(&mut self, actor: Actor, cmd: JobCommand) -> anyhow::Result<JobEvent> {
        let env = self.send(actor, cmd).await?;
        let job = self.scheduled(&env).await?;
        self.finished(job).await
    }

    /// Every output chunk of a job from the OUTPUT stream, in order.
    pub async fn output(&self, job: JobId) -> anyhow::Result<Vec<OutputChunk>> {
        use async_nats::jetstream::consumer;
        let stream = self
            .js
            .get_stream(fleetbus_schemas::subjects::OUTPUT_STREAM)
            .await?;
        let c = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: fleetbus_schemas::subjects::job_output(job),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await?;
        let pending = c.cached_info().num_pending as usize;
        let mut out = Vec::new();
        if pending > 0 {
            let mut msgs = c.fetch().max_messages(pending).messages().await?;
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                out.push(fleetbus_schemas::decode::<OutputChunk>(&m.payload)?);
            }
        }
        Ok(out)
    }
}

pub struct Running {
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), fleetbus_executor::ExecError>>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle).await???;
        Ok(())
    }
}

pub struct Events {
    sub: async_nats::Subscriber,
    pub seen: Vec<Envelope>,
}

impl Events {
    /// Waits (max 30 s) for an event matching `pred`, looking at those already seen first.
    pub async fn wait(
        &mut self,
        what: &str,
        pred: impl Fn(&Envelope) -> bool,
    ) -> anyhow::Result<Envelope> {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return Ok(e.clone());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("timed out waiting for {what}; seen: {:#?}", self.summary())
                })?
                .ok_or_else(|| anyhow::anyhow!("event subscription ended"))?;
            let env: Envelope = fleetbus_schemas::decode(&msg.payload)?;
            self.seen.push(env.clone());
            if pred(&env) {
                return Ok(env);
            }
        }
    }

    /// Like [`Events::wait`], but only for events that arrive from now on.
    pub async fn wait_new(
        &mut self,
        what: &str,
        pred: impl Fn(&Envelope) -> bool,
    ) -> anyhow::Result<Envelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))?
                .ok_or_else(|| anyhow::anyhow!("event subscription ended"))?;
            let env: Envelope = fleetbus_schemas::decode(&msg.payload)?;
            self.seen.push(env.clone());
            if pred(&env) {
                return Ok(env);
            }
        }
    }

    pub fn summary(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| {
                format!("{} {:?}", e.subject(), e.event)
                    .chars()
                    .take(300)
                    .collect()
            })
            .collect()
    }

    /// Events of one job so far, in order.
    pub fn of_job(&self, job: JobId) -> Vec<JobEvent> {
        self.seen
            .iter()
            .filter_map(|e| match &e.event {
                Event::Job(j) if j.job() == Some(job) => Some(j.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn operator() -> Actor {
    Actor::user("olga", UserRole::Operator)
}

pub fn admin() -> Actor {
    Actor::user("ada", UserRole::Admin)
}

pub fn viewer() -> Actor {
    Actor::user("vic", UserRole::Viewer)
}
