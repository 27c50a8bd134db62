//! The real `fleetbus-scheduler` binary: two at once over hundreds of slots, kill -9 and
//! restart, and one run against real time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fleetbus_scheduler::ids;

/// A scheduler process, killed on drop.
struct Proc {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Proc {
    fn start(bus: &Bus, dir: &Path, name: &str, warp: Option<(DateTime<Utc>, f64)>) -> Proc {
        Proc::start_env(bus, dir, name, warp, &[])
    }

    fn start_env(
        bus: &Bus,
        dir: &Path,
        name: &str,
        warp: Option<(DateTime<Utc>, f64)>,
        env: &[(&str, &str)],
    ) -> Proc {
        let c = bus.server.nats_config(scheduler_role());
        let mut toml = format!(
            "version = 1\n\n[nats]\nurl = {:?}\nuser = {:?}\nnkey_seed_file = {:?}\n\n\
             [liveness]\nsweep_ms = 200\n\n[retention]\nenabled = false\n",
            c.url,
            c.user,
            c.seed_file().display().to_string(),
        );
        if let Some((anchor, speed)) = warp {
            toml.push_str(&format!(
                "\n[warp]\nanchor = {:?}\nspeed = {speed:.1}\n",
                anchor.to_rfc3339()
            ));
        }
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(&conf, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetbus-scheduler"))
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info,fleetbus_scheduler::bus=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits (max 30 s) for the process to exit on its own; returns whether it did.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        for _ in 0..600 {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and expect a clean exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            for _ in 0..100 {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "exit {status}: {}", self.log());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            panic!("scheduler did not stop on SIGTERM: {}", self.log());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts that every schedule's slots fired exactly once, without a gap, from its first to
/// its last fired slot, and that COMMANDS holds exactly one command per fired slot with the
/// derived id. Returns the number of slots.
async fn assert_each_slot_once(bus: &Bus, schedules: &[&str]) -> usize {
    let events = bus.events().await;
    let fired = fired(&events);
    let mut total = 0;
    for s in schedules {
        let slots = fired.get(*s).unwrap_or_else(|| panic!("{s} never fired"));
        for (slot, n) in slots {
            assert_eq!(*n, 1, "{s} slot {slot} fired {n} times");
        }
        let first = *slots.keys().next().unwrap();
        let last = *slots.keys().last().unwrap();
        let span = (last - first).num_seconds() as usize + 1;
        assert_eq!(slots.len(), span, "{s}: a gap between {first} and {last}");
        total += slots.len();
    }
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for c in bus.job_commands().await {
        *per_id.entry(c.id.to_string()).or_default() += 1;
    }
    assert_eq!(per_id.len(), total, "one command per slot");
    assert!(per_id.values().all(|n| *n == 1));
    for s in schedules {
        for slot in fired[*s].keys() {
            let id = ids::slot_command(s, *slot, "").to_string();
            assert!(per_id.contains_key(&id), "{s} {slot}: command {id} missing");
        }
    }
    total
}

#[tokio::test]
async fn two_schedulers_at_once_fire_each_slot_exactly_once() {
    let bus = bus().await;
    let dir = tempfile::tempdir().unwrap();
    // 20 virtual seconds per real second: three every-second schedules give hundreds of slots
    // in a few real seconds.
    let anchor = Utc::now();
    let warp = Some((anchor, 20.0));
    let mut a = Proc::start(&bus, dir.path(), "a", warp);
    let mut b = Proc::start(&bus, dir.path(), "b", warp);
    let names = ["s1", "s2", "s3"];
    for n in names {
        bus.send(admin(), publish_schedule(n, "* * * * * *")).await;
    }
    let events = bus
        .wait_events(60, |e| {
            fired(e).values().map(|m| m.len()).sum::<usize>() >= 300
        })
        .await;
    a.stop();
    b.stop();
    assert_eq!(count_type(&events, "created"), 3);
    let total = assert_each_slot_once(&bus, &names).await;
    assert!(total >= 300, "{total} slots");
    // Both really raced: each one published slots the other had already sent, and JetStream
    // kept one copy.
    for p in [&a, &b] {
        assert!(
            p.log().contains("duplicate suppressed by jetstream"),
            "{}",
            p.log()
        );
    }
}

#[tokio::test]
async fn kill_9_mid_slot_and_restart_fires_every_slot_once() {
    let bus = bus().await;
    let dir = tempfile::tempdir().unwrap();
    let anchor = Utc::now();
    let warp = Some((anchor, 10.0));
    // Many schedules on the same second: each slot is a burst of a few hundred publishes, so a
    // kill lands inside one more often than not.
    let names: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let mut p = Proc::start(&bus, dir.path(), "k", warp);
    for n in &names {
        bus.send(admin(), publish_schedule(n, "* * * * * *")).await;
    }
    bus.wait_events(30, |e| count_type(e, "fired") >= 200).await;
    for round in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(137 + 61 * round)).await;
        p.kill9();
        p = Proc::start(&bus, dir.path(), "k", warp);
        let before = count_type(&bus.events().await, "fired");
        bus.wait_events(30, |e| count_type(e, "fired") >= before + 300)
            .await;
    }
    p.stop();
    assert_eq!(p.log().matches("log replayed").count(), 4, "{}", p.log());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let total = assert_each_slot_once(&bus, &refs).await;
    assert!(total >= 1_000, "{total} slots");
    assert_eq!(
        count_type(&bus.events().await, "slots_missed"),
        0,
        "restarts were quick"
    );
}

#[tokio::test]
async fn the_binary_fires_on_real_time() {
    let bus = bus().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(&bus, dir.path(), "real", None);
    let created_at = Utc::now();
    bus.send(admin(), publish_schedule("every-second", "* * * * * *"))
        .await;
    let events = bus.wait_events(15, |e| count_type(e, "fired") >= 3).await;
    p.stop();
    let fired = fired(&events);
    let slots: Vec<_> = fired["every-second"].keys().copied().collect();
    assert!(slots.len() >= 3, "{slots:?}\n{}", p.log());
    assert!(slots[0] > created_at - chrono::Duration::seconds(1));
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], chrono::Duration::seconds(1));
    }
    for e in &events {
        if let fleetbus_schemas::Event::Schedule(fleetbus_schemas::events::ScheduleEvent::Fired {
            slot,
            ..
        }) = &e.event
        {
            // Published after its slot, never before.
            assert!(e.time >= *slot, "fired at {} for slot {slot}", e.time);
        }
    }
    assert_each_slot_once(&bus, &["every-second"]).await;
}

#[tokio::test]
async fn a_crash_between_a_slots_commands_and_its_event_still_fires_the_slot_once() {
    use fleetbus_scheduler::bus::ABORT_AFTER_COMMANDS_ENV;
    let bus = bus().await;
    let dir = tempfile::tempdir().unwrap();
    let warp = Some((Utc::now(), 10.0));
    // Abort right after the 5th slot's command is acknowledged, before its `fired` event.
    let mut p = Proc::start_env(
        &bus,
        dir.path(),
        "crash",
        warp,
        &[(ABORT_AFTER_COMMANDS_ENV, "5")],
    );
    bus.send(admin(), publish_schedule("tick", "* * * * * *"))
        .await;
    let status = p.wait_exit();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the failpoint should abort the process: {status:?}\n{}",
        p.log()
    );
    let before = fired(&bus.events().await);
    let commands_before = bus.job_commands().await.len();
    let fired_before = before.get("tick").map_or(0, |m| m.len());
    // Usually 4 and 5; a loaded machine may put two slots in one batch.
    assert!(fired_before >= 4, "{fired_before}\n{}", p.log());
    assert!(
        commands_before > fired_before,
        "the last batch's commands went out, its events did not: {commands_before} commands, {fired_before} fired"
    );

    // Restart at once (within the duplicate window): the log says slot 5 has not fired.
    let mut p = Proc::start(&bus, dir.path(), "crash", warp);
    bus.wait_events(30, |e| count_type(e, "fired") >= 12).await;
    p.stop();
    assert!(
        p.log().contains("duplicate suppressed by jetstream"),
        "{}",
        p.log()
    );
    assert_each_slot_once(&bus, &["tick"]).await;
}
