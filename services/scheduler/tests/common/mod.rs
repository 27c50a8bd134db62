//! Shared helpers for the scheduler's integration tests: a real nats-server with the
//! bus-config streams, an admin client to publish commands and read the streams.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish};
use chrono::{DateTime, Utc};
use fleetbus_bus_config::Role;
use fleetbus_schemas::commands::{JobCommand, ScheduleCommand};
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::events::ScheduleEvent;
use fleetbus_schemas::{
    decode, encode, Actor, Command, CommandEnvelope, CommandId, Envelope, Event, JobId, UserRole,
};
use fleetbus_testkit::NatsServer;

pub struct Bus {
    pub server: NatsServer,
    pub js: jetstream::Context,
}

pub async fn bus() -> Bus {
    let server = NatsServer::start();
    server.ensure_streams().await;
    let js = jetstream::new(server.client(Role::Admin).await);
    Bus { server, js }
}

/// The NATS user the scheduler runs as in tests: `scheduler`, once bus-config lets it replay
/// `EVENTS` (it must: its state is a fold of the log). Until then `admin`, loudly, so the
/// scheduler's logic is still tested against a real bus.
pub fn scheduler_role() -> Role {
    let allowed = Role::Scheduler.permissions().publish.allow;
    let can_replay = allowed.iter().any(|s| {
        s == "$JS.API.STREAM.INFO.EVENTS" || s == "$JS.API.STREAM.INFO.*" || s == "$JS.API.>"
    });
    if can_replay {
        Role::Scheduler
    } else {
        eprintln!(
            "WARNING: bus-config does not let the `scheduler` user read the EVENTS stream \
             ($JS.API.STREAM.INFO.EVENTS, CONSUMER.CREATE.EVENTS, …); running the scheduler as admin"
        );
        Role::Admin
    }
}

impl Bus {
    pub fn config(&self) -> fleetbus_scheduler::Config {
        let mut c = fleetbus_scheduler::Config {
            nats: self.server.nats_config(scheduler_role()),
            ..Default::default()
        };
        c.retention.enabled = false;
        c.liveness.sweep_ms = 100;
        c
    }

    pub async fn send(&self, actor: Actor, command: Command) -> CommandId {
        let cmd = CommandEnvelope::new(actor, command);
        self.send_envelope(&cmd).await;
        cmd.id
    }

    pub async fn send_envelope(&self, cmd: &CommandEnvelope) {
        self.publish_raw(&cmd.subject(), &cmd.id.to_string(), encode(cmd).unwrap())
            .await;
    }

    pub async fn publish_raw(&self, subject: &str, id: &str, payload: Vec<u8>) {
        self.js
            .send_publish(
                subject.to_owned(),
                Publish::build().message_id(id).payload(payload.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn publish_event(&self, env: &Envelope) {
        self.publish_raw(&env.subject(), &env.id.to_string(), encode(env).unwrap())
            .await;
    }

    /// Every message still in `stream`, in order (subject, payload).
    pub async fn messages(&self, stream: &str) -> Vec<(String, Vec<u8>)> {
        let mut s = self.js.get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if info.messages == 0 {
            return out;
        }
        for seq in info.first_sequence..=info.last_sequence {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.push((m.subject.to_string(), m.payload.to_vec()));
            }
        }
        out
    }

    pub async fn events(&self) -> Vec<Envelope> {
        self.messages("EVENTS")
            .await
            .into_iter()
            .map(|(_, p)| decode::<Envelope>(&p).unwrap())
            .collect()
    }

    pub async fn job_commands(&self) -> Vec<CommandEnvelope> {
        self.messages("COMMANDS")
            .await
            .into_iter()
            .filter(|(s, _)| s.starts_with("fleet.cmd.job."))
            .map(|(_, p)| decode::<CommandEnvelope>(&p).unwrap())
            .collect()
    }

    /// Waits (max `secs`) until the events satisfy `cond`; returns them.
    pub async fn wait_events(
        &self,
        secs: u64,
        cond: impl Fn(&[Envelope]) -> bool,
    ) -> Vec<Envelope> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.events().await;
            if cond(&events) || std::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn admin() -> Actor {
    Actor::user("alice", UserRole::Admin)
}

/// A schedule that publishes a harmless command (cancel of a job that does not exist).
pub fn publish_schedule(id: &str, cron: &str) -> Command {
    Command::Schedule(ScheduleCommand::Create(ScheduleSpec {
        schedule: id.parse().unwrap(),
        cron: cron.into(),
        time_zone: "UTC".into(),
        action: ScheduleAction::Publish {
            command: Box::new(Command::Job(JobCommand::Cancel {
                job: JobId(ulid::Ulid::from_parts(1, 1)),
            })),
        },
        missed: MissedPolicy::CatchUpOnce,
    }))
}

/// Fired events by schedule: slot → how many times.
pub fn fired(events: &[Envelope]) -> BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> {
    let mut out: BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> = BTreeMap::new();
    for e in events {
        if let Event::Schedule(ScheduleEvent::Fired { schedule, slot, .. }) = &e.event {
            *out.entry(schedule.to_string())
                .or_default()
                .entry(*slot)
                .or_default() += 1;
        }
    }
    out
}

pub fn count_type(events: &[Envelope], type_name: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event.type_name() == type_name)
        .count()
}
