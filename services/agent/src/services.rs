//! Service states from the local service manager: systemd (`systemctl show`) when the host runs
//! systemd, runit (`sv status`) otherwise.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleetbus_schemas::events::agent::{ServiceObservation, ServiceState};

use crate::config::{Manager, ServiceWatch};

/// Longest `detail` text on the wire.
const MAX_DETAIL: usize = 200;

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) success: bool,
}

/// Runs a program without a shell, killing it after `timeout`.
pub(crate) async fn run_command(
    program: &str,
    args: &[&OsStr],
    timeout: Duration,
) -> Result<Output, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
        }),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => Err(format!("{program} did not finish within {timeout:?}")),
    }
}

/// True when the host was booted with systemd (the check `sd_booted()` does).
pub(crate) fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn detail(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.chars().take(MAX_DETAIL).collect())
}

/// Maps `systemctl show -p ActiveState,SubState UNIT` output to a state and the sub-state.
pub(crate) fn parse_systemctl_show(text: &str) -> (ServiceState, Option<String>) {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let sub = value("SubState").and_then(detail);
    let state = match value("ActiveState") {
        // Includes "active (exited)": a oneshot that ran and exited successfully is fine.
        Some("active") => ServiceState::Running,
        Some("inactive") => ServiceState::Stopped,
        Some("failed") => ServiceState::Failed,
        Some("activating") => ServiceState::Starting,
        Some("deactivating") => ServiceState::Stopping,
        Some("reloading") => ServiceState::Reloading,
        _ => ServiceState::Unknown,
    };
    (state, sub)
}

/// Maps `sv status DIR` output to a state. Examples of what runit prints:
/// `run: /etc/sv/nginx: (pid 123) 45s; run: log: (pid 12) 45s`,
/// `down: /etc/sv/nginx: 3s, normally up`, `run: x: (pid 5) 1s, want down`,
/// `finish: x: (pid 7) 0s`, `fail: x: unable to change to service directory: …`,
/// `warning: x: unable to open supervise/ok: …`.
pub(crate) fn parse_sv_status(text: &str) -> (ServiceState, Option<String>) {
    // Only the service's own status, not its log service after the ';'.
    let main = text.lines().next().unwrap_or_default();
    let main = main.split(';').next().unwrap_or_default().trim();
    let state = if let Some(rest) = main.strip_prefix("run:") {
        if rest.contains("want down") {
            ServiceState::Stopping
        } else {
            ServiceState::Running
        }
    } else if let Some(rest) = main.strip_prefix("down:") {
        if rest.contains("want up") {
            ServiceState::Starting
        } else if rest.contains("normally up") {
            // Down although it should be up: someone stopped it or it keeps dying.
            ServiceState::Failed
        } else {
            ServiceState::Stopped
        }
    } else if main.starts_with("finish:") {
        ServiceState::Stopping
    } else {
        ServiceState::Unknown
    };
    (state, detail(main))
}

/// Reads one service's state. Errors become `Unknown` with the reason in `detail`, so one
/// broken service never stops a report.
pub(crate) async fn observe(watch: &ServiceWatch, timeout: Duration) -> ServiceObservation {
    let manager = watch.manager.unwrap_or(if systemd_running() {
        Manager::Systemd
    } else {
        Manager::Runit
    });
    let unit = watch.unit();
    let (program, args): (&str, Vec<&OsStr>) = match manager {
        Manager::Systemd => (
            "systemctl",
            vec![
                "show".as_ref(),
                "-p".as_ref(),
                "ActiveState,SubState".as_ref(),
                "--".as_ref(),
                unit.as_ref(),
            ],
        ),
        Manager::Runit => ("sv", vec!["status".as_ref(), unit.as_ref()]),
    };
    let (state, detail) = match run_command(program, &args, timeout).await {
        Ok(out) => {
            let (state, d) = match manager {
                Manager::Systemd => parse_systemctl_show(&out.stdout),
                Manager::Runit => parse_sv_status(&out.stdout),
            };
            if state == ServiceState::Unknown && !out.success {
                (
                    state,
                    detail(&format!("{} {}", out.stdout.trim(), out.stderr.trim())),
                )
            } else {
                (state, d)
            }
        }
        Err(e) => (ServiceState::Unknown, detail(&e)),
    };
    ServiceObservation {
        name: watch.name.clone(),
        state,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_maps_active_states() {
        let cases = [
            (
                "ActiveState=active\nSubState=running\n",
                ServiceState::Running,
                Some("running"),
            ),
            (
                "ActiveState=active\nSubState=exited\n",
                ServiceState::Running,
                Some("exited"),
            ),
            (
                "ActiveState=inactive\nSubState=dead\n",
                ServiceState::Stopped,
                Some("dead"),
            ),
            (
                "ActiveState=failed\nSubState=failed\n",
                ServiceState::Failed,
                Some("failed"),
            ),
            (
                "SubState=start\nActiveState=activating\n",
                ServiceState::Starting,
                Some("start"),
            ),
            (
                "ActiveState=deactivating\nSubState=stop-sigterm\n",
                ServiceState::Stopping,
                Some("stop-sigterm"),
            ),
            (
                "ActiveState=reloading\nSubState=reload\n",
                ServiceState::Reloading,
                Some("reload"),
            ),
            ("", ServiceState::Unknown, None),
            ("ActiveStateX=active\n", ServiceState::Unknown, None),
        ];
        for (text, state, sub) in cases {
            assert_eq!(
                parse_systemctl_show(text),
                (state, sub.map(String::from)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn sv_status_maps_runit_states() {
        let cases = [
            (
                "run: /etc/sv/nginx: (pid 123) 45s; run: log: (pid 12) 45s\n",
                ServiceState::Running,
            ),
            ("down: /etc/sv/nginx: 3s\n", ServiceState::Stopped),
            (
                "down: /etc/sv/nginx: 3s, normally up\n",
                ServiceState::Failed,
            ),
            (
                "down: /etc/sv/nginx: 1s, normally up, want up\n",
                ServiceState::Starting,
            ),
            (
                "run: /etc/sv/nginx: (pid 5) 1s, want down\n",
                ServiceState::Stopping,
            ),
            (
                "finish: /etc/sv/nginx: (pid 7) 0s\n",
                ServiceState::Stopping,
            ),
            (
                "fail: /etc/sv/x: unable to change to service directory: file does not exist\n",
                ServiceState::Unknown,
            ),
            (
                "warning: /etc/sv/x: unable to open supervise/ok: file does not exist\n",
                ServiceState::Unknown,
            ),
            ("", ServiceState::Unknown),
        ];
        for (text, state) in cases {
            assert_eq!(parse_sv_status(text).0, state, "{text:?}");
        }
        // The log service's part is not in the detail, and detail is capped.
        let (_, d) = parse_sv_status("run: /etc/sv/nginx: (pid 123) 45s; run: log: (pid 12) 45s");
        assert_eq!(d.as_deref(), Some("run: /etc/sv/nginx: (pid 123) 45s"));
        let long = format!("run: {}", "x".repeat(500));
        assert_eq!(parse_sv_status(&long).1.map(|d| d.len()), Some(MAX_DETAIL));
    }

    #[tokio::test]
    async fn a_missing_runit_service_is_unknown_with_the_reason() {
        let watch = ServiceWatch {
            name: "nothere".parse().unwrap(),
            manager: Some(Manager::Runit),
            unit: Some("/nonexistent/sv/nothere".into()),
        };
        let obs = observe(&watch, Duration::from_secs(5)).await;
        assert_eq!(obs.state, ServiceState::Unknown);
        assert!(obs.detail.is_some_and(|d| !d.is_empty()));
    }
}
