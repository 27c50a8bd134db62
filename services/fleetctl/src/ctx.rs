//! What every verb shares: global flags, the NATS connection (as `admin`), sending a command
//! and waiting for its result, asking a query, printing.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use fleetbus_schemas::events::system::SystemEvent;
use fleetbus_schemas::queries::{model, CommittedQuery, COMMITTED_WAIT_MAX_MS};
use fleetbus_schemas::{Actor, Command, CommandEnvelope, Envelope, Event, EventId, UserRole};
use futures::StreamExt;
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
    /// caused by it. A `CommandRejected` for it becomes [`CtlError::Rejected`].
    pub async fn send(&self, command: Command) -> Result<Outcome, CtlError> {
        let envelope = CommandEnvelope::new(Actor::user("admin", UserRole::Admin), command);
        let client = self.client().await?;
        // Subscribe before publishing so the result cannot slip past.
        let mut events = client
            .subscribe(fleetbus_schemas::subjects::EVENTS_ALL)
            .await
            .map_err(|e| CtlError::nats("subscribe fleet.evt.>", e))?;
        let mut secrets = client
            .subscribe(fleetbus_schemas::subjects::SECRETS_ALL)
            .await
            .map_err(|e| CtlError::nats("subscribe fleet.sec.>", e))?;
        client
            .flush()
            .await
            .map_err(|e| CtlError::nats("flush", e))?;
        let payload =
            fleetbus_schemas::encode(&envelope).map_err(|e| CtlError::nats("encode command", e))?;
        let subject = envelope.subject();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.id.to_string().as_str());
        let js = self.jetstream().await?;
        let ack = js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|e| CtlError::nats(format!("publish {subject}"), e))?;
        tokio::time::timeout(self.timeout(), ack)
            .await
            .map_err(|_| CtlError::Timeout(format!("no JetStream ack for {subject} within {}s: is the COMMANDS stream there (`fleetctl bus apply`)?", self.global.timeout)))?
            .map_err(|e| CtlError::nats(format!("publish {subject} (is the COMMANDS stream there? run `fleetctl bus apply`)"), e))?;
        tracing::debug!(command_id = %envelope.id, %subject, "command published");

        let id = envelope.id;
        let wait = async {
            loop {
                let msg = tokio::select! {
                    m = events.next() => m,
                    m = secrets.next() => m,
                };
                let Some(msg) = msg else {
                    return Err(CtlError::nats("wait for result", "subscription closed"));
                };
                let Ok(event) = fleetbus_schemas::decode::<Envelope>(&msg.payload) else {
                    continue;
                };
                let about_it = event.causation == Some(id)
                    || matches!(&event.event, Event::System(SystemEvent::CommandRejected { command: Some(c), .. }) if *c == id);
                if about_it {
                    return Ok((event, msg.subject.to_string()));
                }
            }
        };
        let (event, subject) = tokio::time::timeout(self.timeout(), wait)
            .await
            .map_err(|_| {
                CtlError::Timeout(format!(
                    "command {id} was queued on {subject} but no event named it within {}s (is the service that handles `{}` commands running?)",
                    self.global.timeout,
                    envelope.command.area()
                ))
            })??;
        if let Event::System(SystemEvent::CommandRejected {
            component,
            reason,
            message,
            ..
        }) = &event.event
        {
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
            return Err(CtlError::Rejected {
                id: id.to_string(),
                component: component.clone(),
                kind,
                message: message.clone(),
            });
        }
        self.wait_committed(event.id).await;
        Ok(Outcome {
            command: envelope,
            event,
            subject,
        })
    }

    /// Waits until event `id` is in the log, so the next query shows it (read-your-writes:
    /// `host add` then `host ls` lists the host). The command took effect when its event was
    /// published; if the log does not have it within the timeout (ingest down or behind), say
    /// so and go on.
    async fn wait_committed(&self, id: EventId) {
        let wait_ms = u32::try_from(self.timeout().as_millis())
            .unwrap_or(u32::MAX)
            .saturating_sub(500)
            .min(COMMITTED_WAIT_MAX_MS);
        let query = CommittedQuery { id, wait_ms };
        if let Err(e) = self.query(model::COMMITTED, &query).await {
            eprintln!("fleetctl: warning: event {id} was published but is not in the log yet: {e}");
        }
    }

    /// Asks `fleet.q.<model>` with a MessagePack request and returns the `ok` answer as JSON.
    pub async fn query<R: Serialize + ?Sized>(
        &self,
        model: &str,
        request: &R,
    ) -> Result<serde_json::Value, CtlError> {
        let payload =
            fleetbus_schemas::encode(request).map_err(|e| CtlError::nats("encode query", e))?;
        let client = self.client().await?;
        let subject = fleetbus_schemas::subjects::query(model);
        let reply = tokio::time::timeout(
            self.timeout(),
            client.request(subject.clone(), payload.into()),
        )
        .await
        .map_err(|_| {
            CtlError::Timeout(format!(
                "no reply on {subject} within {}s (is ingest running?)",
                self.global.timeout
            ))
        })?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => CtlError::Query {
                model: model.into(),
                message: format!("nobody answers {subject} (is ingest running?)"),
            },
            _ => CtlError::nats(format!("request {subject}"), e),
        })?;
        let value: serde_json::Value =
            rmp_serde::from_slice(&reply.payload).map_err(|e| CtlError::Query {
                model: model.into(),
                message: format!("undecodable reply: {e}"),
            })?;
        if let Some(ok) = value.get("ok") {
            return Ok(ok.clone());
        }
        let message = value
            .get("error")
            .map(|e| {
                format!(
                    "{}: {}",
                    e.get("kind").and_then(|k| k.as_str()).unwrap_or("error"),
                    e.get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| format!("unexpected reply {value}"));
        Err(CtlError::Query {
            model: model.into(),
            message,
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
