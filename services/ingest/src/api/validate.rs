//! Value checks of what agents post: text, times within the configured skew, numbers, and the
//! agent/host a body claims. Each error names the JSON path of the field.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use fleetbus_schemas::{AgentId, HostId};

use super::{invalid, AppError, NoticeBody, ReportBody};
use crate::config::Limits;

/// The event times ingest accepts, fixed once per request from its clock and the configured
/// skew (`limits.max_future_skew_s`, `limits.max_past_skew_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// The earliest accepted time.
    pub earliest: DateTime<Utc>,
    /// The latest accepted time.
    pub latest: DateTime<Utc>,
}

impl TimeWindow {
    /// The window around `now`.
    pub fn around(now: DateTime<Utc>, limits: &Limits) -> TimeWindow {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        TimeWindow {
            earliest: now
                .checked_sub_signed(secs(limits.max_past_skew_s))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            latest: now
                .checked_add_signed(secs(limits.max_future_skew_s))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    fn check(&self, path: &str, time: DateTime<Utc>) -> Result<(), AppError> {
        if time > self.latest {
            return Err(invalid(
                path,
                format!(
                    "{} is later than {} (ingest's clock plus the allowed skew); check the host clock",
                    time.to_rfc3339(),
                    self.latest.to_rfc3339()
                ),
            ));
        }
        if time < self.earliest {
            return Err(invalid(
                path,
                format!(
                    "{} is earlier than {} (ingest's clock minus the allowed skew); check the host clock",
                    time.to_rfc3339(),
                    self.earliest.to_rfc3339()
                ),
            ));
        }
        Ok(())
    }
}

fn check_text(
    path: &str,
    value: &str,
    max_chars: usize,
    allow_newlines: bool,
) -> Result<(), AppError> {
    if value.chars().count() > max_chars {
        return Err(invalid(path, format!("at most {max_chars} characters")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !(allow_newlines && (*c == '\n' || *c == '\t')))
    {
        return Err(invalid(
            path,
            format!("control character U+{:04X} is not allowed", c as u32),
        ));
    }
    Ok(())
}

fn check_finite(path: &str, v: f32, max: f32) -> Result<(), AppError> {
    if !v.is_finite() || v < 0.0 || v > max {
        return Err(invalid(path, format!("must be between 0 and {max}")));
    }
    Ok(())
}

/// Checks a report's values; `prefix` is its JSON path (`""` or `reports[3]`).
pub fn validate_report(prefix: &str, r: &ReportBody, window: &TimeWindow) -> Result<(), AppError> {
    let p = |field: &str| {
        if prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{prefix}.{field}")
        }
    };
    window.check(&p("time"), r.time)?;
    if r.agent_version.is_empty() {
        return Err(invalid(p("agent_version"), "must not be empty"));
    }
    check_text(&p("agent_version"), &r.agent_version, 64, false)?;
    let res = &r.resources;
    check_finite(&p("resources.cpu_pct"), res.cpu_pct, 100.0)?;
    check_finite(&p("resources.load1"), res.load1, 1e6)?;
    check_finite(&p("resources.load5"), res.load5, 1e6)?;
    check_finite(&p("resources.load15"), res.load15, 1e6)?;
    if r.services.len() > 256 {
        return Err(invalid(p("services"), "at most 256 services per report"));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in r.services.iter().enumerate() {
        if !seen.insert(&s.name) {
            return Err(invalid(
                p(&format!("services[{i}].name")),
                format!("service '{}' is listed twice", s.name),
            ));
        }
        if let Some(d) = &s.detail {
            check_text(&p(&format!("services[{i}].detail")), d, 200, false)?;
        }
    }
    if let Some(h) = &r.config_hash {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                p("config_hash"),
                "must be 64 hex characters (SHA-256)",
            ));
        }
    }
    Ok(())
}

/// Checks a notice's values.
pub fn validate_notice(prefix: &str, n: &NoticeBody, window: &TimeWindow) -> Result<(), AppError> {
    let p = |field: &str| format!("{prefix}.{field}");
    window.check(&p("time"), n.time)?;
    check_text(&p("message"), &n.message, 4096, true)?;
    if n.fields.len() > 32 {
        return Err(invalid(p("fields"), "at most 32 fields"));
    }
    for (k, v) in &n.fields {
        if k.is_empty() {
            return Err(invalid(p("fields"), "field names must not be empty"));
        }
        check_text(&p(&format!("fields.{k}")), k, 64, false)?;
        check_text(&p(&format!("fields.{k}")), v, 1024, false)?;
    }
    Ok(())
}

pub(super) fn same_agent(path: &AgentId, body: &AgentId, at: &str) -> Result<(), AppError> {
    if path != body {
        return Err(AppError::Forbidden(format!(
            "{at}: agent '{body}' in the body does not match agent '{path}' in the path and key"
        )));
    }
    Ok(())
}

pub(super) fn same_host(
    expected: &Option<HostId>,
    body: &HostId,
    at: &str,
) -> Result<(), AppError> {
    match expected {
        Some(h) if h != body => Err(AppError::Forbidden(format!(
            "{at}: this agent's key was issued for host '{h}', not '{body}'"
        ))),
        _ => Ok(()),
    }
}
