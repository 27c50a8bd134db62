//! View models for the templates and the small pure helpers they need: dot colours, SVG
//! sparklines, ANSI colours rendered as escaped HTML, durations.
//!
//! Templates escape every `{{ value }}`; the only `|safe` values are built here from numbers
//! and fixed strings (sparklines) or escaped here first (ANSI output).

use chrono::{DateTime, Utc};
use fleetbus_projections::fleet::ResourceSample;
use fleetbus_projections::{FleetStatus, HostStatus, Projections};
use fleetbus_schemas::events::agent::Dot;
use fleetbus_schemas::events::service::ServiceAction;
use fleetbus_schemas::queries::config::{AgentConfigView, DriftState};
use fleetbus_schemas::UserRole;

use crate::auth::{role_name, Principal};

/// What every page's layout needs.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    /// User name.
    pub user: String,
    /// Role name.
    pub role: &'static str,
    /// CSRF token for forms and scripts.
    pub csrf: String,
    /// Operator or above.
    pub operator: bool,
    /// Admin.
    pub admin: bool,
    /// The current page (highlights the menu entry).
    pub page: &'static str,
}

impl Nav {
    /// For a principal on a page.
    pub(crate) fn new(p: &Principal, page: &'static str) -> Nav {
        Nav {
            user: p.user.clone(),
            role: role_name(p.role),
            csrf: p.csrf().to_owned(),
            operator: p.can(UserRole::Operator),
            admin: p.can(UserRole::Admin),
            page,
        }
    }
}

/// CSS class of a dot.
pub(crate) fn dot_class(dot: Dot) -> &'static str {
    match dot {
        Dot::Green => "green",
        Dot::Red => "red",
        Dot::Amber => "amber",
    }
}

/// A service's dot on the overview.
#[derive(Debug, Clone)]
pub(crate) struct SvcDot {
    /// `host:service`.
    pub key: String,
    /// Service name.
    pub name: String,
    /// State name.
    pub state: &'static str,
    /// Dot class.
    pub dot: &'static str,
}

/// One host row on the overview.
#[derive(Debug, Clone)]
pub(crate) struct HostRow {
    /// Host id.
    pub id: String,
    /// OK/WARN/…
    pub state: &'static str,
    /// Lowercase state for CSS.
    pub state_class: String,
    /// Open alerts.
    pub open_alerts: usize,
    /// Events in the last 24 hours.
    pub events_24h: u32,
    /// Error events in the last 24 hours.
    pub errors_24h: u32,
    /// "3 s ago" or "never".
    pub last_seen: String,
    /// Tags, comma separated.
    pub tags: String,
    /// Roles, comma separated.
    pub roles: String,
    /// Services.
    pub services: Vec<SvcDot>,
}

/// Builds host rows from a fleet status (and, when live, the alerts and counts).
pub(crate) fn host_rows<'a>(
    hosts: impl Iterator<Item = &'a HostStatus>,
    proj: Option<&Projections>,
    now: DateTime<Utc>,
) -> Vec<HostRow> {
    hosts
        .map(|h| {
            let state = h.state();
            let (open_alerts, bucket) = match proj {
                Some(p) => (
                    p.alerts.open_count(&h.host),
                    p.counts.last_24h(&h.host, now),
                ),
                None => (0, Default::default()),
            };
            HostRow {
                id: h.host.to_string(),
                state: state.as_str(),
                state_class: state.as_str().to_ascii_lowercase(),
                open_alerts,
                events_24h: bucket.total,
                errors_24h: bucket.errors,
                last_seen: ago(h.last_seen, now),
                tags: h.tags.join(", "),
                roles: h.roles.join(", "),
                services: h
                    .services
                    .values()
                    .map(|s| SvcDot {
                        key: format!("{}:{}", h.host, s.name),
                        name: s.name.to_string(),
                        state: s.state.as_str(),
                        dot: dot_class(s.state.dot()),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Filters for the overview.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct OverviewFilter {
    /// Tag.
    #[serde(default)]
    pub tag: String,
    /// Role.
    #[serde(default)]
    pub role: String,
    /// Host state (OK, WARN, …).
    #[serde(default)]
    pub state: String,
    /// Time travel: RFC 3339 or `YYYY-MM-DDTHH:MM` (UTC).
    #[serde(default)]
    pub as_of: String,
    /// Non-empty (the checkbox sends `on`): also list hosts whose agent is blocked.
    #[serde(default)]
    pub show_blocked: String,
}

impl OverviewFilter {
    /// Hosts whose agent is blocked are hidden unless asked for, by the toggle or by a state
    /// filter (`state=BLOCKED`, or any explicit state the host matches).
    pub(crate) fn shows_blocked(&self) -> bool {
        !self.show_blocked.trim().is_empty() || !self.state.trim().is_empty()
    }
}

/// Applies the filter.
pub(crate) fn filter_hosts<'a>(
    fleet: &'a FleetStatus,
    f: &'a OverviewFilter,
) -> impl Iterator<Item = &'a HostStatus> {
    fleet.hosts.values().filter(move |h| {
        (!h.blocked || f.shows_blocked())
            && (f.tag.is_empty() || h.tags.contains(&f.tag))
            && (f.role.is_empty() || h.roles.contains(&f.role))
            && (f.state.is_empty() || h.state().as_str().eq_ignore_ascii_case(&f.state))
    })
}

/// Parses the "as of" input: RFC 3339, or the `datetime-local` format, taken as UTC.
pub(crate) fn parse_as_of(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago", or "never".
pub(crate) fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `1.2 s`, `340 ms`, `2 min 5 s`.
pub(crate) fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Short UTC time.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A resource widget on the host page.
#[derive(Debug, Clone)]
pub(crate) struct Widget {
    /// "CPU".
    pub label: &'static str,
    /// "23 %".
    pub value: String,
    /// Inline SVG (numbers only).
    pub spark: String,
}

/// A 120×24 SVG polyline of values in `0..=max`.
pub(crate) fn sparkline(values: &[f32], max: f32) -> String {
    const W: f32 = 120.0;
    const H: f32 = 24.0;
    if values.is_empty() {
        return format!(
            r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" aria-hidden="true"></svg>"#
        );
    }
    let max = if max > 0.0 { max } else { 1.0 };
    // One reading is a flat line, not an invisible point.
    let values: Vec<f32> = if values.len() == 1 {
        vec![values[0], values[0]]
    } else {
        values.to_vec()
    };
    let step = if values.len() > 1 {
        W / (values.len() - 1) as f32
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = if v.is_finite() {
                v.clamp(0.0, max)
            } else {
                0.0
            };
            format!(
                "{:.1},{:.1}",
                i as f32 * step,
                H - 1.0 - v / max * (H - 2.0)
            )
        })
        .collect();
    format!(
        r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" aria-hidden="true"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        points.join(" ")
    )
}

/// Widgets for a host's latest resources and recent samples.
pub(crate) fn widgets(h: &HostStatus) -> Vec<Widget> {
    let recent: Vec<&ResourceSample> = h.recent.iter().collect();
    let series = |f: fn(&ResourceSample) -> f32| recent.iter().map(|s| f(s)).collect::<Vec<f32>>();
    let Some(r) = &h.resources else {
        return vec![];
    };
    let load_max = series(|s| s.load1).into_iter().fold(1.0f32, f32::max);
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        }
    };
    vec![
        Widget {
            label: "CPU",
            value: format!("{:.0} %", r.cpu_pct),
            spark: sparkline(&series(|s| s.cpu_pct), 100.0),
        },
        Widget {
            label: "Memory",
            value: format!(
                "{:.0} % of {} MiB",
                pct(r.mem_used_kb, r.mem_total_kb),
                r.mem_total_kb / 1024
            ),
            spark: sparkline(&series(|s| s.mem_pct), 100.0),
        },
        Widget {
            label: "Disk",
            value: format!(
                "{:.0} % of {} GiB",
                pct(r.disk_used_kb, r.disk_total_kb),
                r.disk_total_kb / (1024 * 1024)
            ),
            spark: sparkline(&series(|s| s.disk_pct), 100.0),
        },
        Widget {
            label: "Load",
            value: format!("{:.2} {:.2} {:.2}", r.load1, r.load5, r.load15),
            spark: sparkline(&series(|s| s.load1), load_max),
        },
        Widget {
            label: "Uptime",
            value: uptime(r.uptime_s),
            spark: String::new(),
        },
    ]
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else {
        format!("{h} h {m} min")
    }
}

/// A service panel on the host page.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    /// Host id.
    pub host: String,
    /// Service name.
    pub name: String,
    /// `host:service`.
    pub key: String,
    /// State name.
    pub state: &'static str,
    /// Dot class.
    pub dot: &'static str,
    /// Since when.
    pub since: String,
    /// The manager's words.
    pub detail: String,
    /// Buttons this user may press.
    pub buttons: Vec<&'static str>,
    /// Whether the logs viewer is offered.
    pub logs: bool,
}

/// The minimum role for a service action. Every action runs a command on the host over SSH,
/// status and logs included, so the executor (which checks again) wants an operator.
pub(crate) fn action_role(_action: ServiceAction) -> UserRole {
    UserRole::Operator
}

/// Builds the panels of a host: buttons only for allowed actions and roles.
pub(crate) fn panels(
    h: &HostStatus,
    proj: &Projections,
    role: UserRole,
    now: DateTime<Utc>,
) -> Vec<Panel> {
    h.services
        .values()
        .map(|s| {
            let key = fleetbus_schemas::ServiceKey::new(h.host.clone(), s.name.clone());
            let allowed: Vec<ServiceAction> = proj
                .registry
                .services
                .get(&key)
                .map(|spec| spec.actions.clone())
                .unwrap_or_default();
            let buttons = [
                ServiceAction::Start,
                ServiceAction::Stop,
                ServiceAction::Restart,
                ServiceAction::Reload,
                ServiceAction::Status,
            ]
            .into_iter()
            .filter(|a| allowed.contains(a) && role >= action_role(*a))
            .map(ServiceAction::as_str)
            .collect();
            Panel {
                host: h.host.to_string(),
                name: s.name.to_string(),
                key: key.to_string(),
                state: s.state.as_str(),
                dot: dot_class(s.state.dot()),
                since: ago(s.since, now),
                detail: s
                    .detail
                    .clone()
                    .or_else(|| s.sub_state.clone())
                    .unwrap_or_default(),
                buttons,
                logs: allowed.contains(&ServiceAction::Logs) && role >= UserRole::Operator,
            }
        })
        .collect()
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders terminal output as HTML: text escaped, SGR colour codes (30–37, 90–97, bold,
/// reset) turned into `<span class="ansi-…">`, every other escape sequence dropped.
pub(crate) fn ansi_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    let mut chars = text.chars().peekable();
    let mut plain = String::new();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        out.push_str(&escape(&plain));
        plain.clear();
        if chars.peek() != Some(&'[') {
            continue;
        }
        chars.next();
        let mut params = String::new();
        let mut final_byte = None;
        for p in chars.by_ref() {
            if p.is_ascii_digit() || p == ';' {
                params.push(p);
            } else {
                final_byte = Some(p);
                break;
            }
        }
        if final_byte != Some('m') {
            continue;
        }
        let classes = sgr_classes(&params);
        if open {
            out.push_str("</span>");
            open = false;
        }
        if !classes.is_empty() {
            out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
            open = true;
        }
    }
    out.push_str(&escape(&plain));
    if open {
        out.push_str("</span>");
    }
    out
}

fn sgr_classes(params: &str) -> Vec<String> {
    let mut classes = Vec::new();
    for p in params.split(';') {
        match p.parse::<u8>().unwrap_or(0) {
            0 => classes.clear(),
            1 => classes.push("ansi-bold".to_owned()),
            n @ (30..=37 | 90..=97) => classes.push(format!("ansi-fg-{n}")),
            n @ (40..=47) => classes.push(format!("ansi-bg-{n}")),
            _ => {}
        }
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_output_is_escaped_and_coloured() {
        let html =
            ansi_to_html("\u{1b}[31merror\u{1b}[0m <script>alert(1)</script>\u{1b}]0;title\u{7}");
        assert!(
            html.starts_with("<span class=\"ansi-fg-31\">error</span>"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert_eq!(
            ansi_to_html("\u{1b}[1;32mok"),
            "<span class=\"ansi-bold ansi-fg-32\">ok</span>"
        );
        assert_eq!(ansi_to_html("\u{1b}[2Kx"), "x");
    }

    #[test]
    fn sparkline_is_numbers_only_and_clamped() {
        let svg = sparkline(&[0.0, 50.0, 200.0, f32::NAN], 100.0);
        assert!(
            svg.contains("points=\"0.0,23.0 40.0,12.0 80.0,1.0 120.0,23.0\""),
            "{svg}"
        );
        assert!(sparkline(&[], 1.0).starts_with("<svg"));
    }

    #[test]
    fn as_of_accepts_rfc3339_and_datetime_local() {
        assert!(parse_as_of("2026-01-01T10:00:00Z").is_some());
        assert_eq!(
            parse_as_of("2026-01-01T10:00").map(|t| t.to_rfc3339()),
            Some("2026-01-01T10:00:00+00:00".into())
        );
        assert!(parse_as_of("yesterday").is_none());
    }
}

/// The drift section of a host page; every string is escaped by the template.
#[derive(Debug, Clone)]
pub(crate) struct DriftSection {
    /// `in_sync`, `applying`, `drifted`, `unknown`, `unmanaged`, or `unavailable`.
    pub state: String,
    /// CSS class for the state badge.
    pub class: &'static str,
    /// `managed`, `report_only`, `pending`, or empty.
    pub management: String,
    /// Desired version, or `-`.
    pub desired_version: String,
    /// Applied version, or `-`.
    pub applied_version: String,
    /// Template, or empty.
    pub template: String,
    /// A note for people (why unknown/unavailable, the parse error).
    pub note: String,
    /// Differences: path, kind, desired, live (JSON text, `-` when absent).
    pub differences: Vec<[String; 4]>,
}

fn drift_class(state: &str) -> &'static str {
    match state {
        "in_sync" => "ok",
        "applying" | "unknown" => "warn",
        "drifted" => "down",
        _ => "disabled",
    }
}

impl DriftSection {
    /// From ingest's answer to `fleet.q.config {agent}`.
    pub(crate) fn from_view(v: AgentConfigView) -> DriftSection {
        let d = v.drift;
        let show = |x: Option<serde_json::Value>| {
            x.map(|v| match v {
                serde_json::Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into())
        };
        let version = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        DriftSection {
            class: drift_class(d.state.as_str()),
            note: d.error.clone().unwrap_or_else(|| match d.state {
                DriftState::Unknown => "the agent has not sent its live config yet".into(),
                DriftState::Applying => {
                    "values match; the agent has not confirmed this version yet".into()
                }
                _ => String::new(),
            }),
            state: d.state.as_str().to_owned(),
            management: d.management.as_str().to_owned(),
            desired_version: version(d.desired_version),
            applied_version: version(d.applied_version),
            template: d.template.unwrap_or_default(),
            differences: d
                .differences
                .into_iter()
                .map(|x| {
                    [
                        x.path,
                        x.kind.as_str().to_owned(),
                        show(x.desired),
                        show(x.live),
                    ]
                })
                .collect(),
        }
    }

    /// No config and no report for the agent: nothing is managed.
    pub(crate) fn unmanaged(note: impl Into<String>) -> DriftSection {
        DriftSection {
            state: "unmanaged".into(),
            class: drift_class("unmanaged"),
            management: String::new(),
            desired_version: "-".into(),
            applied_version: "-".into(),
            template: String::new(),
            note: note.into(),
            differences: Vec::new(),
        }
    }

    /// The query failed: say so instead of failing the page.
    pub(crate) fn unavailable(note: impl Into<String>) -> DriftSection {
        DriftSection {
            state: "unavailable".into(),
            class: "warn",
            ..DriftSection::unmanaged(note)
        }
    }
}
