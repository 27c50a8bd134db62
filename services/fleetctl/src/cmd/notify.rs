//! `fleetctl notify rule|recipient|channel|mute set|rm`, `notify mute add`, `notify ls` (the
//! notifier's `fleet.cmd.notify.*`).
//!
//! Specs are read as JSON or TOML (JSON when the file ends in `.json` or the text starts with
//! `{`), with unknown keys refused, and checked with the spec's own `validate()` before anything
//! is sent; the notifier checks the rest (time zones, that named recipients and channels exist).
//! `ls` folds the `*_set` / `*_deleted` events of a replay of `EVENTS`: it shows what commands
//! set, not the notifier's config-file baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use fleetbus_schemas::commands::notify::{
    ChannelSpec, MuteSpec, MuteWindow, NotifyCommand, RecipientSpec, RuleSpec,
};
use fleetbus_schemas::events::notification::NotificationEvent;
use fleetbus_schemas::{
    ChannelId, Command, Envelope, Event, HostId, RecipientId, RuleId, ServiceName,
};
use serde::de::DeserializeOwned;

use super::agent::report;
use super::schedule::{read_input, replay};
use crate::{CtlError, Ctx};

/// `notify` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Routing rules (admin).
    Rule {
        #[command(subcommand)]
        verb: SetRm,
    },
    /// Recipients (admin).
    Recipient {
        #[command(subcommand)]
        verb: SetRm,
    },
    /// Delivery channels (admin).
    Channel {
        #[command(subcommand)]
        verb: SetRm,
    },
    /// Mutes and maintenance windows (operator).
    Mute {
        #[command(subcommand)]
        verb: MuteVerb,
    },
    /// List rules, recipients, channels and mutes set by commands (folded from `EVENTS`).
    Ls,
}

#[derive(Debug, Subcommand)]
enum SetRm {
    /// Create or replace from a spec file (JSON or TOML; `-` = standard input).
    Set {
        /// The spec file.
        file: PathBuf,
    },
    /// Delete by id.
    Rm {
        /// The id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum MuteVerb {
    /// Create or replace from a spec file (JSON or TOML; `-` = standard input).
    Set {
        /// The spec file.
        file: PathBuf,
    },
    /// Mute now (or from `--from`) until `--until`, for hosts, services or tags.
    Add {
        /// The mute id (a name).
        mute: String,
        /// Only this host (repeatable; none = any).
        #[arg(long)]
        host: Vec<HostId>,
        /// Only this service (repeatable; none = any).
        #[arg(long)]
        service: Vec<ServiceName>,
        /// Only hosts with this tag (repeatable; none = any).
        #[arg(long)]
        tag: Vec<String>,
        /// End: RFC 3339 (`2026-01-01T06:00:00Z`) or from now (`90m`, `2h`, `1d`, `30s`).
        #[arg(long, value_parser = parse_time)]
        until: DateTime<Utc>,
        /// Start, same forms as `--until` (default: now).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Why (shown in the log and the UI).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a mute.
    Rm {
        /// The mute id.
        id: String,
    },
}

/// RFC 3339, or a duration from now: a number followed by `s`, `m`, `h` or `d`.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!("{s:?}: expected RFC 3339 (2026-01-01T06:00:00Z) or a duration like 90m, 2h, 1d")
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3_600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or_else(bad)?;
    Utc::now()
        .checked_add_signed(chrono::Duration::seconds(secs))
        .ok_or_else(bad)
}

/// Parses a spec from JSON or TOML; the error names the source and the offending field.
fn parse_spec<T: DeserializeOwned>(text: &str, what: &str, path: &Path) -> Result<T, CtlError> {
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let input = |reason: String| CtlError::Input {
        what: what.to_owned(),
        reason,
    };
    if json {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." {
                String::new()
            } else {
                format!("at {at}: ")
            };
            input(format!("{at}{}", e.inner()))
        })
    } else {
        toml::from_str(text).map_err(|e| input(e.to_string().trim_end().to_owned()))
    }
}

/// Reads, parses and validates a spec file.
fn load<T: DeserializeOwned>(
    path: &Path,
    kind: &str,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, CtlError> {
    let (text, what) = read_input(path, kind)?;
    let spec: T = parse_spec(&text, &what, path)?;
    validate(&spec).map_err(|reason| CtlError::Input { what, reason })?;
    Ok(spec)
}

fn id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, CtlError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| CtlError::Usage(format!("{what} {raw:?}: {e}")))
}

/// What commands have set, folded from the log.
#[derive(Debug, Default, serde::Serialize)]
struct Listing {
    rules: BTreeMap<RuleId, RuleSpec>,
    recipients: BTreeMap<RecipientId, RecipientSpec>,
    channels: BTreeMap<ChannelId, ChannelSpec>,
    mutes: BTreeMap<String, MuteSpec>,
}

fn fold(events: &[Envelope]) -> Listing {
    let mut l = Listing::default();
    for env in events {
        let Event::Notification(ev) = &env.event else {
            continue;
        };
        match ev {
            NotificationEvent::RuleSet(r) => {
                l.rules.insert(r.rule.clone(), r.clone());
            }
            NotificationEvent::RuleDeleted { rule } => {
                l.rules.remove(rule);
            }
            NotificationEvent::RecipientSet(r) => {
                l.recipients.insert(r.recipient.clone(), r.clone());
            }
            NotificationEvent::RecipientDeleted { recipient } => {
                l.recipients.remove(recipient);
            }
            NotificationEvent::ChannelSet(c) => {
                l.channels.insert(c.channel.clone(), c.clone());
            }
            NotificationEvent::ChannelDeleted { channel } => {
                l.channels.remove(channel);
            }
            NotificationEvent::MuteSet(m) => {
                l.mutes.insert(m.mute.clone(), m.clone());
            }
            NotificationEvent::MuteDeleted { mute } => {
                l.mutes.remove(mute);
            }
            _ => {}
        }
    }
    l
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "any".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn human(l: &Listing) -> String {
    let mut out = String::from("RULES\n");
    for (id, r) in &l.rules {
        out.push_str(&format!(
            "  {id:<20} kinds={} hosts={} tags={} -> recipients={} channels={} cooldown={}s steps={}\n",
            join(&r.matches.kinds),
            join(&r.matches.hosts),
            join(&r.matches.tags),
            join(&r.recipients),
            join(&r.channels),
            r.cooldown_s,
            1 + r.escalation.len()
        ));
    }
    out.push_str("RECIPIENTS\n");
    for (id, r) in &l.recipients {
        let kind = serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {id:<20} {kind:<9} {} {}\n",
            r.email.as_deref().unwrap_or("-"),
            if r.display_name.is_empty() {
                ""
            } else {
                &r.display_name
            }
        ));
    }
    out.push_str("CHANNELS\n");
    for (id, c) in &l.channels {
        out.push_str(&format!(
            "  {id:<20} {:<8} attempts={} timeout={}ms\n",
            c.kind.name(),
            c.max_attempts,
            c.timeout_ms
        ));
    }
    out.push_str("MUTES\n");
    for (id, m) in &l.mutes {
        let window = match &m.window {
            MuteWindow::AdHoc { from, until } => format!(
                "{}until {}",
                from.map(|f| format!("from {} ", f.to_rfc3339()))
                    .unwrap_or_default(),
                until.to_rfc3339()
            ),
            MuteWindow::Scheduled(w) => {
                format!("{}-{} {} {}", w.start, w.end, w.time_zone, join(&w.days))
            }
        };
        out.push_str(&format!(
            "  {id:<20} hosts={} services={} tags={} {window} {}\n",
            join(&m.hosts),
            join(&m.services),
            join(&m.tags),
            m.reason
        ));
    }
    out
}

/// Runs a `notify` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let send = |c: NotifyCommand| report(ctx, Command::Notify(c));
    match args.verb {
        Verb::Rule { verb } => match verb {
            SetRm::Set { file } => {
                let spec = load(&file, "rule", RuleSpec::validate)?;
                send(NotifyCommand::SetRule(spec)).await
            }
            SetRm::Rm { id: raw } => {
                send(NotifyCommand::DeleteRule {
                    rule: id(&raw, "rule")?,
                })
                .await
            }
        },
        Verb::Recipient { verb } => match verb {
            SetRm::Set { file } => {
                let spec = load(&file, "recipient", RecipientSpec::validate)?;
                send(NotifyCommand::SetRecipient(spec)).await
            }
            SetRm::Rm { id: raw } => {
                send(NotifyCommand::DeleteRecipient {
                    recipient: id(&raw, "recipient")?,
                })
                .await
            }
        },
        Verb::Channel { verb } => match verb {
            SetRm::Set { file } => {
                let spec = load(&file, "channel", ChannelSpec::validate)?;
                send(NotifyCommand::SetChannel(spec)).await
            }
            SetRm::Rm { id: raw } => {
                send(NotifyCommand::DeleteChannel {
                    channel: id(&raw, "channel")?,
                })
                .await
            }
        },
        Verb::Mute { verb } => match verb {
            MuteVerb::Set { file } => {
                let spec = load(&file, "mute", MuteSpec::validate)?;
                send(NotifyCommand::SetMute(spec)).await
            }
            MuteVerb::Add {
                mute,
                host,
                service,
                tag,
                until,
                from,
                reason,
            } => {
                let spec = MuteSpec {
                    mute,
                    hosts: host,
                    services: service,
                    tags: tag,
                    window: MuteWindow::AdHoc { from, until },
                    reason,
                };
                spec.validate().map_err(CtlError::Usage)?;
                send(NotifyCommand::SetMute(spec)).await
            }
            MuteVerb::Rm { id } => send(NotifyCommand::DeleteMute { mute: id }).await,
        },
        Verb::Ls => {
            let filters: Vec<String> = [
                "rule_set",
                "rule_deleted",
                "recipient_set",
                "recipient_deleted",
                "channel_set",
                "channel_deleted",
                "mute_set",
                "mute_deleted",
            ]
            .iter()
            .map(|t| format!("fleet.evt.notification.*.{t}"))
            .collect();
            let listing = fold(&replay(ctx, &filters).await?);
            ctx.print(human(&listing), &listing);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_durations_from_now() {
        let t = parse_time("2026-01-01T06:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T06:00:00+00:00");
        let before = Utc::now();
        let t = parse_time("2h").unwrap();
        assert!(t >= before + chrono::Duration::hours(2));
        assert!(t <= Utc::now() + chrono::Duration::hours(2));
        for bad in ["", "h", "2x", "-5m", "0m", "tomorrow"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_parse_from_json_and_toml_and_name_the_bad_field() {
        let p = Path::new("r.toml");
        let r: RuleSpec = parse_spec(
            "rule = \"page-ops\"\nrecipients = [\"alice\"]\nchannels = [\"hook\"]\n[matches]\nkinds = [\"service_down\"]\n",
            "rule in r.toml",
            p,
        )
        .unwrap();
        assert_eq!(r.matches.kinds, vec!["service_down".to_string()]);
        let j: RuleSpec = parse_spec(
            r#"{"rule": "page-ops", "recipients": ["alice"], "channels": ["hook"], "matches": {"kinds": ["service_down"]}}"#,
            "rule",
            Path::new("-"),
        )
        .unwrap();
        assert_eq!(r, j);
        let err = parse_spec::<RuleSpec>(
            r#"{"rule": "page-ops", "recipients": ["alice"], "channels": ["hook"], "colour": 1}"#,
            "rule in r.json",
            Path::new("r.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour") && err.contains("r.json"), "{err}");
    }
}
