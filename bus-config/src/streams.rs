//! Declarative JetStream streams and durable consumers, applied by an idempotent [`ensure`].
//!
//! [`definitions`] is the single source of truth for what the bus should look like;
//! [`ensure`] creates what is missing and updates what can be updated, [`check`] only compares.
//! Both return a [`Report`] that names every difference field by field.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, context};
use serde::{Deserialize, Serialize};

use fleetbus_schemas::subjects::{COMMANDS_ALL, EVENTS_ALL, OUTPUT_ALL, SECRETS_ALL};

use crate::users::Role;
use crate::BusConfigError;

// Stream, consumer and bucket names are part of the wire contract: defined once in `schemas`.
pub use fleetbus_schemas::subjects::{
    COMMANDS_STREAM, EVENTS_STREAM, INGEST_EVENTS_CONSUMER as INGEST_EVENTS,
    INGEST_SECRETS_CONSUMER as INGEST_SECRETS, OBJECT_BUCKETS, OUTPUT_STREAM, SECRETS_STREAM,
};

/// Names of the consumers on `stream` that belong to one service each: the durables
/// [`definitions`] puts there and ingest's readers.
pub fn owned_consumer_names(stream: &str) -> Vec<String> {
    let mut names: Vec<String> = definitions(&Retention::default(), 1)
        .consumers
        .into_iter()
        .filter(|c| c.stream == stream)
        .map(|c| c.name().to_owned())
        .collect();
    match stream {
        EVENTS_STREAM => names.push(INGEST_EVENTS.into()),
        SECRETS_STREAM => names.push(INGEST_SECRETS.into()),
        _ => {}
    }
    names
}

/// Subject prefix of the bridge between the `FLEET` and `TAP` accounts: the imported
/// consumer-create API (`<prefix>.API.…`) and the mirror's deliveries (`<prefix>.deliver.…`).
pub const TAP_BRIDGE_PREFIX: &str = "fleetbus-bridge";

/// API prefix the `TAP` account's mirror uses to create its consumer on `FLEET`'s `EVENTS`.
pub fn tap_api_prefix() -> String {
    format!("{TAP_BRIDGE_PREFIX}.API")
}

/// Deliver prefix of the mirror's consumer (a stream export from `FLEET` to `TAP`).
pub fn tap_deliver_prefix() -> String {
    format!("{TAP_BRIDGE_PREFIX}.deliver")
}

/// JetStream's duplicate window for the streams fed with `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Command areas: `fleet.cmd.<area>.<verb>`, one durable work-queue consumer each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandArea {
    /// Host registration and changes (ingest).
    Host,
    /// Agent management (ingest).
    Agent,
    /// Users and roles (ingest).
    User,
    /// Alert acknowledgement and muting (ingest).
    Alert,
    /// Configuration changes (ingest).
    Config,
    /// Jobs on remote hosts (executor).
    Job,
    /// User schedules (scheduler).
    Schedule,
    /// Checks and polls (scheduler).
    Check,
    /// Notification rules and test sends (notifier).
    Notify,
}

impl CommandArea {
    /// Every area, in a stable order.
    pub const ALL: [CommandArea; 9] = [
        CommandArea::Host,
        CommandArea::Agent,
        CommandArea::User,
        CommandArea::Alert,
        CommandArea::Config,
        CommandArea::Job,
        CommandArea::Schedule,
        CommandArea::Check,
        CommandArea::Notify,
    ];

    /// The subject token (`fleet.cmd.<name>.…`).
    pub fn name(self) -> &'static str {
        match self {
            CommandArea::Host => "host",
            CommandArea::Agent => "agent",
            CommandArea::User => "user",
            CommandArea::Alert => "alert",
            CommandArea::Config => "config",
            CommandArea::Job => "job",
            CommandArea::Schedule => "schedule",
            CommandArea::Check => "check",
            CommandArea::Notify => "notify",
        }
    }

    /// The durable consumer's name on `COMMANDS`, e.g. `cmd-host`.
    pub fn consumer_name(self) -> String {
        fleetbus_schemas::subjects::command_consumer(self.name())
    }

    /// The consumer's filter subject, e.g. `fleet.cmd.host.>`.
    pub fn filter_subject(self) -> String {
        fleetbus_schemas::subjects::command_area(self.name())
    }

    /// The service that consumes this area.
    pub fn consumer_role(self) -> Role {
        match self {
            CommandArea::Host
            | CommandArea::Agent
            | CommandArea::User
            | CommandArea::Alert
            | CommandArea::Config => Role::Ingest,
            CommandArea::Job => Role::Executor,
            CommandArea::Schedule | CommandArea::Check => Role::Scheduler,
            CommandArea::Notify => Role::Notifier,
        }
    }
}

/// Bounds of the `OUTPUT` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Oldest live output kept, in seconds (default 7 days).
    pub output_max_age_secs: u64,
    /// Size bound of the stream in bytes (default 1 GiB).
    pub output_max_bytes: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            output_max_age_secs: 7 * 24 * 3600,
            output_max_bytes: 1 << 30,
        }
    }
}

/// A durable consumer to create on a stream.
#[derive(Debug, Clone)]
pub struct ConsumerDef {
    /// The stream it reads.
    pub stream: String,
    /// Its configuration (`durable_name` is its name).
    pub config: consumer::pull::Config,
}

impl ConsumerDef {
    /// The durable name.
    pub fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }
}

/// Everything [`ensure`] applies.
#[derive(Debug, Clone)]
pub struct Definitions {
    /// Streams, in creation order.
    pub streams: Vec<stream::Config>,
    /// Durable consumers, created after their streams.
    pub consumers: Vec<ConsumerDef>,
}

impl Definitions {
    /// The stream definition with this name.
    pub fn stream(&self, name: &str) -> Option<&stream::Config> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The consumer definition with this name.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerDef> {
        self.consumers.iter().find(|c| c.name() == name)
    }
}

/// The fleetbus streams and consumers, with `replicas` copies of each stream (1 for a single
/// node, 3 for a 3-node cluster).
pub fn definitions(retention: &Retention, replicas: usize) -> Definitions {
    let replicas = replicas.max(1);
    let events = stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("every fleetbus event (fleet.evt.>)".into()),
        subjects: vec![EVENTS_ALL.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        // The log is the record: nothing may be deleted or purged behind ingest's back.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    };
    let secrets = stream::Config {
        name: SECRETS_STREAM.into(),
        description: Some("credential-bearing events (fleet.sec.>)".into()),
        subjects: vec![SECRETS_ALL.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        deny_delete: true,
        deny_purge: true,
        num_replicas: replicas,
        ..Default::default()
    };
    let commands = stream::Config {
        name: COMMANDS_STREAM.into(),
        description: Some("commands, one work-queue consumer per area (fleet.cmd.>)".into()),
        subjects: vec![COMMANDS_ALL.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    };
    let output = stream::Config {
        name: OUTPUT_STREAM.into(),
        description: Some("live job output (fleet.out.>)".into()),
        subjects: vec![OUTPUT_ALL.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: Duration::from_secs(retention.output_max_age_secs),
        max_bytes: retention.output_max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    };

    // Ingest reads EVENTS and SECRETS through its own ephemeral readers (see
    // [`INGEST_EVENTS`]): only the command work queues have durable consumers.
    let mut consumers = Vec::new();
    for area in CommandArea::ALL {
        consumers.push(ConsumerDef {
            stream: COMMANDS_STREAM.into(),
            config: consumer::pull::Config {
                durable_name: Some(area.consumer_name()),
                description: Some(format!(
                    "{} commands for {}",
                    area.name(),
                    area.consumer_role()
                )),
                filter_subject: area.filter_subject(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_deliver: 5,
                max_ack_pending: 1_000,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            },
        });
    }

    Definitions {
        streams: vec![events, secrets, commands, output],
        consumers,
    }
}

/// The `TAP` account's streams: `EVENTS`, a mirror of `FLEET`'s `EVENTS` with the same
/// sequence numbers, which the `tap` user replays. Apply through [`tap_context`].
pub fn tap_definitions(replicas: usize) -> Definitions {
    let mirror = stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("read-only mirror of FLEET's EVENTS for tap users".into()),
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        num_replicas: replicas.max(1),
        mirror: Some(stream::Source {
            name: EVENTS_STREAM.into(),
            external: Some(stream::External {
                api_prefix: tap_api_prefix(),
                delivery_prefix: Some(tap_deliver_prefix()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Definitions {
        streams: vec![mirror],
        consumers: vec![],
    }
}

/// What [`ensure`] or [`check`] found for one stream or consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Matches its definition.
    Unchanged,
    /// Was missing and has been created.
    Created,
    /// Differed in updatable fields and has been updated.
    Updated,
    /// Is missing (check only).
    Missing,
    /// Differs from its definition and was not (or cannot be) changed.
    Drifted,
}

/// One field that differs from its definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Field name as in the JetStream API (e.g. `max_age`).
    pub field: &'static str,
    /// The defined value.
    pub expected: String,
    /// The value on the server.
    pub actual: String,
    /// Whether an update can change it in place (otherwise the object must be recreated).
    pub updatable: bool,
}

/// Kind of JetStream object in a [`ReportItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A stream.
    Stream,
    /// A durable consumer.
    Consumer,
}

/// The result for one stream or consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportItem {
    /// Stream or consumer.
    pub kind: ObjectKind,
    /// `EVENTS`, or `COMMANDS/cmd-host` for a consumer.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Fields that differed (before the update, if one was made).
    pub drift: Vec<Drift>,
}

/// The result of [`ensure`] or [`check`]. `Display` gives one line per object and per field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// One item per defined stream and consumer, in definition order.
    pub items: Vec<ReportItem>,
}

impl Report {
    /// `true` when nothing was created or updated and nothing differs.
    pub fn is_clean(&self) -> bool {
        self.items.iter().all(|i| i.outcome == Outcome::Unchanged)
    }

    /// `true` when something is missing or still differs from its definition.
    pub fn has_drift(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i.outcome, Outcome::Missing | Outcome::Drifted))
    }

    /// The item for a stream name or `STREAM/consumer`.
    pub fn item(&self, name: &str) -> Option<&ReportItem> {
        self.items.iter().find(|i| i.name == name)
    }

    /// JSON for `fleetctl bus check --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let kind = match item.kind {
                ObjectKind::Stream => "stream",
                ObjectKind::Consumer => "consumer",
            };
            let outcome = match item.outcome {
                Outcome::Unchanged => "ok",
                Outcome::Created => "created",
                Outcome::Updated => "updated",
                Outcome::Missing => "MISSING",
                Outcome::Drifted => "DRIFT",
            };
            writeln!(f, "{kind} {}: {outcome}", item.name)?;
            for d in &item.drift {
                let note = if d.updatable {
                    ""
                } else {
                    " (not updatable: delete and recreate to change)"
                };
                writeln!(
                    f,
                    "  {}: expected {}, found {}{note}",
                    d.field, d.expected, d.actual
                )?;
            }
        }
        Ok(())
    }
}

fn dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s}s")
    }
}

struct Differ(Vec<Drift>);

impl Differ {
    fn cmp<T: PartialEq>(
        &mut self,
        field: &'static str,
        expected: &T,
        actual: &T,
        updatable: bool,
        show: impl Fn(&T) -> String,
    ) {
        if expected != actual {
            self.0.push(Drift {
                field,
                expected: show(expected),
                actual: show(actual),
                updatable,
            });
        }
    }
}

fn dbg<T: fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

fn num<T: ToString>(v: &T) -> String {
    v.to_string()
}

/// Field-by-field difference of a stream's server config from its definition.
pub fn stream_drift(expected: &stream::Config, actual: &stream::Config) -> Vec<Drift> {
    let mut d = Differ(Vec::new());
    let mut es = expected.subjects.clone();
    let mut as_ = actual.subjects.clone();
    es.sort();
    as_.sort();
    d.cmp("subjects", &es, &as_, true, |v| v.join(","));
    d.cmp(
        "retention",
        &expected.retention,
        &actual.retention,
        false,
        dbg,
    );
    d.cmp("storage", &expected.storage, &actual.storage, false, dbg);
    let mirror = |c: &stream::Config| {
        c.mirror.as_ref().map(|m| {
            let ext = m.external.as_ref();
            format!(
                "{} (api {}, deliver {})",
                m.name,
                ext.map(|e| e.api_prefix.as_str()).unwrap_or("local"),
                ext.and_then(|e| e.delivery_prefix.as_deref())
                    .unwrap_or("-")
            )
        })
    };
    d.cmp("mirror", &mirror(expected), &mirror(actual), false, |v| {
        v.clone().unwrap_or_else(|| "(none)".into())
    });
    d.cmp("discard", &expected.discard, &actual.discard, true, dbg);
    d.cmp("max_age", &expected.max_age, &actual.max_age, true, |v| {
        dur(*v)
    });
    // The server reports "unlimited" as -1 where a definition says 0.
    let unl = |v: i64| if v <= 0 { -1 } else { v };
    d.cmp(
        "max_bytes",
        &unl(expected.max_bytes),
        &unl(actual.max_bytes),
        true,
        num,
    );
    d.cmp(
        "max_msgs",
        &unl(expected.max_messages),
        &unl(actual.max_messages),
        true,
        num,
    );
    d.cmp(
        "max_msg_size",
        &unl(expected.max_message_size.into()),
        &unl(actual.max_message_size.into()),
        true,
        num,
    );
    // Zero means "server default" (2 min), which is what mirrors get.
    if !expected.duplicate_window.is_zero() {
        d.cmp(
            "duplicate_window",
            &expected.duplicate_window,
            &actual.duplicate_window,
            true,
            |v| dur(*v),
        );
    }
    d.cmp(
        "num_replicas",
        &expected.num_replicas.max(1),
        &actual.num_replicas.max(1),
        true,
        num,
    );
    d.cmp(
        "deny_delete",
        &expected.deny_delete,
        &actual.deny_delete,
        true,
        num,
    );
    // Once denied, purge cannot be re-allowed in place; the server rejects that update.
    d.cmp(
        "deny_purge",
        &expected.deny_purge,
        &actual.deny_purge,
        true,
        num,
    );
    d.cmp(
        "allow_direct",
        &expected.allow_direct,
        &actual.allow_direct,
        true,
        num,
    );
    d.0
}

/// Field-by-field difference of a consumer's server config from its definition.
pub fn consumer_drift(expected: &consumer::pull::Config, actual: &consumer::Config) -> Vec<Drift> {
    let mut d = Differ(Vec::new());
    d.cmp(
        "filter_subject",
        &expected.filter_subject,
        &actual.filter_subject,
        false,
        |v| {
            if v.is_empty() {
                "(none)".into()
            } else {
                v.clone()
            }
        },
    );
    d.cmp(
        "deliver_policy",
        &expected.deliver_policy,
        &actual.deliver_policy,
        false,
        dbg,
    );
    d.cmp(
        "ack_policy",
        &expected.ack_policy,
        &actual.ack_policy,
        false,
        dbg,
    );
    d.cmp(
        "replay_policy",
        &expected.replay_policy,
        &actual.replay_policy,
        false,
        dbg,
    );
    d.cmp(
        "ack_wait",
        &expected.ack_wait,
        &actual.ack_wait,
        true,
        |v| dur(*v),
    );
    let unl = |v: i64| if v <= 0 { -1 } else { v };
    d.cmp(
        "max_deliver",
        &unl(expected.max_deliver),
        &unl(actual.max_deliver),
        true,
        num,
    );
    if expected.max_ack_pending != 0 {
        d.cmp(
            "max_ack_pending",
            &expected.max_ack_pending,
            &actual.max_ack_pending,
            true,
            num,
        );
    }
    if actual.deliver_subject.is_some() {
        d.0.push(Drift {
            field: "deliver_subject",
            expected: "(pull consumer)".into(),
            actual: actual.deliver_subject.clone().unwrap_or_default(),
            updatable: false,
        });
    }
    d.0
}

async fn stream_config(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, BusConfigError> {
    match js.get_stream(name).await {
        Ok(s) => Ok(Some(s.cached_info().config.clone())),
        Err(e) => {
            let code = match e.kind() {
                context::GetStreamErrorKind::JetStream(j) => Some(j.error_code()),
                _ => None,
            };
            if code == Some(ErrorCode::STREAM_NOT_FOUND) {
                Ok(None)
            } else {
                Err(BusConfigError::JetStream {
                    what: format!("stream {name} info"),
                    reason: e.to_string(),
                })
            }
        }
    }
}

async fn consumer_config(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> Result<Option<consumer::Config>, BusConfigError> {
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| BusConfigError::JetStream {
            what: format!("stream {stream} info"),
            reason: e.to_string(),
        })?;
    match s.consumer_info(name).await {
        Ok(info) => Ok(Some(info.config)),
        Err(e) if e.kind() == context::ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(BusConfigError::JetStream {
            what: format!("consumer {stream}/{name} info"),
            reason: e.to_string(),
        }),
    }
}

/// Compare the server with `defs` without changing anything.
pub async fn check(js: &jetstream::Context, defs: &Definitions) -> Result<Report, BusConfigError> {
    apply(js, defs, false, "").await
}

/// Create missing streams and consumers, update updatable fields that differ, and report
/// everything (including differences that need a recreate). Running it twice is a no-op.
pub async fn ensure(js: &jetstream::Context, defs: &Definitions) -> Result<Report, BusConfigError> {
    apply(js, defs, true, "").await
}

/// Subject prefix under which the `FLEET` account (only `admin` may use it) reaches the
/// `TAP` account's JetStream API.
pub const TAP_ADMIN_API_PREFIX: &str = "fleetbus-tap.API";

/// A JetStream context for the `TAP` account's API, over an `admin` connection.
pub fn tap_context(admin: &async_nats::Client) -> jetstream::Context {
    jetstream::with_prefix(admin.clone(), TAP_ADMIN_API_PREFIX)
}

/// [`ensure`] for the whole bus over one `admin` connection: the fleet's streams and
/// consumers, then the `TAP` account's mirror of `EVENTS` (items named `TAP:<stream>`).
pub async fn ensure_bus(
    admin: &async_nats::Client,
    retention: &Retention,
    replicas: usize,
) -> Result<Report, BusConfigError> {
    bus(admin, retention, replicas, true).await
}

/// [`check`] for the whole bus (see [`ensure_bus`]); changes nothing.
pub async fn check_bus(
    admin: &async_nats::Client,
    retention: &Retention,
    replicas: usize,
) -> Result<Report, BusConfigError> {
    bus(admin, retention, replicas, false).await
}

async fn bus(
    admin: &async_nats::Client,
    retention: &Retention,
    replicas: usize,
    change: bool,
) -> Result<Report, BusConfigError> {
    let fleet = jetstream::new(admin.clone());
    let mut report = apply(&fleet, &definitions(retention, replicas), change, "").await?;
    let tap = apply(
        &tap_context(admin),
        &tap_definitions(replicas),
        change,
        "TAP:",
    )
    .await?;
    report.items.extend(tap.items);
    Ok(report)
}

async fn apply(
    js: &jetstream::Context,
    defs: &Definitions,
    change: bool,
    prefix: &str,
) -> Result<Report, BusConfigError> {
    let mut report = Report::default();
    for def in &defs.streams {
        let label = format!("{prefix}{}", def.name);
        let item = match stream_config(js, &def.name).await? {
            None if !change => outcome(ObjectKind::Stream, &label, Outcome::Missing, vec![]),
            None => {
                js.create_stream(def.clone())
                    .await
                    .map_err(|e| BusConfigError::JetStream {
                        what: format!("create stream {}", def.name),
                        reason: e.to_string(),
                    })?;
                tracing::info!(stream = %def.name, "stream created");
                outcome(ObjectKind::Stream, &label, Outcome::Created, vec![])
            }
            Some(actual) => {
                let drift = stream_drift(def, &actual);
                let fixable = !drift.is_empty() && drift.iter().all(|d| d.updatable);
                if drift.is_empty() {
                    outcome(ObjectKind::Stream, &label, Outcome::Unchanged, drift)
                } else if change && fixable {
                    // Keep server-assigned fields we do not manage (e.g. placement) as they are.
                    let mut update = def.clone();
                    update.placement = actual.placement.clone();
                    js.update_stream(update)
                        .await
                        .map_err(|e| BusConfigError::JetStream {
                            what: format!("update stream {}", def.name),
                            reason: e.to_string(),
                        })?;
                    tracing::info!(stream = %def.name, fields = drift.len(), "stream updated");
                    outcome(ObjectKind::Stream, &label, Outcome::Updated, drift)
                } else {
                    tracing::warn!(stream = %def.name, fields = drift.len(), "stream drift");
                    outcome(ObjectKind::Stream, &label, Outcome::Drifted, drift)
                }
            }
        };
        report.items.push(item);
    }

    for def in &defs.consumers {
        let label = format!("{prefix}{}/{}", def.stream, def.name());
        let stream_present = report
            .item(&format!("{prefix}{}", def.stream))
            .map(|i| i.outcome != Outcome::Missing)
            .unwrap_or(true);
        let actual = if stream_present {
            consumer_config(js, &def.stream, def.name()).await?
        } else {
            None
        };
        let item = match actual {
            None if !change => outcome(ObjectKind::Consumer, &label, Outcome::Missing, vec![]),
            None => {
                create_consumer(js, def).await?;
                tracing::info!(consumer = %label, "consumer created");
                outcome(ObjectKind::Consumer, &label, Outcome::Created, vec![])
            }
            Some(actual) => {
                let drift = consumer_drift(&def.config, &actual);
                let fixable = !drift.is_empty() && drift.iter().all(|d| d.updatable);
                if drift.is_empty() {
                    outcome(ObjectKind::Consumer, &label, Outcome::Unchanged, drift)
                } else if change && fixable {
                    create_consumer(js, def).await?;
                    tracing::info!(consumer = %label, fields = drift.len(), "consumer updated");
                    outcome(ObjectKind::Consumer, &label, Outcome::Updated, drift)
                } else {
                    tracing::warn!(consumer = %label, fields = drift.len(), "consumer drift");
                    outcome(ObjectKind::Consumer, &label, Outcome::Drifted, drift)
                }
            }
        };
        report.items.push(item);
    }
    Ok(report)
}

async fn create_consumer(js: &jetstream::Context, def: &ConsumerDef) -> Result<(), BusConfigError> {
    js.create_consumer_on_stream(def.config.clone(), def.stream.as_str())
        .await
        .map(|_| ())
        .map_err(|e| BusConfigError::JetStream {
            what: format!("create consumer {}/{}", def.stream, def.name()),
            reason: e.to_string(),
        })
}

fn outcome(kind: ObjectKind, name: &str, outcome: Outcome, drift: Vec<Drift>) -> ReportItem {
    ReportItem {
        kind,
        name: name.to_owned(),
        outcome,
        drift,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_filters_do_not_overlap_and_cover_every_area() {
        let defs = definitions(&Retention::default(), 1);
        let filters: Vec<_> = defs
            .consumers
            .iter()
            .filter(|c| c.stream == COMMANDS_STREAM)
            .map(|c| c.config.filter_subject.clone())
            .collect();
        assert_eq!(filters.len(), CommandArea::ALL.len());
        let mut dedup = filters.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), filters.len());
        assert!(defs.consumer("cmd-host").is_some());
        // Ingest's readers are its own (created from the log's positions), not definitions;
        // they are still protected from other readers.
        assert!(defs.consumer(INGEST_EVENTS).is_none());
        assert!(owned_consumer_names(EVENTS_STREAM).contains(&INGEST_EVENTS.to_owned()));
        assert!(owned_consumer_names(SECRETS_STREAM).contains(&INGEST_SECRETS.to_owned()));
    }

    #[test]
    fn drift_names_field_expected_and_actual() {
        let defs = definitions(&Retention::default(), 1);
        let expected = defs.stream(OUTPUT_STREAM).cloned().unwrap_or_default();
        let mut actual = expected.clone();
        actual.max_age = Duration::from_secs(60);
        actual.storage = StorageType::Memory;
        let drift = stream_drift(&expected, &actual);
        assert_eq!(drift.len(), 2, "{drift:?}");
        let age = drift.iter().find(|d| d.field == "max_age");
        assert_eq!(age.map(|d| d.expected.as_str()), Some("604800s"));
        assert_eq!(age.map(|d| d.actual.as_str()), Some("60s"));
        let storage = drift.iter().find(|d| d.field == "storage");
        assert_eq!(storage.map(|d| d.updatable), Some(false));

        let report = Report {
            items: vec![outcome(
                ObjectKind::Stream,
                "OUTPUT",
                Outcome::Drifted,
                drift,
            )],
        };
        let text = report.to_string();
        assert!(text.contains("stream OUTPUT: DRIFT"), "{text}");
        assert!(
            text.contains("max_age: expected 604800s, found 60s"),
            "{text}"
        );
        let json = report.to_json();
        let fields: Vec<_> = json["items"][0]["drift"]
            .as_array()
            .map(|a| a.iter().map(|d| d["field"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["storage", "max_age"]);
        assert!(report.has_drift());
    }
}
