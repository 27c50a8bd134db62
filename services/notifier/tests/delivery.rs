//! The notifier against a real nats-server and real HTTP receivers.

mod common;

use std::time::Duration;

use common::*;
use fleetbus_schemas::commands::notify::{MuteSpec, MuteWindow, NotifyCommand};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::notification::{Phase, SuppressedBy};
use fleetbus_schemas::events::{AlertEvent, NotificationEvent};
use fleetbus_schemas::{Actor, AlertId, UserRole};
use futures::StreamExt;

#[tokio::test]
async fn webhook_is_signed_carries_the_idempotency_key_and_resolves() {
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = bus.config();
    config.secrets_file = Some(write_secrets(dir.path(), &[("ops-hmac", HMAC_KEY)]));
    config.channels = vec![webhook(
        "ops-hook",
        &rx.url("hook"),
        Some("ops-hmac"),
        3,
        2000,
    )];
    config.recipients = vec![operator("alice")];
    config.rules = vec![rule("page-ops", &["alice"], &["ops-hook"])];
    let (stop, task) = spawn_notifier(config);

    bus.publish(host_registered("web-1", &["web"])).await;
    let opened = bus
        .publish(service("web-1", "nginx", ServiceState::Failed))
        .await;
    let hits = rx.wait_accepted("hook", 1).await;
    let hit = &hits[0];
    let body = hit.json();
    assert_eq!(body["phase"], "firing");
    assert_eq!(
        body["alert"]["id"],
        opened.id.to_string(),
        "alert id = opening event id"
    );
    assert_eq!(body["alert"]["host"], "web-1");
    assert_eq!(body["rule"], "page-ops");
    let sig = hit
        .header("x-fleetbus-signature")
        .expect("signature header");
    assert!(
        signature_ok(HMAC_KEY, &hit.body, &sig),
        "signature {sig} does not verify"
    );
    assert!(!signature_ok("wrong-key", &hit.body, &sig));
    let key = hit.header("idempotency-key").expect("idempotency key");
    assert_eq!(body["id"], key.as_str());
    bus.wait_log("sent event", |log| {
        log.iter().any(|e| matches!(e, NotificationEvent::Sent { notification, attempts: 1, .. } if notification.id == key))
    })
    .await;

    bus.publish(service("web-1", "nginx", ServiceState::Running))
        .await;
    let hits = rx.wait_accepted("hook", 2).await;
    let resolved = hits[1].json();
    assert_eq!(resolved["phase"], "resolved");
    assert_ne!(
        hits[1].header("idempotency-key"),
        Some(key),
        "resolved has its own id"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn receivers_answering_500_429_or_timing_out_get_retries_and_a_failed_event_at_the_end() {
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    let mut config = bus.config();
    config.channels = vec![
        webhook("flaky", &rx.url("flaky"), None, 5, 300),
        webhook("broken", &rx.url("broken"), None, 3, 300),
    ];
    config.recipients = vec![operator("alice")];
    config.rules = vec![rule("r-flaky", &["alice"], &["flaky"])];
    let (stop, task) = spawn_notifier(config);

    // 500, then 429 with Retry-After: 0, then a timeout, then 200.
    rx.script(&[
        Reply::Status(500),
        Reply::RetryAfter(429, 0),
        Reply::Sleep(Duration::from_millis(1500)),
    ]);
    bus.publish(service("web-1", "nginx", ServiceState::Failed))
        .await;
    let ok = rx.wait_accepted("flaky", 1).await;
    let key = ok[0].header("idempotency-key").unwrap();
    let attempts: Vec<_> = rx
        .hits()
        .into_iter()
        .filter(|h| h.path == "flaky")
        .collect();
    assert_eq!(
        attempts.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![500, 429, 0, 200]
    );
    assert!(
        attempts
            .iter()
            .all(|h| h.header("idempotency-key").as_deref() == Some(key.as_str())),
        "every retry carries the same Idempotency-Key"
    );
    bus.wait_log("sent after 4 attempts", |log| {
        log.iter()
            .any(|e| matches!(e, NotificationEvent::Sent { attempts: 4, .. }))
    })
    .await;

    // A receiver that always fails: exactly max_attempts tries, then `failed` with the reason.
    stop.cancel();
    task.await.unwrap();
    let mut config = bus.config();
    config.channels = vec![webhook("broken", &rx.url("broken"), None, 3, 300)];
    config.recipients = vec![operator("alice")];
    // Only web-2: the replay at start sees web-1's alert too, and a static rule applies to it.
    let mut r = rule("r-broken", &["alice"], &["broken"]);
    r.matches.hosts = vec!["web-2".parse().unwrap()];
    config.rules = vec![r];
    rx.script(&[Reply::Status(503), Reply::Status(503), Reply::Status(500)]);
    let (stop, task) = spawn_notifier(config);
    bus.publish(service("web-2", "nginx", ServiceState::Failed))
        .await;
    bus.wait_log("failed event", |log| {
        log.iter().any(|e| matches!(e, NotificationEvent::Failed { attempts: 3, reason, .. } if reason == "HTTP 500"))
    })
    .await;
    assert_eq!(rx.hits().iter().filter(|h| h.path == "broken").count(), 3);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn malformed_rules_are_rejected_with_the_reason_and_valid_ones_route_alerts() {
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    let (stop, task) = spawn_notifier(bus.config());

    let bad = bus
        .command(
            admin(),
            NotifyCommand::SetRule(rule("empty", &[], &["hook"])),
        )
        .await;
    let unknown = bus
        .command(
            admin(),
            NotifyCommand::SetRule(rule("r1", &["alice"], &["hook"])),
        )
        .await;
    let viewer = bus
        .command(
            Actor::user("vic", UserRole::Viewer),
            NotifyCommand::SetChannel(webhook("hook", &rx.url("cmd"), None, 2, 1000)),
        )
        .await;
    let ok = fleetbus_testkit::wait_for(
        || {
            let n = bus.rejections().len();
            async move { n >= 3 }
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(ok, "rejections: {:?}", bus.rejections());
    let reason = |id| {
        bus.rejections()
            .into_iter()
            .find(|(c, _)| *c == Some(id))
            .map(|(_, m)| m)
            .unwrap_or_default()
    };
    assert!(
        reason(bad.id).contains("recipients is empty"),
        "{}",
        reason(bad.id)
    );
    assert!(
        reason(unknown.id).contains("recipient alice does not exist"),
        "{}",
        reason(unknown.id)
    );
    assert!(
        reason(viewer.id).contains("needs Admin"),
        "{}",
        reason(viewer.id)
    );

    // Channel, recipient, rule by command: each one is a fact, then an alert is routed by them.
    bus.command(
        admin(),
        NotifyCommand::SetChannel(webhook("hook", &rx.url("cmd"), None, 2, 1000)),
    )
    .await;
    bus.command(admin(), NotifyCommand::SetRecipient(operator("alice")))
        .await;
    let good = bus
        .command(
            admin(),
            NotifyCommand::SetRule(rule("r1", &["alice"], &["hook"])),
        )
        .await;
    bus.wait_log("rule_set", |log| {
        log.iter()
            .any(|e| matches!(e, NotificationEvent::RuleSet(r) if r.rule.as_str() == "r1"))
    })
    .await;
    assert!(bus.rejections().iter().all(|(c, _)| *c != Some(good.id)));
    bus.publish(service("db-1", "pg", ServiceState::Failed))
        .await;
    let hits = rx.wait_accepted("cmd", 1).await;
    assert_eq!(hits[0].json()["alert"]["service"], "pg");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn mutes_and_dependencies_are_recorded_as_suppressed_and_nats_channel_publishes() {
    let bus = Bus::start().await;
    let mut config = bus.config();
    config.channels = vec![fleetbus_schemas::commands::notify::ChannelSpec {
        channel: "ops-bus".parse().unwrap(),
        kind: fleetbus_schemas::commands::notify::ChannelKind::Nats,
        timeout_ms: 1000,
        max_attempts: 2,
    }];
    config.recipients = vec![operator("alice")];
    config.rules = vec![rule("all", &["alice"], &["ops-bus"])];
    let mut sub = bus.admin.subscribe("fleet.notify.ops-bus").await.unwrap();
    bus.admin.flush().await.unwrap();
    let (stop, task) = spawn_notifier(config);

    bus.command(
        Actor::user("olga", UserRole::Operator),
        NotifyCommand::SetMute(MuteSpec {
            mute: "deploy-db".into(),
            hosts: vec!["db-1".parse().unwrap()],
            services: vec![],
            tags: vec![],
            window: MuteWindow::AdHoc {
                from: None,
                until: chrono::Utc::now() + chrono::Duration::hours(1),
            },
            reason: "deploying".into(),
        }),
    )
    .await;
    bus.wait_log("mute_set", |log| {
        log.iter()
            .any(|e| matches!(e, NotificationEvent::MuteSet(_)))
    })
    .await;
    bus.publish(service("db-1", "pg", ServiceState::Failed))
        .await;
    bus.wait_log("suppressed by mute", |log| {
        log.iter().any(|e| matches!(e, NotificationEvent::Suppressed { by: SuppressedBy::Mute { mute, .. }, .. } if mute == "deploy-db"))
    })
    .await;

    // A host that is down suppresses its services' alerts; the host alert itself goes out on NATS.
    bus.publish(agent_report("web-1")).await;
    let down = bus
        .publish(fleetbus_schemas::Event::Agent(
            fleetbus_schemas::events::AgentEvent::WentDown {
                agent: "web-1".parse().unwrap(),
                last_seen: chrono::Utc::now(),
            },
        ))
        .await;
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("nats notification")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body["alert"]["kind"], "agent_down");
    let key = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Idempotency-Key"))
        .map(|v| v.to_string());
    assert_eq!(key.as_deref(), body["id"].as_str());
    bus.publish(service("web-1", "nginx", ServiceState::Failed))
        .await;
    let host_alert = AlertId(down.id.0);
    bus.wait_log("suppressed by dependency", |log| {
        log.iter().any(|e| matches!(e, NotificationEvent::Suppressed { by: SuppressedBy::Dependency { host_alert: h }, .. } if *h == host_alert))
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn unacknowledged_alerts_escalate_acknowledged_ones_do_not_and_bursts_become_a_digest() {
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    let mut config = bus.config();
    config.channels = vec![
        webhook("first", &rx.url("first"), None, 2, 1000),
        webhook("second", &rx.url("second"), None, 2, 1000),
    ];
    config.recipients = vec![operator("alice"), operator("bob")];
    let mut r = rule("esc", &["alice"], &["first"]);
    r.matches.kinds = vec!["service_down".into()];
    r.escalation = vec![fleetbus_schemas::commands::notify::EscalationStep {
        after_s: 1,
        recipients: vec!["bob".parse().unwrap()],
        channels: vec!["second".parse().unwrap()],
    }];
    config.rules = vec![r];
    let (stop, task) = spawn_notifier(config);

    let a = bus
        .publish(service("web-1", "nginx", ServiceState::Failed))
        .await;
    let b = bus
        .publish(service("web-2", "nginx", ServiceState::Failed))
        .await;
    rx.wait_accepted("first", 2).await;
    bus.publish(fleetbus_schemas::Event::Alert(AlertEvent::Acknowledged {
        alert: AlertId(b.id.0),
        note: "on it".into(),
    }))
    .await;
    let second = rx.wait_accepted("second", 1).await;
    let body = second[0].json();
    assert_eq!(body["step"], 1);
    assert_eq!(body["recipient"]["id"], "bob");
    assert_eq!(
        body["alert"]["id"],
        a.id.to_string(),
        "only the unacknowledged alert escalates"
    );
    // Give a wrongly scheduled second escalation time to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.accepted("second").len(), 1);
    stop.cancel();
    task.await.unwrap();

    // Burst grouping: 2 individual notifications per window, the rest in one digest.
    let mut config = bus.config();
    config.digest.threshold = 2;
    config.digest.window_ms = 700;
    config.channels = vec![webhook("burst", &rx.url("burst"), None, 2, 1000)];
    config.recipients = vec![operator("carol")];
    let mut r = rule("burst", &["carol"], &["burst"]);
    r.matches.kinds = vec!["disk_full".into()];
    config.rules = vec![r];
    let (stop, task) = spawn_notifier(config);
    for i in 0..6 {
        bus.publish(fleetbus_schemas::Event::Agent(
            fleetbus_schemas::events::AgentEvent::Raised(
                fleetbus_schemas::events::agent::AgentNotice {
                    agent: format!("db-{i}").parse().unwrap(),
                    host: format!("db-{i}").parse().unwrap(),
                    kind: fleetbus_schemas::events::agent::AgentEventKind::DiskFull,
                    severity: fleetbus_schemas::Severity::Error,
                    message: format!("/var on db-{i} is full"),
                    service: None,
                    fields: Default::default(),
                },
            ),
        ))
        .await;
    }
    let hits = rx.wait_accepted("burst", 3).await;
    let digest = hits
        .iter()
        .map(|h| h.json())
        .find(|j| j["type"] == "digest")
        .expect("a digest");
    assert_eq!(digest["count"], 4);
    let digest_id = digest["id"].as_str().unwrap().to_owned();
    bus.wait_log("4 sent events naming the digest", |_| {
        bus.sent()
            .iter()
            .filter(|(_, _, d)| d.as_deref() == Some(digest_id.as_str()))
            .count()
            == 4
    })
    .await;
    assert!(bus.notification_events().iter().all(|e| match e {
        NotificationEvent::Sent { notification, .. } => notification.phase == Phase::Firing,
        _ => true,
    }));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn slack_url_comes_from_the_secrets_file_and_ntfy_gets_title_and_priority() {
    use fleetbus_schemas::commands::notify::{ChannelKind, ChannelSpec};
    let bus = Bus::start().await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let slack_url = rx.url("services/T000/B000/secretpath");
    let mut config = bus.config();
    config.secrets_file = Some(write_secrets(
        dir.path(),
        &[("slack-url", &slack_url), ("ntfy-token", "tk_secret")],
    ));
    config.channels = vec![
        ChannelSpec {
            channel: "slack".parse().unwrap(),
            kind: ChannelKind::Slack {
                url_secret: "slack-url".into(),
            },
            timeout_ms: 2000,
            max_attempts: 2,
        },
        ChannelSpec {
            channel: "phone".parse().unwrap(),
            kind: ChannelKind::Ntfy {
                server: format!("http://{}", rx.addr),
                topic: "fleet-ops".into(),
                token_secret: Some("ntfy-token".into()),
            },
            timeout_ms: 2000,
            max_attempts: 2,
        },
    ];
    config.recipients = vec![operator("alice")];
    config.rules = vec![rule("chat", &["alice"], &["slack", "phone"])];
    let (stop, task) = spawn_notifier(config);
    bus.publish(service("web-1", "nginx", ServiceState::Failed))
        .await;

    let slack = rx.wait_accepted("services/T000/B000/secretpath", 1).await;
    let text = slack[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("web-1:nginx is failed"), "{text}");
    let ntfy = rx.wait_accepted("fleet-ops", 1).await;
    assert_eq!(
        ntfy[0].header("priority").as_deref(),
        Some("4"),
        "error → ntfy priority 4"
    );
    assert!(ntfy[0]
        .header("title")
        .unwrap_or_default()
        .contains("ERROR"));
    assert_eq!(
        ntfy[0].header("authorization").as_deref(),
        Some("Bearer tk_secret")
    );
    bus.wait_log("two sent", |log| {
        log.iter()
            .filter(|e| matches!(e, NotificationEvent::Sent { .. }))
            .count()
            == 2
    })
    .await;
    // The Slack URL is a secret: it is in no event.
    let log = format!("{:?}", bus.log.lock().unwrap());
    assert!(!log.contains("secretpath") && !log.contains("tk_secret"));
    stop.cancel();
    task.await.unwrap();
}
