//! The scheduler's brain, without I/O: a fold of the log (schedules, checks, agents, the
//! registry, tasks, ended jobs) plus decisions taken at an instant (which slots fire, which
//! agents and checks flip, whether retention runs) and command validation.
//!
//! Every decision comes out as [`Outputs`] with deterministic ids (see [`crate::ids`]), and the
//! decisions are folded back at once ([`Core::apply`] is idempotent), so the same event
//! arriving again from the bus changes nothing. Because the state is a fold of the log, a
//! restarted scheduler knows which transitions already happened and never repeats them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use fleetbus_schemas::commands::{CheckCommand, ScheduleCommand, Targets};
use fleetbus_schemas::events::agent::AgentEventKind;
use fleetbus_schemas::events::check::{CheckKind, CheckSpec, CheckState};
use fleetbus_schemas::events::host::HostSpec;
use fleetbus_schemas::events::schedule::{MissedPolicy, ScheduleAction, ScheduleSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceSpec};
use fleetbus_schemas::events::system::RejectKind;
use fleetbus_schemas::events::{
    AgentEvent, AlertEvent, CheckEvent, HostEvent, JobEvent, ScheduleEvent, ServiceEvent,
    SystemEvent,
};
use fleetbus_schemas::{
    Actor, AgentId, CheckId, Command, CommandEnvelope, CommandId, Envelope, Event, EventId, HostId,
    JobId, ScheduleId, ServiceName, Severity, TaskId, SCHEMA_VERSION,
};

use crate::ids;
use crate::slots::{SlotError, SlotSchedule};

/// The component name on events and rejections.
pub(crate) const COMPONENT: &str = "scheduler";

/// Most slots looked at per schedule per pass (an every-second schedule down for a day has
/// 86,400); the rest are handled by the next pass.
const MAX_DUE: usize = 100_000;

/// Thresholds and policies the core decides with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// An agent silent this long goes stale.
    pub stale_after: Duration,
    /// An agent silent this long goes down.
    pub down_after: Duration,
    /// A slot older than this when it is looked at counts as missed (downtime), not late.
    pub missed_after: Duration,
    /// When retention runs.
    pub retention: Option<SlotSchedule>,
    /// Output of jobs that ended longer ago than this is purged.
    pub output_max_age: Duration,
    /// History projections keep this much.
    pub history_max_age: Duration,
}

/// What the core wants done, in this order: publish the commands (and await their acks),
/// purge these jobs' output, publish the events.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    /// Commands to publish (fired slots).
    pub commands: Vec<CommandEnvelope>,
    /// Jobs whose live output subjects to purge.
    pub purge_jobs: Vec<JobId>,
    /// Events to publish.
    pub events: Vec<Envelope>,
}

impl Outputs {
    /// Nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.purge_jobs.is_empty() && self.events.is_empty()
    }

    fn extend(&mut self, other: Outputs) {
        self.commands.extend(other.commands);
        self.purge_jobs.extend(other.purge_jobs);
        self.events.extend(other.events);
    }
}

#[derive(Debug, Clone)]
struct Sched {
    spec: ScheduleSpec,
    slots: SlotSchedule,
    paused: bool,
    /// Who created or last changed it: fired commands act as them.
    owner: Actor,
    /// Every slot at or before this is accounted for (fired, missed, or before creation).
    last: DateTime<Utc>,
    generation: u64,
}

/// An agent's liveness, as told by the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Heard from recently.
    Live,
    /// Silent past the stale threshold.
    Stale,
    /// Silent past the down threshold.
    Down,
}

#[derive(Debug, Clone)]
struct Agent {
    last_seen: DateTime<Utc>,
    liveness: Liveness,
    /// `last_seen` when it went stale or down: a later report means it recovered.
    silent_since: DateTime<Utc>,
    blocked: bool,
}

#[derive(Debug, Clone)]
struct Check {
    spec: CheckSpec,
    defined_at: DateTime<Utc>,
    state: CheckState,
    last_ping: Option<DateTime<Utc>>,
    /// `last_ping` when the state last changed: a later ping flips it to up.
    basis: Option<DateTime<Utc>>,
    /// Deadline checks: the schedule of deadlines, the last matching event, the last deadline
    /// judged, and whether its alert is open.
    deadlines: Option<SlotSchedule>,
    last_event: Option<DateTime<Utc>>,
    judged: Option<DateTime<Utc>>,
    alert_open: bool,
}

/// The scheduler's state.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: CoreConfig,
    schedules: HashMap<ScheduleId, Sched>,
    queue: BinaryHeap<Reverse<(DateTime<Utc>, u64, ScheduleId)>>,
    next_generation: u64,
    checks: BTreeMap<CheckId, Check>,
    agents: BTreeMap<AgentId, Agent>,
    hosts: BTreeMap<HostId, HostSpec>,
    services: BTreeMap<HostId, BTreeMap<ServiceName, ServiceSpec>>,
    tasks: BTreeSet<TaskId>,
    jobs_ended: BTreeMap<JobId, DateTime<Utc>>,
    output_cutoff: Option<DateTime<Utc>>,
    last_retention: DateTime<Utc>,
    /// Ids of events we decided and folded before publishing: when the log brings them back
    /// they are not folded a second time (which could briefly undo a later decision).
    folded_early: HashSet<EventId>,
}

/// The key of the alert a deadline check raises.
pub(crate) fn deadline_alert_key(check: &CheckId) -> String {
    format!("deadline-{check}")
}

fn envelope(
    id: fleetbus_schemas::EventId,
    now: DateTime<Utc>,
    actor: Actor,
    causation: Option<CommandId>,
    event: Event,
) -> Envelope {
    Envelope {
        id,
        time: now,
        source: COMPONENT.to_owned(),
        actor,
        causation,
        schema: SCHEMA_VERSION,
        event,
    }
}

fn service_actor() -> Actor {
    Actor::service(COMPONENT)
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

impl Core {
    /// An empty state; `started` is the baseline for retention (it runs at the first retention
    /// slot after it unless the log says it ran later).
    pub(crate) fn new(cfg: CoreConfig, started: DateTime<Utc>) -> Core {
        Core {
            cfg,
            schedules: HashMap::new(),
            queue: BinaryHeap::new(),
            next_generation: 0,
            checks: BTreeMap::new(),
            agents: BTreeMap::new(),
            hosts: BTreeMap::new(),
            services: BTreeMap::new(),
            tasks: BTreeSet::new(),
            jobs_ended: BTreeMap::new(),
            output_cutoff: None,
            last_retention: started,
            folded_early: HashSet::new(),
        }
    }

    /// Number of schedules known.
    pub(crate) fn schedule_count(&self) -> usize {
        self.schedules.len()
    }

    /// An agent's liveness, if it ever reported (what the tests look at).
    #[cfg(test)]
    pub(crate) fn liveness(&self, agent: &AgentId) -> Option<Liveness> {
        self.agents.get(agent).map(|a| a.liveness)
    }

    /// A check's state (what the tests look at).
    #[cfg(test)]
    pub(crate) fn check_state(&self, check: &CheckId) -> Option<CheckState> {
        self.checks.get(check).map(|c| c.state)
    }

    /// The earliest instant at which a schedule may be due (for the timer).
    pub(crate) fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, generation, id))) = self.queue.peek() {
            match self.schedules.get(id) {
                Some(s) if s.generation == *generation && !s.paused => return Some(*at),
                _ => {
                    self.queue.pop();
                }
            }
        }
        None
    }

    fn reschedule(&mut self, id: &ScheduleId) {
        self.next_generation += 1;
        let generation = self.next_generation;
        if let Some(s) = self.schedules.get_mut(id) {
            s.generation = generation;
            if let Some(next) = s.slots.next_after(s.last) {
                self.queue.push(Reverse((next, generation, id.clone())));
            }
        }
    }

    // ---------------------------------------------------------------- fold

    /// Folds one event from the log (skipping what [`Core::apply`] already took when it was
    /// published); true when a sweep should judge it at once rather than at the next sweep: a
    /// check event, an agent's notice (a heartbeat, a deadline's event), a report from an agent
    /// that is stale or down.
    pub(crate) fn apply_from_log(&mut self, env: &Envelope) -> bool {
        let urgent = match &env.event {
            Event::Check(_) | Event::Agent(AgentEvent::Raised(_)) => true,
            Event::Agent(AgentEvent::Reported(r)) => self
                .agents
                .get(&r.agent)
                .is_some_and(|a| a.liveness != Liveness::Live),
            _ => false,
        };
        if !self.folded_early.remove(&env.id) {
            self.apply(env);
        }
        urgent
    }

    /// Folds one event. Idempotent: applying an event twice changes nothing more.
    pub(crate) fn apply(&mut self, env: &Envelope) {
        match &env.event {
            Event::Schedule(e) => self.apply_schedule(env, e),
            Event::Check(e) => self.apply_check(env, e),
            Event::Agent(e) => self.apply_agent(env, e),
            Event::Alert(AlertEvent::Cleared { key }) => {
                if let Some(check) = key
                    .strip_prefix("deadline-")
                    .and_then(|c| c.parse::<CheckId>().ok())
                {
                    if let Some(c) = self.checks.get_mut(&check) {
                        c.alert_open = false;
                    }
                }
            }
            Event::Host(HostEvent::Registered(spec) | HostEvent::Updated(spec)) => {
                self.hosts.insert(spec.host.clone(), spec.clone());
            }
            Event::Host(HostEvent::Removed { host }) => {
                self.hosts.remove(host);
                self.services.remove(host);
            }
            Event::Service(ServiceEvent::Registered(spec) | ServiceEvent::Updated(spec)) => {
                self.services
                    .entry(spec.host.clone())
                    .or_default()
                    .insert(spec.name.clone(), spec.clone());
            }
            Event::Service(ServiceEvent::Removed { host, name }) => {
                if let Some(s) = self.services.get_mut(host) {
                    s.remove(name);
                }
            }
            Event::Job(JobEvent::TaskSaved(spec)) => {
                self.tasks.insert(spec.task.clone());
            }
            Event::Job(JobEvent::TaskDeleted { task }) => {
                self.tasks.remove(task);
            }
            Event::Job(
                JobEvent::Succeeded { job, .. }
                | JobEvent::Failed { job, .. }
                | JobEvent::Cancelled { job, .. },
            ) if self.output_cutoff.is_none_or(|cut| env.time >= cut) => {
                self.jobs_ended.insert(*job, env.time);
            }
            _ => {}
        }
    }

    fn apply_schedule(&mut self, env: &Envelope, e: &ScheduleEvent) {
        match e {
            ScheduleEvent::Created(spec) | ScheduleEvent::Updated(spec) => {
                let slots = match SlotSchedule::parse(&spec.cron, &spec.time_zone) {
                    Ok(s) => s,
                    Err(err) => {
                        // Only validated specs are published; a bad one in the log is skipped.
                        tracing::warn!(schedule = %spec.schedule, error = %err, "schedule in the log does not parse; ignored");
                        return;
                    }
                };
                // An existing schedule keeps its pause: an update does not resume it, and a
                // `created` we folded early and read again from the log changes nothing.
                let (paused, last) = match self.schedules.get(&spec.schedule) {
                    Some(s) => (s.paused, s.last.max(env.time)),
                    None => (false, env.time),
                };
                self.schedules.insert(
                    spec.schedule.clone(),
                    Sched {
                        spec: spec.clone(),
                        slots,
                        paused,
                        owner: env.actor.clone(),
                        last,
                        generation: 0,
                    },
                );
                self.reschedule(&spec.schedule);
            }
            ScheduleEvent::Paused { schedule } => {
                if let Some(s) = self.schedules.get_mut(schedule) {
                    s.paused = true;
                }
            }
            ScheduleEvent::Resumed { schedule } => {
                if let Some(s) = self.schedules.get_mut(schedule) {
                    // Slots during the pause are neither fired nor missed.
                    let was_paused = s.paused;
                    s.paused = false;
                    if was_paused {
                        s.last = s.last.max(env.time);
                    }
                    self.reschedule(schedule);
                }
            }
            ScheduleEvent::Deleted { schedule } => {
                self.schedules.remove(schedule);
            }
            ScheduleEvent::Fired { schedule, slot, .. } => self.advance(schedule, *slot),
            ScheduleEvent::SlotsMissed { schedule, last, .. } => self.advance(schedule, *last),
            ScheduleEvent::RetentionApplied { output_cutoff, .. } => {
                self.last_retention = self.last_retention.max(env.time);
                if self.output_cutoff.is_none_or(|c| *output_cutoff > c) {
                    self.output_cutoff = Some(*output_cutoff);
                }
                self.jobs_ended.retain(|_, ended| *ended >= *output_cutoff);
            }
        }
    }

    fn advance(&mut self, schedule: &ScheduleId, slot: DateTime<Utc>) {
        if let Some(s) = self.schedules.get_mut(schedule) {
            if slot > s.last {
                s.last = slot;
                self.reschedule(schedule);
            }
        }
    }

    fn apply_check(&mut self, env: &Envelope, e: &CheckEvent) {
        match e {
            CheckEvent::Defined(spec) => {
                let deadlines = match &spec.kind {
                    CheckKind::Deadline { by, time_zone, .. } => {
                        match deadline_schedule(by, time_zone) {
                            Ok(s) => Some(s),
                            Err(err) => {
                                tracing::warn!(check = %spec.check, error = %err, "check in the log does not parse; ignored");
                                return;
                            }
                        }
                    }
                    CheckKind::Heartbeat { .. } => None,
                };
                match self.checks.get_mut(&spec.check) {
                    Some(c) => {
                        c.spec = spec.clone();
                        c.deadlines = deadlines;
                    }
                    None => {
                        self.checks.insert(
                            spec.check.clone(),
                            Check {
                                spec: spec.clone(),
                                defined_at: env.time,
                                state: CheckState::New,
                                last_ping: None,
                                basis: None,
                                deadlines,
                                last_event: None,
                                judged: None,
                                alert_open: false,
                            },
                        );
                    }
                }
            }
            CheckEvent::Deleted { check } => {
                self.checks.remove(check);
            }
            CheckEvent::Pinged { check } => self.ping(check, env.time),
            CheckEvent::StateChanged { check, to, .. } => {
                if let Some(c) = self.checks.get_mut(check) {
                    c.state = *to;
                    c.basis = c.last_ping;
                }
            }
            CheckEvent::DeadlineMissed { check, deadline } => {
                if let Some(c) = self.checks.get_mut(check) {
                    c.judged = Some(c.judged.map_or(*deadline, |j| j.max(*deadline)));
                    c.alert_open = true;
                }
            }
        }
    }

    fn ping(&mut self, check: &CheckId, at: DateTime<Utc>) {
        if let Some(c) = self.checks.get_mut(check) {
            c.last_ping = Some(c.last_ping.map_or(at, |p| p.max(at)));
        }
    }

    fn apply_agent(&mut self, env: &Envelope, e: &AgentEvent) {
        match e {
            AgentEvent::Reported(report) => {
                let a = self.agents.entry(report.agent.clone()).or_insert(Agent {
                    last_seen: env.time,
                    liveness: Liveness::Live,
                    silent_since: env.time,
                    blocked: false,
                });
                a.last_seen = a.last_seen.max(env.time);
            }
            AgentEvent::Raised(notice) => {
                if notice.kind == AgentEventKind::Heartbeat {
                    if let Some(check) = notice
                        .fields
                        .get("check")
                        .and_then(|c| c.parse::<CheckId>().ok())
                    {
                        self.ping(&check, env.time);
                    }
                }
                for c in self.checks.values_mut() {
                    if let CheckKind::Deadline {
                        event_kind, host, ..
                    } = &c.spec.kind
                    {
                        if *host == notice.host && event_kind == notice.kind.as_str() {
                            c.last_event = Some(c.last_event.map_or(env.time, |t| t.max(env.time)));
                        }
                    }
                }
            }
            AgentEvent::Blocked { agent, .. } | AgentEvent::Unblocked { agent } => {
                let blocked = matches!(e, AgentEvent::Blocked { .. });
                if let Some(a) = self.agents.get_mut(agent) {
                    a.blocked = blocked;
                } else if blocked {
                    // Blocked before its first report: remember it.
                    self.agents.insert(
                        agent.clone(),
                        Agent {
                            last_seen: env.time,
                            liveness: Liveness::Live,
                            silent_since: env.time,
                            blocked,
                        },
                    );
                }
            }
            AgentEvent::WentStale { agent, last_seen }
            | AgentEvent::WentDown { agent, last_seen } => {
                let to = if matches!(e, AgentEvent::WentStale { .. }) {
                    Liveness::Stale
                } else {
                    Liveness::Down
                };
                if let Some(a) = self.agents.get_mut(agent) {
                    // A stale event read after the down event of the same silence is old news.
                    if !(to == Liveness::Stale
                        && a.liveness == Liveness::Down
                        && a.silent_since == *last_seen)
                    {
                        a.liveness = to;
                    }
                    a.silent_since = *last_seen;
                }
            }
            AgentEvent::Recovered { agent } => {
                if let Some(a) = self.agents.get_mut(agent) {
                    a.liveness = Liveness::Live;
                }
            }
            AgentEvent::KeyIssued { .. } | AgentEvent::KeyRevoked { .. } => {}
        }
    }

    // ---------------------------------------------------------------- decisions

    fn emit(&mut self, out: &mut Outputs, env: Envelope) {
        self.apply(&env);
        self.folded_early.insert(env.id);
        out.events.push(env);
    }

    /// Fires every slot that is due at `now` (and records missed ones).
    pub(crate) fn fire_due(&mut self, now: DateTime<Utc>) -> Outputs {
        let mut out = Outputs::default();
        while let Some(at) = self.next_wake() {
            if at > now {
                break;
            }
            let Some(Reverse((_, _, id))) = self.queue.pop() else {
                break;
            };
            let Some(s) = self.schedules.get(&id) else {
                continue;
            };
            let due = s.slots.between(s.last, now, MAX_DUE);
            let Some(&latest) = due.last() else {
                self.reschedule(&id);
                continue;
            };
            let policy = s.spec.missed;
            let window_start = now - self.cfg.missed_after;
            let split = due.partition_point(|slot| *slot < window_start);
            let (old, recent) = due.split_at(split);
            let mut to_fire: Vec<DateTime<Utc>> = Vec::new();
            if let (Some(&first), Some(&last)) = (old.first(), old.last()) {
                let count = u32::try_from(old.len()).unwrap_or(u32::MAX);
                tracing::info!(schedule = %id, count, first = %first, policy = ?policy, "slots missed");
                let event = ScheduleEvent::SlotsMissed {
                    schedule: id.clone(),
                    first,
                    last,
                    count,
                    policy,
                };
                let env = envelope(
                    ids::event(last, "slots-missed", &[id.as_str(), &ms(first), &ms(last)]),
                    now,
                    service_actor(),
                    None,
                    Event::Schedule(event),
                );
                out.events.push(env);
                if policy == MissedPolicy::CatchUpOnce && recent.is_empty() {
                    to_fire.push(last);
                }
            }
            to_fire.extend_from_slice(recent);
            for slot in to_fire {
                out.extend(self.fire(&id, slot, now));
            }
            // Fold what we decided (the events above are folded when re-read, too).
            self.advance(&id, latest);
        }
        out
    }

    /// The commands and the `fired` event of one slot.
    fn fire(&self, id: &ScheduleId, slot: DateTime<Utc>, now: DateTime<Utc>) -> Outputs {
        let mut out = Outputs::default();
        let Some(s) = self.schedules.get(id) else {
            return out;
        };
        let mut command = |part: &str, cmd: Command| {
            out.commands.push(CommandEnvelope {
                id: ids::slot_command(id.as_str(), slot, part),
                time: now,
                actor: s.owner.clone(),
                schema: SCHEMA_VERSION,
                command: cmd,
            });
        };
        match &s.spec.action {
            ScheduleAction::PollStatus { targets } => {
                for host in self.select_hosts(targets) {
                    for svc in self
                        .services
                        .get(&host)
                        .into_iter()
                        .flat_map(|m| m.values())
                    {
                        if !svc.actions.is_empty() && !svc.actions.contains(&ServiceAction::Status)
                        {
                            continue;
                        }
                        command(
                            &format!("{host}:{}", svc.name),
                            Command::Job(fleetbus_schemas::commands::JobCommand::RunAction {
                                host: host.clone(),
                                service: svc.name.clone(),
                                action: ServiceAction::Status,
                                lines: None,
                            }),
                        );
                    }
                }
            }
            ScheduleAction::RunTask {
                task,
                params,
                targets,
            } => command(
                "",
                Command::Job(fleetbus_schemas::commands::JobCommand::RunTask {
                    task: task.clone(),
                    params: params.clone(),
                    targets: targets.clone(),
                }),
            ),
            ScheduleAction::Publish { command: cmd } => command("", (**cmd).clone()),
        }
        let commands = out.commands.iter().map(|c| c.id).collect();
        out.events.push(envelope(
            ids::event(slot, "fired", &[id.as_str(), &ms(slot)]),
            now,
            service_actor(),
            None,
            Event::Schedule(ScheduleEvent::Fired {
                schedule: id.clone(),
                slot,
                commands,
            }),
        ));
        out
    }

    fn select_hosts(&self, targets: &Targets) -> Vec<HostId> {
        self.hosts
            .values()
            .filter(|h| !h.disabled)
            .filter(|h| {
                targets.hosts.contains(&h.host)
                    || h.tags.iter().any(|t| targets.tags.contains(t))
                    || h.roles.iter().any(|r| targets.roles.contains(r))
            })
            .map(|h| h.host.clone())
            .collect()
    }

    /// Liveness, heartbeat, deadline and retention decisions at `now`.
    pub(crate) fn sweep(&mut self, now: DateTime<Utc>) -> Outputs {
        let mut out = Outputs::default();
        self.sweep_agents(now, &mut out);
        self.sweep_checks(now, &mut out);
        self.sweep_retention(now, &mut out);
        out
    }

    fn sweep_agents(&mut self, now: DateTime<Utc>, out: &mut Outputs) {
        let mut flips = Vec::new();
        for (id, a) in &self.agents {
            if a.blocked {
                continue;
            }
            let silent = now - a.last_seen;
            let event = match a.liveness {
                Liveness::Stale | Liveness::Down if a.last_seen > a.silent_since => {
                    let id_ = ids::event(
                        a.last_seen,
                        "agent-recovered",
                        &[id.as_str(), &ms(a.last_seen)],
                    );
                    Some((id_, AgentEvent::Recovered { agent: id.clone() }))
                }
                Liveness::Live | Liveness::Stale if silent >= self.cfg.down_after => {
                    let at = a.last_seen + self.cfg.down_after;
                    let id_ = ids::event(at, "agent-down", &[id.as_str(), &ms(a.last_seen)]);
                    Some((
                        id_,
                        AgentEvent::WentDown {
                            agent: id.clone(),
                            last_seen: a.last_seen,
                        },
                    ))
                }
                Liveness::Live if silent >= self.cfg.stale_after => {
                    let at = a.last_seen + self.cfg.stale_after;
                    let id_ = ids::event(at, "agent-stale", &[id.as_str(), &ms(a.last_seen)]);
                    Some((
                        id_,
                        AgentEvent::WentStale {
                            agent: id.clone(),
                            last_seen: a.last_seen,
                        },
                    ))
                }
                _ => None,
            };
            if let Some((event_id, event)) = event {
                tracing::info!(agent = %id, last_seen = %a.last_seen, event = ?std::mem::discriminant(&event), "agent liveness changed");
                flips.push(envelope(
                    event_id,
                    now,
                    service_actor(),
                    None,
                    Event::Agent(event),
                ));
            }
        }
        for env in flips {
            self.emit(out, env);
        }
    }

    fn sweep_checks(&mut self, now: DateTime<Utc>, out: &mut Outputs) {
        let mut emits = Vec::new();
        for (id, c) in &self.checks {
            if c.state == CheckState::Paused {
                continue;
            }
            match &c.spec.kind {
                CheckKind::Heartbeat { period_s, grace_s } => {
                    let period =
                        Duration::seconds(i64::try_from(*period_s).unwrap_or(i64::MAX / 2_000_000));
                    let grace =
                        Duration::seconds(i64::try_from(*grace_s).unwrap_or(i64::MAX / 2_000_000));
                    let pinged_since = c.last_ping.is_some() && c.last_ping > c.basis;
                    let to = match (c.state, c.last_ping) {
                        (CheckState::New | CheckState::Late | CheckState::Down, Some(_))
                            if pinged_since =>
                        {
                            Some(CheckState::Up)
                        }
                        (CheckState::Up | CheckState::Late, Some(p))
                            if now >= p + period + grace =>
                        {
                            Some(CheckState::Down)
                        }
                        (CheckState::Up, Some(p)) if now >= p + period => Some(CheckState::Late),
                        _ => None,
                    };
                    if let (Some(to), Some(p)) = (to, c.last_ping) {
                        let at = match to {
                            CheckState::Late => p + period,
                            CheckState::Down => p + period + grace,
                            _ => p,
                        };
                        let event_id = ids::event(
                            at,
                            "check-state",
                            &[id.as_str(), &format!("{to:?}"), &ms(p)],
                        );
                        emits.push(envelope(
                            event_id,
                            now,
                            service_actor(),
                            None,
                            Event::Check(CheckEvent::StateChanged {
                                check: id.clone(),
                                from: c.state,
                                to,
                            }),
                        ));
                    }
                }
                CheckKind::Deadline {
                    host,
                    event_kind,
                    by,
                    ..
                } => {
                    let Some(deadlines) = &c.deadlines else {
                        continue;
                    };
                    // The latest deadline at or before now whose whole window (since the
                    // previous deadline) lies after the check was defined.
                    let recent = deadlines.between(now - Duration::days(3), now, 16);
                    let judged_ok = |d: &DateTime<Utc>| c.judged.is_none_or(|j| *d > j);
                    let pair = recent.windows(2).last().map(|w| (w[0], w[1]));
                    if let Some((prev, deadline)) = pair {
                        let on_time = c.last_event.is_some_and(|t| t > prev && t <= deadline);
                        if prev >= c.defined_at && judged_ok(&deadline) && !on_time {
                            let event_id = ids::event(
                                deadline,
                                "deadline-missed",
                                &[id.as_str(), &ms(deadline)],
                            );
                            emits.push(envelope(
                                event_id,
                                now,
                                service_actor(),
                                None,
                                Event::Check(CheckEvent::DeadlineMissed {
                                    check: id.clone(),
                                    deadline,
                                }),
                            ));
                            let alert_id = ids::event(
                                deadline,
                                "deadline-alert",
                                &[id.as_str(), &ms(deadline)],
                            );
                            emits.push(envelope(
                                alert_id,
                                now,
                                service_actor(),
                                None,
                                Event::Alert(AlertEvent::Raised {
                                    key: deadline_alert_key(id),
                                    severity: Severity::Error,
                                    host: Some(host.clone()),
                                    service: None,
                                    message: format!(
                                        "no {event_kind} from {host} by {by} (check {id})"
                                    ),
                                }),
                            ));
                        }
                    }
                    // An event after the missed deadline is on time for the next one: clear.
                    if c.alert_open {
                        if let (Some(t), Some(j)) = (c.last_event, c.judged) {
                            if t > j {
                                let event_id =
                                    ids::event(t, "deadline-cleared", &[id.as_str(), &ms(t)]);
                                emits.push(envelope(
                                    event_id,
                                    now,
                                    service_actor(),
                                    None,
                                    Event::Alert(AlertEvent::Cleared {
                                        key: deadline_alert_key(id),
                                    }),
                                ));
                            }
                        }
                    }
                }
            }
        }
        for env in emits {
            self.emit(out, env);
        }
    }

    fn sweep_retention(&mut self, now: DateTime<Utc>, out: &mut Outputs) {
        let Some(schedule) = &self.cfg.retention else {
            return;
        };
        let Some(slot) = schedule.next_after(self.last_retention) else {
            return;
        };
        if slot > now {
            return;
        }
        // Missed runs (downtime) collapse into one: the latest due slot.
        let slot = schedule
            .between(slot, now, MAX_DUE)
            .last()
            .copied()
            .unwrap_or(slot);
        let output_cutoff = slot - self.cfg.output_max_age;
        let history_cutoff = slot - self.cfg.history_max_age;
        let jobs: Vec<JobId> = self
            .jobs_ended
            .iter()
            .filter(|(_, ended)| **ended < output_cutoff)
            .map(|(job, _)| *job)
            .collect();
        tracing::info!(slot = %slot, jobs = jobs.len(), output_cutoff = %output_cutoff, "retention pass");
        let event = ScheduleEvent::RetentionApplied {
            output_cutoff,
            history_cutoff,
            jobs_purged: u32::try_from(jobs.len()).unwrap_or(u32::MAX),
        };
        out.purge_jobs.extend(jobs);
        let env = envelope(
            ids::event(slot, "retention", &[&ms(slot)]),
            now,
            service_actor(),
            None,
            Event::Schedule(event),
        );
        self.emit(out, env);
        self.last_retention = self.last_retention.max(slot);
    }

    // ---------------------------------------------------------------- commands

    /// Validates one command of the `schedule` or `check` area; returns the events that
    /// accept it (folded already) or the rejection.
    pub(crate) fn handle_command(
        &mut self,
        now: DateTime<Utc>,
        subject: &str,
        cmd: &CommandEnvelope,
    ) -> Outputs {
        let mut out = Outputs::default();
        let result = match &cmd.command {
            Command::Schedule(c) => self.schedule_command(now, c, &cmd.actor),
            Command::Check(c) => self.check_command(c, &cmd.actor),
            other => Err((
                RejectKind::Malformed,
                format!(
                    "the scheduler handles schedule and check commands, not {} commands",
                    other.area()
                ),
            )),
        };
        match result {
            Ok(events) => {
                for (i, event) in events.into_iter().enumerate() {
                    let env = envelope(
                        ids::caused_by(cmd.id, &format!("accepted-{i}")),
                        now,
                        cmd.actor.clone(),
                        Some(cmd.id),
                        event,
                    );
                    self.emit(&mut out, env);
                }
            }
            Err((reason, message)) => {
                tracing::info!(command = %cmd.id, subject, reason = ?reason, message = %message, "command rejected");
                out.events.push(rejection(
                    now,
                    subject,
                    Some(cmd.id),
                    &cmd.actor,
                    reason,
                    message,
                ));
            }
        }
        out
    }

    fn schedule_command(
        &self,
        now: DateTime<Utc>,
        c: &ScheduleCommand,
        actor: &Actor,
    ) -> Result<Vec<Event>, (RejectKind, String)> {
        let wrap = |e| vec![Event::Schedule(e)];
        authorize(actor, Command::Schedule(c.clone()))?;
        match c {
            ScheduleCommand::Create(spec) => {
                if self.schedules.contains_key(&spec.schedule) {
                    return Err((
                        RejectKind::Conflict,
                        format!("schedule {} already exists; use update", spec.schedule),
                    ));
                }
                self.validate_schedule(now, spec)?;
                Ok(wrap(ScheduleEvent::Created(spec.clone())))
            }
            ScheduleCommand::Update(spec) => {
                self.known_schedule(&spec.schedule)?;
                self.validate_schedule(now, spec)?;
                Ok(wrap(ScheduleEvent::Updated(spec.clone())))
            }
            ScheduleCommand::Pause { schedule } => {
                self.known_schedule(schedule)?;
                Ok(wrap(ScheduleEvent::Paused {
                    schedule: schedule.clone(),
                }))
            }
            ScheduleCommand::Resume { schedule } => {
                self.known_schedule(schedule)?;
                Ok(wrap(ScheduleEvent::Resumed {
                    schedule: schedule.clone(),
                }))
            }
            ScheduleCommand::Delete { schedule } => {
                self.known_schedule(schedule)?;
                Ok(wrap(ScheduleEvent::Deleted {
                    schedule: schedule.clone(),
                }))
            }
        }
    }

    fn known_schedule(&self, id: &ScheduleId) -> Result<(), (RejectKind, String)> {
        if self.schedules.contains_key(id) {
            Ok(())
        } else {
            Err((RejectKind::NotFound, format!("no schedule {id}")))
        }
    }

    fn validate_schedule(
        &self,
        now: DateTime<Utc>,
        spec: &ScheduleSpec,
    ) -> Result<(), (RejectKind, String)> {
        let slots = SlotSchedule::parse(&spec.cron, &spec.time_zone).map_err(invalid)?;
        if slots.next_after(now).is_none() {
            return Err(invalid(SlotError::NoUpcoming(spec.cron.clone())));
        }
        match &spec.action {
            ScheduleAction::PollStatus { targets } => no_empty_targets(targets),
            ScheduleAction::RunTask { task, targets, .. } => {
                no_empty_targets(targets)?;
                if self.tasks.contains(task) {
                    Ok(())
                } else {
                    Err((
                        RejectKind::NotFound,
                        format!("unknown task {task}: save it first (fleet.cmd.job.save_task)"),
                    ))
                }
            }
            ScheduleAction::Publish { command } => match **command {
                Command::Schedule(_) | Command::Check(_) => Err((
                    RejectKind::Invalid,
                    "a schedule may not publish schedule or check commands".to_owned(),
                )),
                _ => Ok(()),
            },
        }
    }

    fn check_command(
        &self,
        c: &CheckCommand,
        actor: &Actor,
    ) -> Result<Vec<Event>, (RejectKind, String)> {
        authorize(actor, Command::Check(c.clone()))?;
        match c {
            CheckCommand::Define(spec) => {
                match &spec.kind {
                    CheckKind::Heartbeat { period_s, grace_s } => {
                        if *period_s == 0 || *period_s > 366 * 86_400 || *grace_s > 366 * 86_400 {
                            return Err((RejectKind::Invalid, format!("heartbeat period_s must be 1..=31622400 and grace_s at most 31622400, got {period_s} and {grace_s}")));
                        }
                    }
                    CheckKind::Deadline {
                        event_kind,
                        by,
                        time_zone,
                        ..
                    } => {
                        deadline_schedule(by, time_zone).map_err(|e| (RejectKind::Invalid, e))?;
                        let kinds: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
                        if !kinds.contains(&event_kind.as_str()) {
                            return Err((
                                RejectKind::Invalid,
                                format!(
                                    "unknown agent event kind {event_kind:?}, expected one of {}",
                                    kinds.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Ok(vec![Event::Check(CheckEvent::Defined(spec.clone()))])
            }
            CheckCommand::Delete { check } => {
                self.known_check(check)?;
                Ok(vec![Event::Check(CheckEvent::Deleted {
                    check: check.clone(),
                })])
            }
            CheckCommand::Pause { check } | CheckCommand::Resume { check } => {
                let from = self.known_check(check)?;
                let to = if matches!(c, CheckCommand::Pause { .. }) {
                    CheckState::Paused
                } else {
                    CheckState::New
                };
                if (from == CheckState::Paused) == (to == CheckState::Paused) {
                    let what = if to == CheckState::Paused {
                        "already paused"
                    } else {
                        "not paused"
                    };
                    return Err((RejectKind::Conflict, format!("check {check} is {what}")));
                }
                Ok(vec![Event::Check(CheckEvent::StateChanged {
                    check: check.clone(),
                    from,
                    to,
                })])
            }
        }
    }

    fn known_check(&self, id: &CheckId) -> Result<CheckState, (RejectKind, String)> {
        self.checks
            .get(id)
            .map(|c| c.state)
            .ok_or_else(|| (RejectKind::NotFound, format!("no check {id}")))
    }
}

const ALL_KINDS: [AgentEventKind; 11] = [
    AgentEventKind::Heartbeat,
    AgentEventKind::ServiceDown,
    AgentEventKind::ServiceUp,
    AgentEventKind::DiskFull,
    AgentEventKind::OomKill,
    AgentEventKind::Reboot,
    AgentEventKind::Login,
    AgentEventKind::BackupSucceeded,
    AgentEventKind::BackupFailed,
    AgentEventKind::Deploy,
    AgentEventKind::Custom,
];

fn invalid(e: SlotError) -> (RejectKind, String) {
    (RejectKind::Invalid, e.to_string())
}

fn no_empty_targets(t: &Targets) -> Result<(), (RejectKind, String)> {
    if t.is_empty() {
        Err((
            RejectKind::Invalid,
            "targets select no hosts: name hosts, tags or roles".to_owned(),
        ))
    } else {
        Ok(())
    }
}

/// The one authorization policy (`fleetbus_runtime::authz`), as a rejection.
fn authorize(actor: &Actor, command: Command) -> Result<(), (RejectKind, String)> {
    fleetbus_runtime::authz::authorize(actor, &command).map_err(|e| (RejectKind::Forbidden, e.0))
}

/// A deadline `HH:MM` in a zone, as a daily cron schedule (same DST rules as schedules).
pub(crate) fn deadline_schedule(by: &str, time_zone: &str) -> Result<SlotSchedule, String> {
    let parsed = chrono::NaiveTime::parse_from_str(by, "%H:%M")
        .map_err(|_| format!("deadline time {by:?} is not HH:MM (e.g. \"05:00\")"))?;
    use chrono::Timelike;
    SlotSchedule::parse(
        &format!("0 {} {} * * *", parsed.minute(), parsed.hour()),
        time_zone,
    )
    .map_err(|e| e.to_string())
}

/// A `command_rejected` event.
pub(crate) fn rejection(
    now: DateTime<Utc>,
    subject: &str,
    command: Option<CommandId>,
    actor: &Actor,
    reason: RejectKind,
    message: String,
) -> Envelope {
    let id = match command {
        Some(c) => ids::caused_by(c, "rejected"),
        None => fleetbus_schemas::EventId::new(),
    };
    envelope(
        id,
        now,
        actor.clone(),
        command,
        Event::System(SystemEvent::CommandRejected {
            component: COMPONENT.to_owned(),
            command,
            subject: subject.to_owned(),
            reason,
            message,
        }),
    )
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
