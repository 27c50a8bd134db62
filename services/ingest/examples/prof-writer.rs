//! Where the writer's time goes: fold alone, log alone, both (release build).
use std::time::Instant;

use fleetbus_log::{Fold, LogStore, NewEntry};
use fleetbus_projections::State;
use fleetbus_schemas::events::agent::{AgentReport, Resources, ServiceObservation, ServiceState};
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Envelope, HostId};

#[derive(Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Nothing;
impl Fold for Nothing {
    fn apply(&mut self, _: u64, _: &Envelope) {}
}

fn env(i: usize) -> Envelope {
    let host = format!("bench-{}", i % 20);
    Envelope::new(
        "agent",
        Actor::agent(&host),
        None,
        Event::Agent(AgentEvent::Reported(AgentReport {
            agent: AgentId::new(&host).unwrap_or_else(|_| unreachable!()),
            host: HostId::new(&host).unwrap_or_else(|_| unreachable!()),
            agent_version: "0.1.0".into(),
            resources: Resources::default(),
            services: vec![ServiceObservation {
                name: "nginx".parse().unwrap_or_else(|_| unreachable!()),
                state: ServiceState::Running,
                detail: None,
            }],
            config_version: None,
            config_hash: None,
        })),
    )
}

fn main() -> anyhow::Result<()> {
    let n = 200_000;
    // Events per durable transaction (the writer's group size): `PROF_BATCH`, default 1,000.
    let group: usize = std::env::var("PROF_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let t = Instant::now();
    let batch: Vec<NewEntry> = (0..n)
        .map(|i| {
            let e = env(i);
            NewEntry {
                subject: e.subject(),
                bytes: fleetbus_schemas::encode(&e).unwrap_or_default().into(),
                envelope: e,
            }
        })
        .collect();
    println!(
        "generate+encode: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let mut s = State::default();
    let t = Instant::now();
    for (i, e) in batch.iter().enumerate() {
        s.apply(i as u64 + 1, &e.envelope);
    }
    println!(
        "State::apply only: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let bytes = rmp_serde::to_vec_named(&s)?;
    println!("snapshot encode: {:?} ({} bytes)", t.elapsed(), bytes.len());
    let t = Instant::now();
    for e in &batch {
        let _: Envelope = fleetbus_schemas::decode(&e.bytes)?;
    }
    println!("decode only: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    for (name, with_state) in [("log + no fold", false), ("log + State fold", true)] {
        let dir = tempfile::tempdir_in("/tmp/prof")?;
        let store = LogStore::open(dir.path().join("log.redb"))?;
        let t = Instant::now();
        let mut st = State::default();
        let (mut staging, mut committing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for chunk in batch.chunks(group.max(1)) {
            let t1 = Instant::now();
            let staged = if with_state {
                store.stage_batch(chunk, &mut st, 10_000)?
            } else {
                store.stage_batch(chunk, &mut Nothing, 0)?
            };
            let t2 = Instant::now();
            staged.commit()?;
            staging += t2 - t1;
            committing += t2.elapsed();
        }
        println!(
            "{name}: {:.0}/s (stage {:?}, commit {:?})",
            n as f64 / t.elapsed().as_secs_f64(),
            staging,
            committing
        );
    }
    Ok(())
}
