//! Allowlisted action templates: the only command lines a service action can become.
//!
//! Each [`ServiceAction`] maps to one fixed template per manager; the only variable parts are the
//! service's handle (a systemd unit name or an absolute runit service dir, validated here) and,
//! for logs, a line count capped at [`MAX_LOG_LINES`]. Actions that change state run as
//! `sudo -n <exact command>`, and [`crate::sudoers`] prints exactly those commands as scoped
//! sudoers lines.

use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};

use crate::quote::quote;
use crate::RemoteError;

/// The most log lines an action returns.
pub const MAX_LOG_LINES: u32 = 500;
/// Log lines returned when the command does not say.
pub const DEFAULT_LOG_LINES: u32 = 100;

/// Absolute paths of the programs templates run (sudoers needs exact paths).
pub const SYSTEMCTL: &str = "/usr/bin/systemctl";
/// journalctl.
pub const JOURNALCTL: &str = "/usr/bin/journalctl";
/// runit's sv.
pub const SV: &str = "/usr/bin/sv";
/// touch (runit disable).
pub const TOUCH: &str = "/usr/bin/touch";
/// rm (runit enable).
pub const RM: &str = "/usr/bin/rm";

/// A command line ready to send, with what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    /// The full line given to the remote shell.
    pub line: String,
    /// The privileged part run under `sudo -n` (exactly as a sudoers line must allow it), if any.
    pub privileged: Option<String>,
}

impl RemoteCommand {
    fn plain(line: String) -> Self {
        RemoteCommand {
            line,
            privileged: None,
        }
    }

    /// `sudo -n <cmd>`; `cmd` must already be quoted.
    pub fn sudo(cmd: String) -> Self {
        RemoteCommand {
            line: format!("sudo -n {cmd}"),
            privileged: Some(cmd),
        }
    }

    /// `sudo -n <cmd> | <rest>`: privileged producer, unprivileged filter.
    fn sudo_piped(cmd: String, rest: &str) -> Self {
        RemoteCommand {
            line: format!("sudo -n {cmd} | {rest}"),
            privileged: Some(cmd),
        }
    }
}

/// Checks a systemd unit name: `[A-Za-z0-9:_.@\\-]`, not starting with `-`, at most 255 bytes.
pub fn validate_unit(unit: &str) -> Result<(), RemoteError> {
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with('-')
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Invalid(format!(
            "systemd unit {unit:?} is not a valid unit name (expected e.g. nginx.service)"
        )))
    }
}

/// Checks an absolute path used as a runit service dir or log path: `/`-rooted, only
/// `[A-Za-z0-9._/-]`, no `..` component, no `-` at the start of a component.
pub fn validate_abs_path(what: &str, path: &str) -> Result<(), RemoteError> {
    let ok = path.starts_with('/')
        && path.len() <= 4096
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && path
            .split('/')
            .all(|c| c != ".." && c != "." && !c.starts_with('-'));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Invalid(format!(
            "{what} {path:?} must be an absolute path of [A-Za-z0-9._/-] without '..'"
        )))
    }
}

/// Validates a service's handle and log path for its manager.
pub fn validate_spec(spec: &ServiceSpec) -> Result<(), RemoteError> {
    match spec.manager {
        ServiceManager::Systemd => validate_unit(&spec.unit)?,
        ServiceManager::Runit => validate_abs_path("runit service dir", &spec.unit)?,
    }
    if let Some(p) = &spec.log_path {
        validate_abs_path("log path", p)?;
    }
    Ok(())
}

/// The log file of a runit service: its `log_path` (a file, or an svlogd dir whose `current`
/// is read), else `<dir>/log/main/current`.
fn runit_log_target(spec: &ServiceSpec) -> String {
    match &spec.log_path {
        Some(p) => p.clone(),
        None => format!("{}/log/main/current", spec.unit.trim_end_matches('/')),
    }
}

/// The command line for `action` on `spec` (not checked against the allowlist: see
/// the executor's `inventory`). `lines` applies to logs and is capped at [`MAX_LOG_LINES`].
pub fn action_command(
    spec: &ServiceSpec,
    action: ServiceAction,
    lines: Option<u32>,
) -> Result<RemoteCommand, RemoteError> {
    validate_spec(spec)?;
    let n = lines.unwrap_or(DEFAULT_LOG_LINES).clamp(1, MAX_LOG_LINES);
    let unit = quote(&spec.unit)?;
    Ok(match spec.manager {
        ServiceManager::Systemd => match action {
            // `systemctl show` needs no privilege; unix timestamps parse without time zone names.
            ServiceAction::Status => RemoteCommand::plain(format!(
                "{SYSTEMCTL} show --timestamp=unix --property=LoadState,ActiveState,SubState,MainPID,ActiveEnterTimestamp,StateChangeTimestamp -- {unit}"
            )),
            ServiceAction::Logs => RemoteCommand::sudo_piped(
                format!("{JOURNALCTL} -u {unit} -n {MAX_LOG_LINES} --no-pager -o short-iso"),
                &format!("tail -n {n}"),
            ),
            other => {
                RemoteCommand::sudo(format!("{SYSTEMCTL} {} {unit}", systemd_verb(other)))
            }
        },
        ServiceManager::Runit => match action {
            ServiceAction::Status => RemoteCommand::sudo(format!("{SV} status {unit}")),
            ServiceAction::Start => RemoteCommand::sudo(format!("{SV} -w 10 -v up {unit}")),
            ServiceAction::Stop => RemoteCommand::sudo(format!("{SV} -w 10 -v down {unit}")),
            ServiceAction::Restart => RemoteCommand::sudo(format!("{SV} -w 10 -v restart {unit}")),
            ServiceAction::Reload => RemoteCommand::sudo(format!("{SV} hup {unit}")),
            // runit starts a service at boot unless its dir holds a `down` file.
            ServiceAction::Enable => RemoteCommand::sudo(format!(
                "{RM} -f {}",
                quote(&format!("{}/down", spec.unit.trim_end_matches('/')))?
            )),
            ServiceAction::Disable => RemoteCommand::sudo(format!(
                "{TOUCH} {}",
                quote(&format!("{}/down", spec.unit.trim_end_matches('/')))?
            )),
            ServiceAction::Logs => {
                let target = quote(&runit_log_target(spec))?;
                RemoteCommand::plain(format!(
                    "f={target}; if [ -d \"$f\" ]; then f=\"$f/current\"; fi; tail -n {n} -- \"$f\""
                ))
            }
        },
    })
}

fn systemd_verb(action: ServiceAction) -> &'static str {
    match action {
        ServiceAction::Status => "status",
        ServiceAction::Start => "start",
        ServiceAction::Stop => "stop",
        ServiceAction::Restart => "restart",
        ServiceAction::Reload => "reload",
        ServiceAction::Logs => "logs",
        ServiceAction::Enable => "enable",
        ServiceAction::Disable => "disable",
    }
}

/// Wraps a line with `nice`/`ionice` for heavy jobs (values already range-checked).
pub fn with_priority(
    line: &str,
    nice: Option<i8>,
    ionice_class: Option<u8>,
) -> Result<String, RemoteError> {
    if let Some(n) = nice {
        if !(-20..=19).contains(&n) {
            return Err(RemoteError::Invalid(format!("nice {n} is outside -20..19")));
        }
    }
    if let Some(c) = ionice_class {
        if !(1..=3).contains(&c) {
            return Err(RemoteError::Invalid(format!(
                "ionice class {c} is outside 1..3 (1 realtime, 2 best-effort, 3 idle)"
            )));
        }
    }
    let mut prefix = String::new();
    if let Some(c) = ionice_class {
        prefix.push_str(&format!("ionice -c {c} "));
    }
    if let Some(n) = nice {
        prefix.push_str(&format!("nice -n {n} "));
    }
    if prefix.is_empty() {
        return Ok(line.to_string());
    }
    Ok(format!("{prefix}sh -c {}", quote(line)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::HostId;

    fn spec(manager: ServiceManager, unit: &str) -> ServiceSpec {
        ServiceSpec {
            host: HostId::new("h1").unwrap(),
            name: "web".parse().unwrap(),
            manager,
            unit: unit.into(),
            actions: ServiceAction::ALL.to_vec(),
            log_path: None,
            expected_running: true,
        }
    }

    #[test]
    fn systemd_templates_are_exact() {
        let s = spec(ServiceManager::Systemd, "nginx.service");
        let r = action_command(&s, ServiceAction::Restart, None).unwrap();
        assert_eq!(r.line, "sudo -n /usr/bin/systemctl restart nginx.service");
        assert_eq!(
            r.privileged.as_deref(),
            Some("/usr/bin/systemctl restart nginx.service")
        );
        let st = action_command(&s, ServiceAction::Status, None).unwrap();
        assert!(st.privileged.is_none());
        assert!(st.line.starts_with("/usr/bin/systemctl show"));
        let logs = action_command(&s, ServiceAction::Logs, Some(10_000)).unwrap();
        assert!(logs.line.ends_with("| tail -n 500"), "{}", logs.line);
    }

    #[test]
    fn runit_templates_use_absolute_dirs() {
        let s = spec(ServiceManager::Runit, "/var/lib/fleet/h2/sv/web");
        assert_eq!(
            action_command(&s, ServiceAction::Stop, None).unwrap().line,
            "sudo -n /usr/bin/sv -w 10 -v down /var/lib/fleet/h2/sv/web"
        );
        assert_eq!(
            action_command(&s, ServiceAction::Disable, None)
                .unwrap()
                .line,
            "sudo -n /usr/bin/touch /var/lib/fleet/h2/sv/web/down"
        );
        let logs = action_command(&s, ServiceAction::Logs, Some(0)).unwrap();
        assert!(logs.line.contains("tail -n 1 --"), "{}", logs.line);
        assert!(logs
            .line
            .contains("/var/lib/fleet/h2/sv/web/log/main/current"));
    }

    #[test]
    fn hostile_handles_are_refused() {
        for unit in ["-x.service", "a b", "x;reboot", "$(id)", ""] {
            assert!(validate_unit(unit).is_err(), "{unit}");
        }
        for dir in [
            "relative/sv",
            "/etc/sv/../shadow",
            "/x/-rf",
            "/x/$(id)",
            "/x y",
        ] {
            assert!(validate_abs_path("dir", dir).is_err(), "{dir}");
        }
        let s = spec(ServiceManager::Runit, "/etc/sv/../../bin");
        assert!(action_command(&s, ServiceAction::Start, None).is_err());
    }

    #[test]
    fn priority_wraps_the_line() {
        assert_eq!(with_priority("ls", None, None).unwrap(), "ls");
        assert_eq!(
            with_priority("ls -l", Some(10), Some(3)).unwrap(),
            "ionice -c 3 nice -n 10 sh -c 'ls -l'"
        );
        assert!(with_priority("ls", Some(30), None).is_err());
        assert!(with_priority("ls", None, Some(0)).is_err());
    }
}
