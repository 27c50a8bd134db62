//! The permission matrix, checked against a real nats-server: each role can publish and
//! subscribe to what it needs and gets a permissions violation for the rest; JetStream access
//! (consume, ack, replay, purge, object store) per role.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::Client;
use bytes::Bytes;
use fleetbus_bus_config::Role;
use fleetbus_testkit::{NatsServer, ServerErrors};
use futures::StreamExt;

/// Upper bound for one probe; every probe ends as soon as it is decided (delivered or denied).
const PROBE: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    Allowed,
    Denied,
}
use Verdict::{Allowed, Denied};

/// A round trip through the server: everything sent on `client` before it has been processed.
/// (`Client::flush` only empties the write buffer.) `$JS.API.INFO` is open to every role.
async fn sync(client: &Client) -> anyhow::Result<()> {
    client.request("$JS.API.INFO", Bytes::new()).await?;
    Ok(())
}

struct Probe {
    role: Role,
    client: Client,
    errors: ServerErrors,
}

impl Probe {
    async fn new(server: &NatsServer, role: Role) -> Probe {
        let (client, errors) = server.client_with_errors(role).await;
        Probe {
            role,
            client,
            errors,
        }
    }

    /// Publish to `subject`; allowed if an admin subscriber gets it, denied on a violation.
    async fn publish(&self, admin: &Client, subject: &str) -> anyhow::Result<Verdict> {
        let mut sub = admin.subscribe(subject.to_owned()).await?;
        sync(admin).await?;
        self.client
            .publish(subject.to_owned(), Bytes::from_static(b"probe"))
            .await?;
        self.client.flush().await?;
        tokio::select! {
            m = sub.next() => {
                anyhow::ensure!(m.is_some(), "admin subscription closed");
                Ok(Allowed)
            }
            () = self.errors.wait_violation(subject) => Ok(Denied),
            () = tokio::time::sleep(PROBE) => anyhow::bail!(
                "{}: publish to {subject} neither delivered nor denied; errors: {:?}",
                self.role, self.errors.all()),
        }
    }

    /// Subscribe to `pattern`; allowed if an admin publish to `sample` arrives, denied on a
    /// violation.
    async fn subscribe(
        &self,
        admin: &Client,
        pattern: &str,
        sample: &str,
    ) -> anyhow::Result<Verdict> {
        let mut sub = self.client.subscribe(pattern.to_owned()).await?;
        sync(&self.client).await?;
        admin
            .publish(sample.to_owned(), Bytes::from_static(b"probe"))
            .await?;
        admin.flush().await?;
        tokio::select! {
            m = sub.next() => {
                anyhow::ensure!(m.is_some(), "subscription closed");
                Ok(Allowed)
            }
            () = self.errors.wait_violation(pattern) => Ok(Denied),
            () = tokio::time::sleep(PROBE) => anyhow::bail!(
                "{}: subscribe to {pattern} neither received nor denied; errors: {:?}",
                self.role, self.errors.all()),
        }
    }

    /// A raw JetStream API request; `Ok(Err(..))` for a permissions violation, otherwise the
    /// server's JSON answer (which may itself be an API error).
    async fn js_api(
        &self,
        subject: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<Result<serde_json::Value, Verdict>> {
        let req = self
            .client
            .request(subject.to_owned(), Bytes::from(serde_json::to_vec(&body)?));
        tokio::select! {
            r = req => {
                let msg = r?;
                Ok(Ok(serde_json::from_slice(&msg.payload)?))
            }
            () = self.errors.wait_violation(subject) => Ok(Err(Denied)),
            () = tokio::time::sleep(PROBE) => anyhow::bail!(
                "{}: request to {subject} neither answered nor denied", self.role),
        }
    }

    /// Run a JetStream client call; denied if the server reports a violation on `subject`
    /// first. Returns the call's result otherwise.
    async fn js_call<T, E: std::fmt::Display>(
        &self,
        subject: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> anyhow::Result<Result<T, String>> {
        tokio::select! {
            r = call => Ok(r.map_err(|e| e.to_string())),
            () = self.errors.wait_violation(subject) => Ok(Err(format!("denied: {subject}"))),
            () = tokio::time::sleep(PROBE) => anyhow::bail!(
                "{}: call via {subject} neither finished nor denied", self.role),
        }
    }
}

/// Publish permissions of every role.
#[tokio::test]
async fn publish_matrix() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let admin = server.client(Role::Admin).await;
    let cases: &[(Role, &str, Verdict)] = &[
        (Role::Ingest, "fleet.evt.host.h1.registered", Allowed),
        (Role::Ingest, "fleet.sec.user.u1.password_changed", Allowed),
        (Role::Ingest, "fleet.cmd.host.register", Denied),
        (Role::Ingest, "fleet.out.job.j1", Denied),
        (Role::Executor, "fleet.evt.job.j1.started", Allowed),
        (Role::Executor, "fleet.evt.host.h1.reachable", Allowed),
        (Role::Executor, "fleet.evt.service.s1.restarted", Allowed),
        (Role::Executor, "fleet.evt.system.executor.started", Allowed),
        (Role::Executor, "fleet.out.job.j1", Allowed),
        (Role::Executor, "fleet.q.status", Allowed),
        (Role::Executor, "fleet.evt.alert.a1.raised", Denied),
        (Role::Executor, "fleet.evt.schedule.s1.fired", Denied),
        (Role::Executor, "fleet.sec.user.u1.password_changed", Denied),
        (Role::Executor, "fleet.cmd.job.run", Denied),
        (Role::Scheduler, "fleet.cmd.job.run", Allowed),
        (Role::Scheduler, "fleet.evt.schedule.s1.fired", Allowed),
        (
            Role::Scheduler,
            "fleet.evt.check.c1.deadline_missed",
            Allowed,
        ),
        (Role::Scheduler, "fleet.evt.agent.a1.went_stale", Allowed),
        (Role::Scheduler, "fleet.evt.alert.a1.raised", Allowed),
        (
            Role::Scheduler,
            "fleet.evt.system.scheduler.started",
            Allowed,
        ),
        (Role::Scheduler, "fleet.evt.job.j1.started", Denied),
        (Role::Scheduler, "fleet.evt.host.h1.registered", Denied),
        (Role::Scheduler, "fleet.out.job.j1", Denied),
        (Role::Notifier, "fleet.evt.notification.n1.sent", Allowed),
        (Role::Notifier, "fleet.notify.webhook.w1", Allowed),
        (Role::Notifier, "fleet.evt.alert.a1.raised", Denied),
        (Role::Notifier, "fleet.cmd.notify.test", Denied),
        (Role::Web, "fleet.cmd.job.run", Allowed),
        (Role::Web, "fleet.q.status", Allowed),
        (Role::Web, "fleet.evt.host.h1.registered", Denied),
        (Role::Web, "fleet.sec.user.u1.password_changed", Denied),
        (Role::Web, "fleet.out.job.j1", Denied),
        (Role::Admin, "fleet.sec.user.u1.password_changed", Allowed),
        (Role::Admin, "fleet.cmd.host.register", Allowed),
        (Role::Tap, "fleet.evt.x.y.z", Denied),
        (Role::Tap, "fleet.cmd.x", Denied),
        (Role::Tap, "fleet.sec.x.y.z", Denied),
        (Role::Tap, "fleet.q.status", Denied),
        (Role::Tap, "fleet.out.job.j1", Denied),
        (Role::Tap, "$JS.API.STREAM.DELETE.EVENTS", Denied),
        // The account bridges: only the mirror and admin may use them.
        (
            Role::Tap,
            "fleetbus-bridge.API.CONSUMER.CREATE.EVENTS",
            Denied,
        ),
        (Role::Web, "fleetbus-tap.API.STREAM.DELETE.EVENTS", Denied),
        (Role::Ingest, "fleetbus-tap.API.STREAM.INFO.EVENTS", Denied),
    ];
    let mut failures = Vec::new();
    for role in Role::ALL {
        let probe = Probe::new(&server, role).await;
        for (_, subject, expected) in cases.iter().filter(|c| c.0 == role) {
            let got = probe.publish(&admin, subject).await?;
            if got != *expected {
                failures.push(format!(
                    "{role} publish {subject}: expected {expected:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Subscribe permissions of every role.
#[tokio::test]
async fn subscribe_matrix() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let admin = server.client(Role::Admin).await;
    let evt = ("fleet.evt.>", "fleet.evt.host.h1.registered");
    let sec = ("fleet.sec.>", "fleet.sec.user.u1.password_changed");
    let cmd = ("fleet.cmd.>", "fleet.cmd.host.register");
    let q = ("fleet.q.>", "fleet.q.status");
    let out = ("fleet.out.>", "fleet.out.job.j1");
    let all_inboxes = ("_INBOX.>", "_INBOX.ingest.abc");
    let ingest_inbox = ("_INBOX.ingest.>", "_INBOX.ingest.abc");
    let everything = (">", "fleet.sec.user.u1.password_changed");
    let js_api = (
        "$JS.API.>",
        "$JS.API.CONSUMER.MSG.NEXT.SECRETS.ingest-secrets",
    );
    let cases: Vec<(Role, (&str, &str), Verdict)> = vec![
        (Role::Ingest, q, Allowed),
        (Role::Ingest, ingest_inbox, Allowed),
        (Role::Ingest, evt, Denied),
        (Role::Ingest, cmd, Denied),
        (Role::Ingest, all_inboxes, Denied),
        (Role::Executor, evt, Allowed),
        (
            Role::Executor,
            ("_INBOX.executor.>", "_INBOX.executor.x"),
            Allowed,
        ),
        (Role::Executor, sec, Denied),
        (Role::Executor, cmd, Denied),
        (Role::Executor, q, Denied),
        (Role::Executor, ingest_inbox, Denied),
        (Role::Scheduler, evt, Allowed),
        (Role::Scheduler, sec, Denied),
        (Role::Scheduler, cmd, Denied),
        (Role::Notifier, evt, Allowed),
        (Role::Notifier, sec, Denied),
        (Role::Notifier, q, Denied),
        (Role::Web, evt, Allowed),
        (Role::Web, out, Allowed),
        (Role::Web, sec, Denied),
        (Role::Web, cmd, Denied),
        (Role::Web, q, Denied),
        (Role::Admin, sec, Allowed),
        (Role::Admin, everything, Allowed),
        (Role::Tap, evt, Allowed),
        (
            Role::Tap,
            ("fleet.evt.host.>", "fleet.evt.host.h1.registered"),
            Allowed,
        ),
        (Role::Tap, sec, Denied),
        (Role::Tap, cmd, Denied),
        (Role::Tap, q, Denied),
        (Role::Tap, out, Denied),
        (Role::Tap, all_inboxes, Denied),
        (Role::Tap, ingest_inbox, Denied),
        (Role::Tap, everything, Denied),
        (Role::Tap, js_api, Denied),
        (Role::Tap, ("$O.>", "$O.snapshots.M.x"), Denied),
    ];
    let mut failures = Vec::new();
    for role in Role::ALL {
        let probe = Probe::new(&server, role).await;
        for (_, (pattern, sample), expected) in cases.iter().filter(|c| c.0 == role) {
            let got = probe.subscribe(&admin, pattern, sample).await?;
            if got != *expected {
                failures.push(format!(
                    "{role} subscribe {pattern}: expected {expected:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

async fn publish_events(server: &NatsServer, n: usize) -> anyhow::Result<()> {
    let js = jetstream::new(server.client(Role::Ingest).await);
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("evt-{i}").as_str());
        js.publish_with_headers(
            format!("fleet.evt.host.h{i}.registered"),
            headers,
            Bytes::from(format!("event {i}")),
        )
        .await?
        .await?;
    }
    Ok(())
}

/// Tap replays EVENTS from sequence 1 with ordered consumers (pull and push) and direct gets.
#[tokio::test]
async fn tap_replays_events_from_the_start() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    publish_events(&server, 5).await?;
    assert!(server.wait_tap_mirror().await, "mirror did not catch up");

    let (client, errors) = server.client_with_errors(Role::Tap).await;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("EVENTS").await?;
    // Tap sees its account's mirror, with the fleet's sequence numbers.
    let info = stream.info().await?;
    assert!(
        info.config.mirror.is_some(),
        "tap's EVENTS should be the mirror"
    );
    assert_eq!(info.state.first_sequence, 1);
    assert_eq!(info.state.last_sequence, 5);

    // Ordered pull consumer (what fleetctl replay uses).
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: 1 },
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    for i in 0..5u64 {
        let msg = tokio::time::timeout(PROBE, messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(info.stream_sequence, i + 1);
        assert_eq!(
            msg.subject.as_str(),
            format!("fleet.evt.host.h{i}.registered")
        );
    }

    // Ordered push consumer on the tap's own inbox.
    let push = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut pushed = push.messages().await?;
    for i in 0..5u64 {
        let msg = tokio::time::timeout(PROBE, pushed.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        assert_eq!(
            msg.info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence,
            i + 1
        );
    }

    // Point reads.
    let first = stream.get_raw_message(1).await?;
    assert_eq!(first.subject.as_str(), "fleet.evt.host.h0.registered");
    let direct = stream.direct_get(2).await?;
    assert_eq!(direct.subject.as_str(), "fleet.evt.host.h1.registered");
    assert!(
        errors.all().is_empty(),
        "tap replay hit errors: {:?}",
        errors.all()
    );
    Ok(())
}

/// Tap cannot write, cannot see SECRETS or COMMANDS, cannot touch ingest's durable consumer.
#[tokio::test]
async fn tap_is_denied_everything_else() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    publish_events(&server, 2).await?;
    let tap = Probe::new(&server, Role::Tap).await;
    let js = jetstream::new(tap.client.clone());

    // Writes through JetStream.
    let r = tap
        .js_call("fleet.evt.x.y.z", async {
            js.publish("fleet.evt.x.y.z", Bytes::from_static(b"forged"))
                .await?
                .await
        })
        .await?;
    assert!(r.is_err(), "tap published an event");
    let r = tap
        .js_call("fleet.cmd.x", async {
            js.publish("fleet.cmd.x", Bytes::from_static(b"forged"))
                .await?
                .await
        })
        .await?;
    assert!(r.is_err(), "tap published a command");

    // Reads of SECRETS and COMMANDS.
    let r = tap
        .js_call("$JS.API.STREAM.INFO.SECRETS", js.get_stream("SECRETS"))
        .await?;
    assert!(r.is_err(), "tap read SECRETS info");
    let r = tap
        .js_api(
            "$JS.API.CONSUMER.CREATE.SECRETS",
            serde_json::json!({"stream_name": "SECRETS", "config": {"ack_policy": "none", "deliver_policy": "all"}}),
        )
        .await?;
    assert_eq!(r, Err(Denied), "tap created a consumer on SECRETS");
    let r = tap
        .js_api(
            "$JS.API.CONSUMER.CREATE.COMMANDS",
            serde_json::json!({"stream_name": "COMMANDS", "config": {"ack_policy": "explicit", "deliver_policy": "all"}}),
        )
        .await?;
    assert_eq!(r, Err(Denied), "tap created a consumer on COMMANDS");
    let r = tap
        .js_api(
            "$JS.API.CONSUMER.MSG.NEXT.COMMANDS.cmd-host",
            serde_json::json!({"batch": 1, "no_wait": true}),
        )
        .await?;
    assert_eq!(r, Err(Denied), "tap pulled commands");
    let r = tap
        .js_api(
            "$JS.API.STREAM.MSG.GET.SECRETS",
            serde_json::json!({"seq": 1}),
        )
        .await?;
    assert_eq!(r, Err(Denied), "tap read a secret");

    // ingest's durable consumer on EVENTS: no pulling, acking, deleting or redefining it.
    for subject in [
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.ingest-events",
        "$JS.API.CONSUMER.DELETE.EVENTS.ingest-events",
        "$JS.API.CONSUMER.CREATE.EVENTS.ingest-events",
        "$JS.API.CONSUMER.CREATE.EVENTS.ingest-events.fleet.evt.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.ingest-events",
    ] {
        let r = tap
            .js_api(
                subject,
                serde_json::json!({"stream_name": "EVENTS", "batch": 1, "no_wait": true,
                    "config": {"durable_name": "ingest-events", "ack_policy": "none", "max_deliver": 1}}),
            )
            .await?;
        assert_eq!(r, Err(Denied), "tap used {subject}");
    }
    // The unnamed create form with ingest's durable name in the body must not redefine it.
    let r = tap
        .js_api(
            "$JS.API.CONSUMER.CREATE.EVENTS",
            serde_json::json!({"stream_name": "EVENTS",
                "config": {"durable_name": "ingest-events", "ack_policy": "none", "max_deliver": 1}}),
        )
        .await?;
    assert!(
        matches!(&r, Ok(v) if v.get("error").is_some()),
        "unnamed create with a durable name must be refused by the server: {r:?}"
    );
    // The tap lives in its own account: FLEET's EVENTS got no consumer from it.
    let admin_js = jetstream::new(server.client(Role::Admin).await);
    let fleet_events = admin_js.get_stream("EVENTS").await?;
    assert!(
        fleet_events.consumer_info("ingest-events").await.is_err(),
        "a consumer named ingest-events appeared on FLEET's EVENTS"
    );

    // Nothing the tap tried ended up in a stream.
    let events = admin_js
        .get_stream("EVENTS")
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(events, 2);
    let commands = admin_js
        .get_stream("COMMANDS")
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(commands, 0);
    Ok(())
}

/// Ingest reads EVENTS through its own named, ack-less reader; the other services that read
/// EVENTS (executor, scheduler, notifier, web) can neither pull from it, redefine it nor delete
/// it under ingest.
#[tokio::test]
async fn other_readers_cannot_touch_ingests_reader() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    publish_events(&server, 2).await?;
    let ingest = jetstream::new(server.client(Role::Ingest).await);
    ingest
        .get_stream("EVENTS")
        .await?
        .create_consumer(consumer::pull::Config {
            name: Some("ingest-events".into()),
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    for role in [Role::Executor, Role::Scheduler, Role::Notifier, Role::Web] {
        let probe = Probe::new(&server, role).await;
        for subject in [
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.ingest-events",
            "$JS.API.CONSUMER.DELETE.EVENTS.ingest-events",
            "$JS.API.CONSUMER.CREATE.EVENTS.ingest-events",
            "$JS.API.CONSUMER.CREATE.EVENTS.ingest-events.fleet.evt.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.ingest-events",
        ] {
            let r = probe
                .js_api(
                    subject,
                    serde_json::json!({"stream_name": "EVENTS", "batch": 1, "no_wait": true,
                        "config": {"name": "ingest-events", "ack_policy": "none",
                            "deliver_policy": "new"}}),
                )
                .await?;
            assert_eq!(r, Err(Denied), "{role} used {subject}");
        }
    }
    let admin_js = jetstream::new(server.client(Role::Admin).await);
    let info = admin_js
        .get_stream("EVENTS")
        .await?
        .consumer_info("ingest-events")
        .await?;
    assert_eq!(info.config.ack_policy, consumer::AckPolicy::None);
    assert_eq!(info.config.deliver_policy, consumer::DeliverPolicy::All);
    assert_eq!(info.num_pending, 2, "someone consumed ingest's events");
    Ok(())
}

/// Executor consumes and acks its own command area, and no other.
#[tokio::test]
async fn services_consume_only_their_command_areas() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    let web = jetstream::new(server.client(Role::Web).await);
    for (subject, id) in [
        ("fleet.cmd.job.run", "c1"),
        ("fleet.cmd.host.register", "c2"),
        ("fleet.cmd.schedule.create", "c3"),
        ("fleet.cmd.notify.test", "c4"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        web.publish_with_headers(subject, headers, Bytes::from_static(b"cmd"))
            .await?
            .await?;
    }

    for (role, own, foreign) in [
        (Role::Executor, "cmd-job", "cmd-host"),
        (Role::Ingest, "cmd-host", "cmd-job"),
        (Role::Scheduler, "cmd-schedule", "cmd-notify"),
        (Role::Notifier, "cmd-notify", "cmd-schedule"),
    ] {
        let probe = Probe::new(&server, role).await;
        let js = jetstream::new(probe.client.clone());
        let stream = js.get_stream("COMMANDS").await?;
        let c: consumer::PullConsumer = stream
            .get_consumer(own)
            .await
            .map_err(|e| anyhow::anyhow!("{role} get {own}: {e}"))?;
        let mut batch = c.fetch().max_messages(1).expires(PROBE).messages().await?;
        let msg = batch
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("{role}: no command on {own}"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        msg.double_ack()
            .await
            .map_err(|e| anyhow::anyhow!("{role}: ack on {own}: {e}"))?;

        let subject = format!("$JS.API.CONSUMER.INFO.COMMANDS.{foreign}");
        let r = probe
            .js_call(&subject, stream.consumer_info(foreign))
            .await?;
        assert!(r.is_err(), "{role} read {foreign}");
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.COMMANDS.{foreign}");
        let r = probe
            .js_api(&subject, serde_json::json!({"batch": 1, "no_wait": true}))
            .await?;
        assert_eq!(r, Err(Denied), "{role} pulled from {foreign}");
    }
    // The four commands were acked by their consumers: the work queue is empty.
    let admin_js = jetstream::new(server.client(Role::Admin).await);
    let left = admin_js
        .get_stream("COMMANDS")
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(left, 0);
    Ok(())
}

/// Ingest consumes EVENTS and SECRETS through its durables and answers queries; executor and
/// web publish into streams with acks; scheduler may purge OUTPUT, web may not.
#[tokio::test]
async fn stream_roles_work_end_to_end() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    let executor = jetstream::new(server.client(Role::Executor).await);
    executor
        .publish("fleet.evt.job.j1.started", Bytes::from_static(b"e"))
        .await?
        .await?;
    executor
        .publish("fleet.out.job.j1", Bytes::from_static(b"line 1\n"))
        .await?
        .await?;
    let ingest_client = server.client(Role::Ingest).await;
    let ingest = jetstream::new(ingest_client.clone());
    ingest
        .publish(
            "fleet.sec.user.u1.password_changed",
            Bytes::from_static(b"s"),
        )
        .await?
        .await?;

    // Ingest reads both streams through its own ack-less readers, deleted and recreated at
    // each start.
    for (stream, reader, subject) in [
        ("EVENTS", "ingest-events", "fleet.evt.job.j1.started"),
        (
            "SECRETS",
            "ingest-secrets",
            "fleet.sec.user.u1.password_changed",
        ),
    ] {
        let s = ingest.get_stream(stream).await?;
        let _ = s.delete_consumer(reader).await;
        let mut c: consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                name: Some(reader.into()),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("create {reader}: {e}"))?;
        let _ = c
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("info {reader}: {e}"))?;
        let mut batch = c.fetch().max_messages(10).expires(PROBE).messages().await?;
        let msg = batch
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("nothing on {reader}"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(msg.subject.as_str(), subject);
        s.delete_consumer(reader)
            .await
            .map_err(|e| anyhow::anyhow!("delete {reader}: {e}"))?;
    }

    // Read-model query: web asks, ingest answers.
    let mut queries = ingest_client.subscribe("fleet.q.>").await?;
    ingest_client.flush().await?;
    let responder = ingest_client.clone();
    let answer = tokio::spawn(async move {
        if let Some(q) = queries.next().await {
            if let Some(reply) = q.reply {
                let _ = responder
                    .publish(reply, Bytes::from_static(b"status"))
                    .await;
                let _ = responder.flush().await;
            }
        }
    });
    let web_client = server.client(Role::Web).await;
    let reply = web_client
        .request("fleet.q.status", Bytes::from_static(b"{}"))
        .await?;
    assert_eq!(reply.payload.as_ref(), b"status");
    answer.await?;

    // Web reads job output through an ordered consumer.
    let web_js = jetstream::new(web_client.clone());
    let out = web_js
        .get_stream("OUTPUT")
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: "fleet.out.job.j1".into(),
            ..Default::default()
        })
        .await?;
    let mut lines = out.messages().await?;
    let line = tokio::time::timeout(PROBE, lines.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no output"))??;
    assert_eq!(line.payload.as_ref(), b"line 1\n");

    // Retention: web may not purge OUTPUT, the scheduler may.
    let web = Probe::new(&server, Role::Web).await;
    let r = web
        .js_api("$JS.API.STREAM.PURGE.OUTPUT", serde_json::json!({}))
        .await?;
    assert_eq!(r, Err(Denied));
    let scheduler = jetstream::new(server.client(Role::Scheduler).await);
    let purged = scheduler.get_stream("OUTPUT").await?.purge().await?;
    assert_eq!(purged.purged, 1);
    Ok(())
}

/// Ingest keeps snapshots in an object store bucket; tap cannot reach it.
#[tokio::test]
async fn ingest_object_store() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let js = jetstream::new(server.client(Role::Ingest).await);
    let bucket = js
        .create_object_store(jetstream::object_store::Config {
            bucket: "snapshots".into(),
            ..Default::default()
        })
        .await?;
    let data = vec![7u8; 300_000];
    bucket
        .put("host-1/config.tar", &mut data.as_slice())
        .await?;
    let bucket = js.get_object_store("snapshots").await?;
    let mut obj = bucket.get("host-1/config.tar").await?;
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut back).await?;
    assert_eq!(back, data);

    let tap = Probe::new(&server, Role::Tap).await;
    let tap_js = jetstream::new(tap.client.clone());
    let r = tap
        .js_call(
            "$JS.API.STREAM.INFO.OBJ_snapshots",
            tap_js.get_object_store("snapshots"),
        )
        .await?;
    assert!(r.is_err(), "tap opened the snapshots bucket");
    Ok(())
}

/// A push consumer delivers with the server's rights, not the creator's. With tap in the
/// services' account this test fails: a consumer on EVENTS aimed at `fleet.cmd.host.register`
/// made the server publish events into the COMMANDS work queue. In its own account (with a
/// mirror of EVENTS) whatever tap's consumers deliver stays in `TAP`.
#[tokio::test]
async fn tap_cannot_redirect_deliveries() -> anyhow::Result<()> {
    let server = NatsServer::start();
    server.ensure_streams().await;
    publish_events(&server, 2).await?;
    assert!(server.wait_tap_mirror().await, "mirror did not catch up");
    let tap = Probe::new(&server, Role::Tap).await;
    let admin = server.client(Role::Admin).await;
    let targets = [
        "fleet.cmd.host.register",
        "_INBOX.ingest.stolen",
        "fleet.q.status",
        "fleet.evt.host.h9.forged",
        "fleet.notify.x",
    ];
    let mut watchers = Vec::new();
    for target in targets {
        // Interest in the services' account, so a leaked delivery would go through.
        watchers.push(admin.subscribe(target.to_owned()).await?);
    }
    sync(&admin).await?;
    let create = |deliver: &str| {
        serde_json::json!({"stream_name": "EVENTS",
            "config": {"deliver_subject": deliver, "ack_policy": "none", "deliver_policy": "all"}})
    };
    for target in targets {
        let r = tap
            .js_api("$JS.API.CONSUMER.CREATE.EVENTS", create(target))
            .await?;
        let created = r.map(|v| v.get("error").is_none()).unwrap_or(false);
        assert!(created, "consumer on tap's own mirror should be allowed");
    }
    // Control: a consumer aimed at tap's own inbox delivers both events; by then the others
    // have had the same chance to deliver.
    let mut control = tap.client.subscribe("_INBOX.tap.control").await?;
    sync(&tap.client).await?;
    tap.js_api(
        "$JS.API.CONSUMER.CREATE.EVENTS",
        create("_INBOX.tap.control"),
    )
    .await?
    .map_err(|v| anyhow::anyhow!("control consumer: {v:?}"))?;
    for _ in 0..2 {
        tokio::time::timeout(PROBE, control.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("control closed"))?;
    }
    sync(&admin).await?;
    for (target, watcher) in targets.iter().zip(watchers.iter_mut()) {
        let leaked = futures::FutureExt::now_or_never(watcher.next());
        assert!(
            leaked.is_none(),
            "tap's consumer delivered into FLEET's {target}"
        );
    }
    let admin_js = jetstream::new(admin.clone());
    let commands = admin_js
        .get_stream("COMMANDS")
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(commands, 0, "tap redirected events into COMMANDS");
    Ok(())
}
