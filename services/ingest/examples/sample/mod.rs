//! The sample events the ingest benchmarks use: agent reports from 20 hosts, two services each,
//! one of them failing every 97th report.

use fleetbus_schemas::events::agent::{AgentReport, Resources, ServiceObservation, ServiceState};
use fleetbus_schemas::events::{AgentEvent, Event};
use fleetbus_schemas::{Actor, AgentId, Envelope, EventId, HostId};

/// Hosts the sample reports come from.
pub(crate) const HOSTS: usize = 20;

pub(crate) fn report_envelope(i: usize) -> Envelope {
    let host = format!("bench-{}", i % HOSTS);
    let mut env = Envelope::new(
        "agent",
        Actor::agent(&host),
        None,
        Event::Agent(AgentEvent::Reported(sample_report(&host, i))),
    );
    env.id = EventId::new();
    env
}

pub(crate) fn sample_report(host: &str, i: usize) -> AgentReport {
    AgentReport {
        agent: AgentId::new(host).unwrap_or_else(|_| unreachable!()),
        host: HostId::new(host).unwrap_or_else(|_| unreachable!()),
        agent_version: "0.1.0".into(),
        resources: resources(i),
        services: vec![
            ServiceObservation {
                name: "nginx".parse().unwrap_or_else(|_| unreachable!()),
                state: if i.is_multiple_of(97) {
                    ServiceState::Failed
                } else {
                    ServiceState::Running
                },
                detail: Some("active (running)".into()),
            },
            ServiceObservation {
                name: "postgres".parse().unwrap_or_else(|_| unreachable!()),
                state: ServiceState::Running,
                detail: None,
            },
        ],
        config_version: None,
        config_hash: None,
    }
}

fn resources(i: usize) -> Resources {
    Resources {
        cpu_pct: (i % 100) as f32,
        mem_total_kb: 8_000_000,
        mem_used_kb: 3_000_000 + (i % 1000) as u64,
        disk_total_kb: 100_000_000,
        disk_used_kb: 40_000_000,
        load1: 0.5,
        load5: 0.4,
        load15: 0.3,
        uptime_s: 100_000 + i as u64,
    }
}
