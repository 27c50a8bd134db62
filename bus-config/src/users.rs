//! NATS users (one per service role) and their least-privilege permissions.
//!
//! Each role gets an explicit allow list for publish and subscribe. JetStream is used through its
//! request/reply API (`$JS.API.…`), so "may consume stream X" is expressed as the API subjects the
//! client library publishes to (consumer create/info, `MSG.NEXT`, acks on `$JS.ACK.X.>`), plus a
//! subscription on the role's own inbox prefix (`_INBOX.<role>.>`) for the replies.
//!
//! Inboxes are per role on purpose: a pull consumer's messages are delivered to the fetching
//! client's inbox, so a shared `_INBOX.>` subscription would let any user (e.g. `tap`) read the
//! messages another user fetches from `SECRETS` or `COMMANDS`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::streams::{
    CommandArea, COMMANDS_STREAM, EVENTS_STREAM, OBJECT_BUCKETS, OUTPUT_STREAM, SECRETS_STREAM,
};
use crate::BusConfigError;

/// One NATS user per service, plus `admin` (fleetctl) and `tap` (read-only external tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Front door for agents and the keeper of the log.
    Ingest,
    /// Runs commands on remote hosts.
    Executor,
    /// Cron, staleness sweeps, retention.
    Scheduler,
    /// Turns alert-worthy events into notifications.
    Notifier,
    /// The web UI; publishes operators' commands.
    Web,
    /// `fleetctl`: may do everything.
    Admin,
    /// Read-only external tools: live events and replay of `EVENTS`, nothing else. Lives in
    /// its own account (see [`Account`]).
    Tap,
}

/// NATS accounts. Services share `FLEET`; `tap` is isolated in `TAP`, which sees `fleet.evt.>`
/// through an import and replays a server-maintained mirror of `EVENTS`.
///
/// Why not one account: a push consumer delivers with the server's rights, not its creator's.
/// A user allowed to create consumers on `EVENTS` in the services' account could aim one at
/// `fleet.cmd.…` or `fleet.q.…` and have the server publish there for it (tested in
/// `tests/permissions.rs`). In its own account, anything tap's consumers deliver stays there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Account {
    /// The services, `admin`.
    Fleet,
    /// `tap`. Its JetStream API is imported into `FLEET` (for `admin` only) under
    /// `fleetbus-tap.API`, so `ensure` maintains the mirror with the admin connection.
    Tap,
}

impl Account {
    /// The account name in the server config.
    pub fn name(self) -> &'static str {
        match self {
            Account::Fleet => "FLEET",
            Account::Tap => "TAP",
        }
    }
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 7] = [
        Role::Ingest,
        Role::Executor,
        Role::Scheduler,
        Role::Notifier,
        Role::Web,
        Role::Admin,
        Role::Tap,
    ];

    /// The user name (also the seed file stem and the connection name prefix).
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Executor => "executor",
            Role::Scheduler => "scheduler",
            Role::Notifier => "notifier",
            Role::Web => "web",
            Role::Admin => "admin",
            Role::Tap => "tap",
        }
    }

    /// The account the user belongs to.
    pub fn account(self) -> Account {
        match self {
            Role::Tap => Account::Tap,
            _ => Account::Fleet,
        }
    }

    /// The inbox prefix this role's client must use (`ConnectOptions::custom_inbox_prefix`).
    /// Only this role may subscribe below it.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX.{}", self.name())
    }

    /// The permissions this role gets in the server config.
    pub fn permissions(self) -> Permissions {
        permissions(self)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = BusConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| BusConfigError::UnknownRole(s.to_owned()))
    }
}

/// Allow/deny lists for one direction (publish or subscribe).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectRules {
    /// Subjects (with wildcards) that are allowed; empty means nothing is allowed.
    pub allow: Vec<String>,
    /// Subjects that are denied even if an allow rule matches.
    pub deny: Vec<String>,
}

/// A user's permissions as rendered into the `nats-server` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// What the user may publish to.
    pub publish: SubjectRules,
    /// What the user may subscribe to.
    pub subscribe: SubjectRules,
}

impl Permissions {
    /// `true` for a role without restrictions (admin).
    pub fn is_unrestricted(&self) -> bool {
        self.publish.allow == [">"]
            && self.subscribe.allow == [">"]
            && self.publish.deny.is_empty()
            && self.subscribe.deny.is_empty()
    }
}

/// Collects subjects without duplicates, in insertion order (stable config output).
#[derive(Default)]
struct Rules(Vec<String>);

impl Rules {
    fn add(&mut self, subject: impl Into<String>) -> &mut Self {
        let subject = subject.into();
        if !self.0.contains(&subject) {
            self.0.push(subject);
        }
        self
    }

    fn extend<I: IntoIterator<Item = String>>(&mut self, subjects: I) -> &mut Self {
        for s in subjects {
            self.add(s);
        }
        self
    }
}

/// Publish subjects needed to read a stream through ephemeral / ordered consumers
/// (replay, tail) and direct message gets.
fn js_read_stream(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        // async-nats uses `CONSUMER.CREATE.<S>` for unnamed consumers and
        // `CONSUMER.CREATE.<S>.<name>[.<filter>]` for named ones (ordered consumers get a name).
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
        // Flow control replies of push (ordered) consumers.
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Denials that keep a reader of `stream` away from the consumers other services own: with the
/// generic create/next/ack/delete rules above, a reader could otherwise pull a service's
/// messages, redefine its consumer or delete ingest's `ingest-events` reader under it.
fn js_protect_durables(stream: &str) -> Vec<String> {
    crate::streams::owned_consumer_names(stream)
        .into_iter()
        .flat_map(|d| {
            [
                format!("$JS.API.CONSUMER.CREATE.{stream}.{d}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{d}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{d}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{d}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{d}"),
                format!("$JS.ACK.{stream}.{d}.>"),
            ]
        })
        .collect()
}

/// Publish subjects needed to consume from an existing durable consumer (and to create it with
/// the definition's name if it is missing).
fn js_consume_durable(stream: &str, consumer: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]
}

/// Publish subjects needed to read a stream through one named, ack-less consumer the role
/// deletes and recreates itself (ingest's readers: see `fleetbus_runtime::reader`).
fn js_own_reader(stream: &str, consumer: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
    ]
}

/// Publish subjects for an object store bucket (`OBJ_<bucket>` stream, `$O.<bucket>.>` subjects).
fn js_object_bucket(bucket: &str) -> Vec<String> {
    let stream = format!("OBJ_{bucket}");
    let mut v = js_read_stream(&stream);
    v.extend([
        // INFO, CREATE, UPDATE, PURGE, DELETE of the bucket's own stream.
        format!("$JS.API.STREAM.*.{stream}"),
        format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
        format!("$O.{bucket}.>"),
    ]);
    v
}

fn area_consumer(area: CommandArea) -> Vec<String> {
    js_consume_durable(COMMANDS_STREAM, &area.consumer_name())
}

fn permissions(role: Role) -> Permissions {
    let inbox = format!("{}.>", role.inbox_prefix());
    let mut publish = Rules::default();
    let mut subscribe = Rules::default();
    let mut publish_deny = Rules::default();
    let mut subscribe_deny = Rules::default();

    if role == Role::Admin {
        return Permissions {
            publish: SubjectRules {
                allow: vec![">".into()],
                deny: vec![],
            },
            subscribe: SubjectRules {
                allow: vec![">".into()],
                deny: vec![],
            },
        };
    }

    // Everyone who talks to JetStream needs the account info call and replies on its own inbox.
    publish.add("$JS.API.INFO");
    subscribe.add(inbox);

    match role {
        Role::Ingest => {
            publish
                .add("fleet.evt.>")
                .add("fleet.sec.>")
                // Replies to read-model queries go to the requester's inbox.
                .add("_INBOX.>");
            subscribe.add("fleet.q.>");
            publish.extend(js_own_reader(EVENTS_STREAM, crate::streams::INGEST_EVENTS));
            publish.extend(js_own_reader(
                SECRETS_STREAM,
                crate::streams::INGEST_SECRETS,
            ));
            for area in CommandArea::ALL
                .into_iter()
                .filter(|a| a.consumer_role() == Role::Ingest)
            {
                publish.extend(area_consumer(area));
            }
            for bucket in OBJECT_BUCKETS {
                publish.extend(js_object_bucket(bucket));
                subscribe.add(format!("$O.{bucket}.>"));
            }
        }
        Role::Executor => {
            publish
                .add("fleet.evt.job.>")
                .add("fleet.evt.host.>")
                .add("fleet.evt.service.>")
                .add("fleet.evt.system.>")
                .add("fleet.out.>")
                .add("fleet.q.>");
            subscribe.add("fleet.evt.>");
            publish.extend(area_consumer(CommandArea::Job));
            publish.extend(js_read_stream(OUTPUT_STREAM));
            publish_deny.extend(js_protect_durables(OUTPUT_STREAM));
            // Rebuilds its inventory, pinned keys and unfinished jobs by replaying EVENTS on start.
            publish.extend(js_read_stream(EVENTS_STREAM));
            publish_deny.extend(js_protect_durables(EVENTS_STREAM));
        }
        Role::Scheduler => {
            publish
                .add("fleet.cmd.>")
                .add("fleet.evt.schedule.>")
                .add("fleet.evt.check.>")
                .add("fleet.evt.agent.>")
                .add("fleet.evt.alert.>")
                .add("fleet.evt.system.>")
                .add("fleet.q.>");
            subscribe.add("fleet.evt.>");
            publish.extend(area_consumer(CommandArea::Schedule));
            publish.extend(area_consumer(CommandArea::Check));
            // Rebuilds its state (schedules, checks, liveness) by replaying EVENTS on start.
            publish.extend(js_read_stream(EVENTS_STREAM));
            publish_deny.extend(js_protect_durables(EVENTS_STREAM));
            // Retention of live job output.
            publish
                .add(format!("$JS.API.STREAM.INFO.{OUTPUT_STREAM}"))
                .add(format!("$JS.API.STREAM.PURGE.{OUTPUT_STREAM}"))
                .add(format!("$JS.API.STREAM.MSG.DELETE.{OUTPUT_STREAM}"));
        }
        Role::Notifier => {
            publish
                .add("fleet.evt.notification.>")
                .add("fleet.evt.system.>")
                .add("fleet.notify.>")
                .add("fleet.q.>");
            subscribe.add("fleet.evt.>");
            publish.extend(area_consumer(CommandArea::Notify));
            // Rebuilds alerts and its notification ledger by replaying EVENTS on start.
            publish.extend(js_read_stream(EVENTS_STREAM));
            publish_deny.extend(js_protect_durables(EVENTS_STREAM));
        }
        Role::Web => {
            publish.add("fleet.cmd.>").add("fleet.q.>");
            subscribe.add("fleet.evt.>").add("fleet.out.>");
            publish.extend(js_read_stream(EVENTS_STREAM));
            publish.extend(js_read_stream(OUTPUT_STREAM));
            publish_deny.extend(js_protect_durables(EVENTS_STREAM));
            publish_deny.extend(js_protect_durables(OUTPUT_STREAM));
        }
        Role::Tap => {
            subscribe.add("fleet.evt.>");
            publish.extend(js_read_stream(EVENTS_STREAM));
            publish_deny.extend(js_protect_durables(EVENTS_STREAM));
            // Belt and braces: even if an allow rule above is widened by mistake, tap never
            // writes to the bus, never sees secrets or commands, never joins query traffic.
            publish_deny
                .add("fleet.>")
                .add(format!("{}.>", crate::streams::TAP_BRIDGE_PREFIX));
            subscribe_deny
                .add(format!("{}.>", crate::streams::TAP_BRIDGE_PREFIX))
                .add("fleet.sec.>")
                .add("fleet.cmd.>")
                .add("fleet.q.>")
                .add("$O.>");
        }
        Role::Admin => {}
    }

    Permissions {
        publish: SubjectRules {
            allow: publish.0,
            deny: publish_deny.0,
        },
        subscribe: SubjectRules {
            allow: subscribe.0,
            deny: subscribe_deny.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>().ok(), Some(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tap_has_no_secret_or_command_subject() {
        let p = Role::Tap.permissions();
        for s in p.publish.allow.iter().chain(&p.subscribe.allow) {
            assert!(!s.contains("SECRETS") && !s.contains("COMMANDS"), "{s}");
            assert!(
                !s.starts_with("fleet.sec") && !s.starts_with("fleet.cmd"),
                "{s}"
            );
            assert!(!s.starts_with("fleet.q") && s != "_INBOX.>", "{s}");
        }
        assert_eq!(Role::Tap.account(), Account::Tap);
    }

    #[test]
    fn only_admin_is_unrestricted() {
        for role in Role::ALL {
            assert_eq!(
                role.permissions().is_unrestricted(),
                role == Role::Admin,
                "{role}"
            );
        }
    }
}
