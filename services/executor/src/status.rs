//! Structured service status from each manager's output, and the dashboard dot colour.

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleetbus_schemas::events::agent::ServiceState;
use fleetbus_schemas::events::service::{ServiceManager, ServiceStatus};

/// The dashboard dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dot {
    /// Running.
    Green,
    /// Failed or stopped.
    Red,
    /// Starting, stopping, reloading or unknown.
    Amber,
}

/// The colour of the dot for a state.
pub fn dot(state: ServiceState) -> Dot {
    match state {
        ServiceState::Running => Dot::Green,
        ServiceState::Failed | ServiceState::Stopped => Dot::Red,
        ServiceState::Starting
        | ServiceState::Stopping
        | ServiceState::Reloading
        | ServiceState::Unknown => Dot::Amber,
    }
}

/// Parses the output of the manager's status command (see [`crate::templates`]).
pub fn parse(manager: ServiceManager, output: &str, now: DateTime<Utc>) -> ServiceStatus {
    match manager {
        ServiceManager::Systemd => parse_systemd(output),
        ServiceManager::Runit => parse_runit(output, now),
    }
}

fn unknown(sub_state: &str) -> ServiceStatus {
    ServiceStatus {
        state: ServiceState::Unknown,
        sub_state: sub_state.to_string(),
        main_pid: None,
        since: None,
    }
}

/// `systemctl show --timestamp=unix --property=…` prints `Key=Value` lines.
pub fn parse_systemd(output: &str) -> ServiceStatus {
    let get = |key: &str| {
        output.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(str::trim)
        })
    };
    let Some(active) = get("ActiveState") else {
        return unknown("no status output");
    };
    if get("LoadState") == Some("not-found") {
        return unknown("not-found");
    }
    let sub = get("SubState").unwrap_or("");
    let state = match active {
        "active" => ServiceState::Running,
        "reloading" => ServiceState::Reloading,
        "inactive" => ServiceState::Stopped,
        "failed" => ServiceState::Failed,
        "activating" => ServiceState::Starting,
        "deactivating" => ServiceState::Stopping,
        _ => ServiceState::Unknown,
    };
    let main_pid = get("MainPID")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p != 0);
    let since = get("StateChangeTimestamp")
        .filter(|t| !t.is_empty())
        .or_else(|| get("ActiveEnterTimestamp"))
        .and_then(|t| t.strip_prefix('@'))
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|s| Utc.timestamp_opt(s, 0).single());
    ServiceStatus {
        state,
        sub_state: if sub.is_empty() {
            active.to_string()
        } else {
            sub.to_string()
        },
        main_pid,
        since,
    }
}

/// `sv status DIR` prints e.g. `run: /x/web: (pid 123) 45s, normally down; run: log: …`.
pub fn parse_runit(output: &str, now: DateTime<Utc>) -> ServiceStatus {
    let line = output.lines().next().unwrap_or("").trim();
    // The service's part ends at the first `; ` (the log service follows).
    let main = line.split("; ").next().unwrap_or("");
    let Some((word, rest)) = main.split_once(": ") else {
        return unknown(if line.is_empty() {
            "no status output"
        } else {
            line
        });
    };
    // rest = "<dir>: (pid N) 45s, flags…" — skip the dir.
    let detail = rest.split_once(": ").map(|(_, d)| d).unwrap_or(rest);
    let (pid, after_pid) = match detail.strip_prefix("(pid ") {
        Some(r) => match r.split_once(')') {
            Some((p, after)) => (p.trim().parse::<u32>().ok(), after.trim()),
            None => (None, r),
        },
        None => (None, detail.trim()),
    };
    let mut parts = after_pid.split(", ");
    let secs = parts
        .next()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<i64>().ok());
    let flags: Vec<&str> = parts.map(str::trim).collect();
    let want_up = flags.contains(&"want up");
    let want_down = flags.contains(&"want down");
    let state = match word {
        "run" if want_down => ServiceState::Stopping,
        "run" => ServiceState::Running,
        "down" if want_up => ServiceState::Starting,
        "down" => ServiceState::Stopped,
        "finish" => ServiceState::Stopping,
        "fail" => ServiceState::Failed,
        _ => ServiceState::Unknown,
    };
    let mut sub_state = word.to_string();
    for f in &flags {
        sub_state.push_str(", ");
        sub_state.push_str(f);
    }
    if state == ServiceState::Unknown || state == ServiceState::Failed {
        sub_state = main.to_string();
    }
    ServiceStatus {
        state,
        sub_state,
        main_pid: pid,
        since: secs.map(|s| now - Duration::seconds(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).single().unwrap()
    }

    #[test]
    fn runit_states() {
        let cases = [
            (
                "run: /x/web: (pid 123) 45s; run: log: (pid 122) 45s",
                ServiceState::Running,
                Some(123),
                Some(45),
            ),
            (
                "run: /x/web: (pid 123) 45s, normally down; run: log: (pid 1) 5s",
                ServiceState::Running,
                Some(123),
                Some(45),
            ),
            (
                "down: /x/web: 3s, normally up; run: log: (pid 122) 45s",
                ServiceState::Stopped,
                None,
                Some(3),
            ),
            (
                "down: /x/web: 0s, normally up, want up",
                ServiceState::Starting,
                None,
                Some(0),
            ),
            (
                "run: /x/web: (pid 9) 10s, want down",
                ServiceState::Stopping,
                Some(9),
                Some(10),
            ),
            (
                "finish: /x/web: (pid 9) 1s, normally up",
                ServiceState::Stopping,
                Some(9),
                Some(1),
            ),
            (
                "fail: /x/web: runsv not running",
                ServiceState::Failed,
                None,
                None,
            ),
            (
                "warning: /x/web: unable to open supervise/ok: file does not exist",
                ServiceState::Unknown,
                None,
                None,
            ),
            ("", ServiceState::Unknown, None, None),
        ];
        for (out, state, pid, secs) in cases {
            let s = parse_runit(out, now());
            assert_eq!(s.state, state, "{out}");
            assert_eq!(s.main_pid, pid, "{out}");
            assert_eq!(s.since, secs.map(|x| now() - Duration::seconds(x)), "{out}");
        }
        assert_eq!(
            parse_runit("down: /x/web: 0s, normally up, want up", now()).sub_state,
            "down, normally up, want up"
        );
    }

    #[test]
    fn systemd_states() {
        let out = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4321\nActiveEnterTimestamp=@1700000000\nStateChangeTimestamp=@1700000100\n";
        let s = parse_systemd(out);
        assert_eq!(s.state, ServiceState::Running);
        assert_eq!(s.sub_state, "running");
        assert_eq!(s.main_pid, Some(4321));
        assert_eq!(s.since, Utc.timestamp_opt(1_700_000_100, 0).single());
        for (active, sub, state) in [
            ("inactive", "dead", ServiceState::Stopped),
            ("failed", "failed", ServiceState::Failed),
            ("activating", "start-pre", ServiceState::Starting),
            ("deactivating", "stop-sigterm", ServiceState::Stopping),
            ("reloading", "reload", ServiceState::Reloading),
            ("maintenance", "x", ServiceState::Unknown),
        ] {
            let s = parse_systemd(&format!(
                "LoadState=loaded\nActiveState={active}\nSubState={sub}\nMainPID=0\n"
            ));
            assert_eq!(s.state, state, "{active}");
            assert_eq!(s.main_pid, None);
            assert_eq!(s.sub_state, sub);
        }
        assert_eq!(
            parse_systemd("LoadState=not-found\nActiveState=inactive\n").state,
            ServiceState::Unknown
        );
        assert_eq!(parse_systemd("garbage").state, ServiceState::Unknown);
    }

    #[test]
    fn dots() {
        assert_eq!(dot(ServiceState::Running), Dot::Green);
        assert_eq!(dot(ServiceState::Failed), Dot::Red);
        assert_eq!(dot(ServiceState::Stopped), Dot::Red);
        assert_eq!(dot(ServiceState::Starting), Dot::Amber);
        assert_eq!(dot(ServiceState::Unknown), Dot::Amber);
    }
}
