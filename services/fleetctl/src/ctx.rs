//! What every verb shares: global flags, the NATS connection (as `admin`), sending a command
//! and waiting for its result, asking a query, printing.

use std::path::PathBuf;
use std::time::Duration;

use fleetbus_runtime::bus::{self, BusError};
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::subjects;
use fleetbus_schemas::{Actor, Command, CommandEnvelope, Envelope, Event, UserRole};
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::CtlError;

/// Flags every verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// State directory (NATS seeds under `<state>/nats/`, ingest's log under `<state>/ingest/`).
    #[arg(
        long = "state",
        env = "FLEETBUS_STATE",
        global = true,
        default_value = "./state"
    )]
    pub state: PathBuf,
    /// NATS server URL(s), comma separated.
    #[arg(
        long,
        env = "FLEETBUS_NATS_URL",
        global = true,
        default_value = fleetbus_runtime::nats::DEFAULT_URL
    )]
    pub nats_url: String,
    /// The admin NKey seed file (default `<state>/nats/admin.nk`).
    #[arg(long, env = "FLEETBUS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// Print JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the server, a command's result or a query's reply.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// The shared context of one fleetctl run.
#[derive(Debug)]
pub struct Ctx {
    /// The global flags.
    pub global: Global,
    client: OnceCell<async_nats::Client>,
}

/// The result of a command: the event it caused.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command as sent.
    pub command: CommandEnvelope,
    /// The first event naming the command as its cause.
    pub event: Envelope,
    /// The subject it came on.
    pub subject: String,
}

impl Ctx {
    /// A context; nothing is connected yet.
    pub fn new(global: Global) -> Ctx {
        Ctx {
            global,
            client: OnceCell::new(),
        }
    }

    /// The wait limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.global.timeout)
    }

    /// The seed file used to connect.
    pub fn seed_file(&self) -> PathBuf {
        self.global
            .creds
            .clone()
            .unwrap_or_else(|| self.global.state.join("nats").join("admin.nk"))
    }

    /// The connection, opened on first use. Fails fast (after `--timeout`) when nothing answers.
    pub async fn client(&self) -> Result<&async_nats::Client, CtlError> {
        self.client
            .get_or_try_init(|| async {
                let seed = self.seed_file();
                if !seed.is_file() {
                    return Err(CtlError::Connect(format!(
                        "no admin seed at {}: pass --state DIR (or FLEETBUS_STATE) pointing at a state dir made by `fleetctl bus init`, or --creds FILE",
                        seed.display()
                    )));
                }
                let config = fleetbus_runtime::nats::NatsConfig {
                    url: self.global.nats_url.clone(),
                    user: "admin".into(),
                    nkey_seed_file: Some(seed),
                };
                let give_up = CancellationToken::new();
                let timer = give_up.clone();
                let limit = self.timeout();
                let guard = tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    timer.cancel();
                });
                let result = fleetbus_runtime::nats::connect(&config, &give_up).await;
                guard.abort();
                result.map_err(|e| match e {
                    fleetbus_runtime::RuntimeError::Cancelled(_) => CtlError::Connect(format!(
                        "no nats server answered at {} within {}s",
                        self.global.nats_url, self.global.timeout
                    )),
                    other => CtlError::Connect(other.to_string()),
                })
            })
            .await
    }

    /// A JetStream context on the connection.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, CtlError> {
        Ok(async_nats::jetstream::new(self.client().await?.clone()))
    }

    /// Publishes `command` as `admin` into the COMMANDS stream and waits for the first event
    /// caused by it, then until that event is in the log, so the next query shows it
    /// (read-your-writes: `host add` then `host ls` lists the host). A `CommandRejected` for it
    /// becomes [`CtlError::Rejected`].
    pub async fn send(&self, command: Command) -> Result<Outcome, CtlError> {
        let envelope = CommandEnvelope::new(Actor::user("admin", UserRole::Admin), command);
        let client = self.client().await?;
        let js = self.jetstream().await?;
        let id = envelope.id;
        let subject = envelope.subject();
        let mut heard =
            bus::Subscribed::new(client, &[subjects::EVENTS_ALL, subjects::SECRETS_ALL], id)
                .await
                .map_err(|e| CtlError::nats("wait for result", e))?;
        let wait = bus::CommandWait {
            timeout: self.timeout(),
            answer: self.timeout(),
            settle: None,
            committed: true,
        };
        let outcome = bus::send_command(client, &js, &envelope, &wait, &mut heard)
            .await
            .map_err(|e| match e {
                BusError::AckTimeout { .. } => CtlError::Timeout(format!("no JetStream ack for {subject} within {}s: is the COMMANDS stream there (`fleetctl bus apply`)?", self.global.timeout)),
                other => CtlError::nats(format!("publish {subject} (is the COMMANDS stream there? run `fleetctl bus apply`)"), other),
            })?;
        match outcome {
            bus::CommandOutcome::Done { events, committed } => {
                let Some((subject, event)) = events.into_iter().next() else {
                    return Err(CtlError::nats("wait for result", "no event"));
                };
                if let Some(Err(e)) = committed {
                    eprintln!(
                        "fleetctl: warning: event {} was published but is not in the log yet: {e}",
                        event.id
                    );
                }
                Ok(Outcome {
                    command: envelope,
                    event,
                    subject,
                })
            }
            bus::CommandOutcome::Rejected { subject, event } => {
                let Event::System(SystemEvent::CommandRejected {
                    component,
                    reason,
                    message,
                    ..
                }) = &event.event
                else {
                    return Err(CtlError::nats("wait for result", "not a rejection"));
                };
                let kind = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
                    .unwrap_or_else(|| "rejected".into());
                if self.global.json {
                    print_json(&serde_json::json!({
                        "command_id": id.to_string(),
                        "rejected": true,
                        "subject": subject,
                        "event": event,
                    }));
                }
                Err(CtlError::Rejected {
                    id: id.to_string(),
                    component: component.clone(),
                    kind,
                    message: message.clone(),
                })
            }
            bus::CommandOutcome::Pending => Err(CtlError::Timeout(format!(
                "command {id} was queued on {subject} but no event named it within {}s (is the service that handles `{}` commands running?)",
                self.global.timeout,
                envelope.command.area()
            ))),
        }
    }

    /// Asks `fleet.q.<model>` with a MessagePack request and returns the `ok` answer as JSON.
    pub async fn query<R: Serialize + ?Sized>(
        &self,
        model: &str,
        request: &R,
    ) -> Result<serde_json::Value, CtlError> {
        let client = self.client().await?;
        bus::query::<serde_json::Value>(client, model, request, self.timeout())
            .await
            .map_err(|e| match e {
                BusError::Timeout { subject, .. } => CtlError::Timeout(format!(
                    "no reply on {subject} within {}s (is ingest running?)",
                    self.global.timeout
                )),
                BusError::NoResponders { subject } => CtlError::Query {
                    model: model.into(),
                    message: format!("nobody answers {subject} (is ingest running?)"),
                },
                BusError::Query { source, .. } => CtlError::Query {
                    model: model.into(),
                    message: format!(
                        "{}: {}",
                        serde_json::to_value(source.kind)
                            .ok()
                            .and_then(|k| k.as_str().map(String::from))
                            .unwrap_or_else(|| "error".into()),
                        source.message
                    ),
                },
                BusError::Reply { source, .. } => CtlError::Query {
                    model: model.into(),
                    message: format!("undecodable reply: {source}"),
                },
                other => CtlError::nats(format!("query {model}"), other),
            })
    }

    /// Prints `human` or, with `--json`, `json`.
    pub fn print(&self, human: impl std::fmt::Display, json: &impl Serialize) {
        if self.global.json {
            print_json(json);
        } else {
            let text = human.to_string();
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }
}

/// Prints one JSON value on one line... pretty for objects people read, compact per event.
pub(crate) fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("fleetctl: cannot render JSON: {e}"),
    }
}

/// A one-line summary of an event for human output.
pub(crate) fn summarize(envelope: &Envelope) -> String {
    let body = serde_json::to_value(&envelope.event)
        .ok()
        .and_then(|v| v.get("body").and_then(|b| b.get("data")).cloned())
        .map(|d| d.to_string())
        .unwrap_or_default();
    format!(
        "{} {} by {}:{} {}",
        envelope.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        envelope.subject(),
        serde_json::to_value(envelope.actor.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        envelope.actor.name,
        body
    )
}
