//! `fleetctl config …`: managed agent configs (templates, assignment, drift, pull, push,
//! self-update) and retrieval passphrases.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use fleetbus_schemas::commands::ConfigCommand;
use fleetbus_schemas::queries::config::DriftState;
use fleetbus_schemas::queries::config::{AgentConfigView, ConfigQuery, ConfigSummary, MODEL};
use fleetbus_schemas::{AgentId, Command};

use super::agent::report;
use crate::{CtlError, Ctx};

/// `config` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Every agent: managed, report-only or pending, drift state, versions; and the templates.
    Ls,
    /// One agent's desired config, live config, instructions and snapshots.
    Show {
        /// The agent.
        agent: AgentId,
    },
    /// Per-key differences between desired and live config (volatile keys left out).
    Drift {
        /// The agent.
        agent: AgentId,
        /// Exit 1 when the agent has drifted (for scripts).
        #[arg(long)]
        check: bool,
    },
    /// Set an agent's whole desired config from a TOML file (no template).
    Set {
        /// The agent.
        agent: AgentId,
        /// The TOML file (`-` for stdin).
        #[arg(long)]
        file: PathBuf,
    },
    /// Manage an agent with a template and overrides.
    Assign {
        /// The agent.
        agent: AgentId,
        /// The template's name.
        #[arg(long)]
        template: Option<String>,
        /// TOML file with the agent's own keys, merged over the template.
        #[arg(long)]
        overrides: Option<PathBuf>,
        /// A key path to leave out of drift (`a.b`, `servers.*.pid`); repeatable.
        #[arg(long = "volatile")]
        volatile: Vec<String>,
    },
    /// Templates: set (create or change) and rm.
    Template {
        #[command(subcommand)]
        verb: TemplateVerb,
    },
    /// Pull: make the agent's live config its desired config (also "create config from report").
    Pull {
        /// The agent.
        agent: AgentId,
    },
    /// Push: tell the agent to apply its desired config now.
    Push {
        /// The agent.
        agent: AgentId,
    },
    /// Stop managing an agent.
    Release {
        /// The agent.
        agent: AgentId,
    },
    /// Tell the agent to update itself to a version.
    Update {
        /// The agent.
        agent: AgentId,
        /// The agent version to install.
        version: String,
    },
    /// Generate a new retrieval passphrase for the agent's recovery bundle; shown once.
    Passphrase {
        /// The agent.
        agent: AgentId,
        /// Number of words (at least 5).
        #[arg(long, default_value_t = 7)]
        words: usize,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateVerb {
    /// Create or change a template; every agent using it gets a new desired version.
    Set {
        /// The template's name.
        name: String,
        /// The TOML file (`-` for stdin).
        #[arg(long)]
        file: PathBuf,
        /// A key path to leave out of drift for every agent using it; repeatable.
        #[arg(long = "volatile")]
        volatile: Vec<String>,
    },
    /// Remove a template no agent uses.
    Rm {
        /// The template's name.
        name: String,
    },
}

fn read_text(path: &Path) -> Result<String, CtlError> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CtlError::io(Path::new("-"), e))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))
}

/// Checks TOML locally, so a typo is reported with its line before anything is sent.
fn read_toml(what: &str, path: &Path) -> Result<String, CtlError> {
    let text = read_text(path)?;
    fleetbus_projections::configs::merge::parse(what, &text).map_err(|reason| CtlError::Input {
        what: path.display().to_string(),
        reason,
    })?;
    Ok(text)
}

/// Runs a `config` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let send = |c: ConfigCommand| Command::Config(c);
    match args.verb {
        Verb::Ls => {
            let v = ctx.query(MODEL, &ConfigQuery::default()).await?;
            let summary: ConfigSummary = from_json(v.clone())?;
            ctx.print(render_summary(&summary), &v);
            Ok(())
        }
        Verb::Show { agent } => {
            let v = agent_view(ctx, &agent).await?;
            let view: AgentConfigView = from_json(v.clone())?;
            ctx.print(render_show(&view), &v);
            Ok(())
        }
        Verb::Drift { agent, check } => {
            let v = agent_view(ctx, &agent).await?;
            let view: AgentConfigView = from_json(v.clone())?;
            ctx.print(render_drift(&view), &v["drift"]);
            if check && view.drift.state == DriftState::Drifted {
                return Err(CtlError::Usage(format!(
                    "agent {agent} has drifted ({} keys differ)",
                    view.drift.differences.len()
                )));
            }
            Ok(())
        }
        Verb::Set { agent, file } => {
            let toml = read_toml("config", &file)?;
            report(ctx, send(ConfigCommand::SetDesired { agent, toml })).await
        }
        Verb::Assign {
            agent,
            template,
            overrides,
            volatile,
        } => {
            let overrides = match overrides {
                Some(p) => read_toml("overrides", &p)?,
                None => String::new(),
            };
            report(
                ctx,
                send(ConfigCommand::Assign {
                    agent,
                    template,
                    overrides,
                    volatile,
                }),
            )
            .await
        }
        Verb::Template { verb } => match verb {
            TemplateVerb::Set {
                name,
                file,
                volatile,
            } => {
                let toml = read_toml("template", &file)?;
                report(
                    ctx,
                    send(ConfigCommand::SetTemplate {
                        template: name,
                        toml,
                        volatile,
                    }),
                )
                .await
            }
            TemplateVerb::Rm { name } => {
                report(ctx, send(ConfigCommand::RemoveTemplate { template: name })).await
            }
        },
        Verb::Pull { agent } => report(ctx, send(ConfigCommand::Import { agent })).await,
        Verb::Push { agent } => report(ctx, send(ConfigCommand::Push { agent })).await,
        Verb::Release { agent } => report(ctx, send(ConfigCommand::Release { agent })).await,
        Verb::Update { agent, version } => {
            report(ctx, send(ConfigCommand::TriggerUpdate { agent, version })).await
        }
        Verb::Passphrase { agent, words } => {
            if words < 5 {
                return Err(CtlError::Usage(
                    "--words must be at least 5 (each word adds 8 bits)".into(),
                ));
            }
            let passphrase = new_passphrase(words);
            let hash = hash_passphrase(&passphrase)?;
            let outcome = ctx
                .send(send(ConfigCommand::SetPassphrase {
                    agent: agent.clone(),
                    passphrase_hash: hash,
                }))
                .await?;
            ctx.print(
                format!(
                    "agent {agent}: retrieval passphrase\n\n    {passphrase}\n\nstore it now (offline): it is not shown again; `fleetbus-agent restore` asks for it"
                ),
                &serde_json::json!({
                    "agent": agent,
                    "passphrase": passphrase,
                    "command_id": outcome.command.id.to_string(),
                }),
            );
            Ok(())
        }
    }
}

async fn agent_view(ctx: &Ctx, agent: &AgentId) -> Result<serde_json::Value, CtlError> {
    ctx.query(
        MODEL,
        &ConfigQuery {
            agent: Some(agent.clone()),
        },
    )
    .await
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(|e| CtlError::Query {
        model: MODEL.into(),
        message: format!("unexpected answer shape: {e}"),
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn render_summary(s: &ConfigSummary) -> String {
    let mut out = format!(
        "{:<20} {:<12} {:<10} {:<12} {:>7} {:>7} {:>5}  {}\n",
        "AGENT", "MODE", "STATE", "TEMPLATE", "DESIRED", "APPLIED", "DIFFS", "FLAGS"
    );
    for a in &s.agents {
        let mut flags = Vec::new();
        if a.blocked {
            flags.push("blocked".to_string());
        }
        if a.snapshots > 0 {
            flags.push(format!("{} snapshots", a.snapshots));
        }
        if a.has_passphrase {
            flags.push("passphrase".into());
        }
        out.push_str(&format!(
            "{:<20} {:<12} {:<10} {:<12} {:>7} {:>7} {:>5}  {}\n",
            a.agent,
            snake(&a.management),
            snake(&a.state),
            opt(&a.template),
            opt(&a.desired_version),
            opt(&a.applied_version),
            a.differences,
            flags.join(", ")
        ));
    }
    if !s.templates.is_empty() {
        out.push_str(&format!(
            "\n{:<20} {:>6}  {:<16} {}\n",
            "TEMPLATE", "AGENTS", "HASH", "VOLATILE"
        ));
        for t in &s.templates {
            out.push_str(&format!(
                "{:<20} {:>6}  {:<16} {}\n",
                t.name,
                t.agents,
                &t.hash[..16.min(t.hash.len())],
                t.volatile.join(", ")
            ));
        }
    }
    out
}

fn render_drift(v: &AgentConfigView) -> String {
    let d = &v.drift;
    let mut out = format!(
        "agent {}: {} ({}), desired v{} applied v{}\n",
        d.agent,
        snake(&d.state),
        snake(&d.management),
        opt(&d.desired_version),
        opt(&d.applied_version),
    );
    if let Some(e) = &d.error {
        out.push_str(&format!("cannot compare: {e}\n"));
    }
    if !d.volatile.is_empty() {
        out.push_str(&format!("volatile (ignored): {}\n", d.volatile.join(", ")));
    }
    if !d.differences.is_empty() {
        out.push_str(&format!(
            "\n{:<32} {:<10} {:<24} {}\n",
            "KEY", "KIND", "DESIRED", "LIVE"
        ));
        for diff in &d.differences {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
            };
            out.push_str(&format!(
                "{:<32} {:<10} {:<24} {}\n",
                diff.path,
                snake(&diff.kind),
                show(&diff.desired),
                show(&diff.live)
            ));
        }
    }
    out
}

fn render_show(v: &AgentConfigView) -> String {
    let mut out = render_drift(v);
    if let Some(d) = &v.desired {
        out.push_str(&format!(
            "\ndesired v{} by {} at {} (template {}):\n{}\n",
            d.version,
            d.actor,
            d.time.to_rfc3339(),
            opt(&d.template),
            d.toml.trim_end()
        ));
    }
    if let Some(live) = &v.live_toml {
        out.push_str(&format!("\nlive:\n{}\n", live.trim_end()));
    }
    for (name, p) in [("push", &v.push), ("update", &v.update)] {
        if let Some(p) = p {
            let state = match &p.ack {
                None => "pending".to_string(),
                Some(a) if a.ok => format!("done: {}", a.message),
                Some(a) => format!("failed: {}", a.message),
            };
            out.push_str(&format!("\n{name} {} by {}: {state}", p.target, p.actor));
        }
    }
    if !v.snapshots.is_empty() {
        out.push_str("\n\nsnapshots:\n");
        for s in &v.snapshots {
            out.push_str(&format!(
                "  {}  {} bytes  sha256 {}  {}\n",
                s.object,
                s.size,
                s.hash,
                s.time.to_rfc3339()
            ));
        }
    }
    out.push_str(&format!(
        "\nretrieval passphrase: {}\n",
        if v.has_passphrase {
            "set"
        } else {
            "not set (fleetctl config passphrase AGENT)"
        }
    ));
    out
}

/// 256 short, distinct, easily spoken words: each adds 8 bits.
const WORDS: [&str; 256] = [
    "acorn", "actor", "adobe", "agent", "alarm", "album", "alpha", "amber", "angle", "apple",
    "april", "apron", "arena", "arrow", "aspen", "atlas", "attic", "audio", "award", "bacon",
    "badge", "bagel", "baker", "bamboo", "banjo", "barn", "basil", "beach", "beard", "bench",
    "berry", "bison", "blade", "blaze", "bloom", "board", "bonus", "booth", "brass", "bread",
    "brick", "bride", "broom", "brush", "buddy", "bugle", "cabin", "cable", "camel", "candle",
    "canoe", "cargo", "carpet", "castle", "cedar", "chalk", "charm", "cherry", "chess", "chief",
    "cider", "cinema", "circus", "citrus", "clock", "cloud", "clover", "coast", "cobra", "cocoa",
    "comet", "coral", "cotton", "couch", "crane", "crayon", "creek", "crown", "cube", "daisy",
    "dance", "delta", "denim", "desert", "diary", "dingo", "disco", "dolphin", "donut", "dragon",
    "drum", "eagle", "earth", "easel", "echo", "elbow", "elder", "ember", "engine", "falcon",
    "fancy", "fern", "ferry", "fiber", "field", "flame", "flute", "focus", "forest", "fossil",
    "fox", "frost", "fruit", "galaxy", "garden", "garlic", "gecko", "ginger", "glacier", "globe",
    "grape", "gravel", "guitar", "hammer", "harbor", "hazel", "heron", "honey", "hotel", "igloo",
    "indigo", "island", "ivory", "jacket", "jaguar", "jelly", "jewel", "jungle", "kayak", "kettle",
    "kitten", "koala", "ladder", "lagoon", "lemon", "lilac", "lime", "linen", "lizard", "llama",
    "lobster", "locket", "lotus", "lunar", "magnet", "mango", "maple", "marble", "meadow", "melon",
    "mint", "mirror", "mocha", "monkey", "mosaic", "motor", "muffin", "nectar", "needle", "nickel",
    "noodle", "nutmeg", "oasis", "ocean", "olive", "onion", "opera", "orbit", "orchid", "otter",
    "oyster", "paddle", "panda", "paper", "parrot", "peach", "pearl", "pebble", "pepper", "piano",
    "pickle", "pilot", "pine", "pixel", "planet", "plume", "polar", "pony", "poppy", "prism",
    "puzzle", "quartz", "quilt", "rabbit", "radar", "radio", "raven", "ribbon", "river", "robin",
    "rocket", "rose", "ruby", "saddle", "salmon", "sandal", "silver", "sketch", "sloth", "solar",
    "spice", "spoon", "spruce", "squid", "stamp", "storm", "sugar", "summit", "sunset", "swan",
    "table", "tango", "teapot", "thunder", "tiger", "timber", "toast", "tomato", "topaz", "torch",
    "tulip", "tundra", "turtle", "umbrella", "valley", "velvet", "violet", "walnut", "willow",
    "window", "winter", "wizard", "yacht", "yogurt", "zebra", "zipper",
];

/// A passphrase of `n` random words from [`WORDS`], separated by spaces.
pub(crate) fn new_passphrase(n: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// argon2id PHC string of a passphrase (normalised like ingest compares it).
pub(crate) fn hash_passphrase(passphrase: &str) -> Result<String, CtlError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let normalized = fleetbus_schemas::http::normalize_passphrase(passphrase);
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(normalized.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CtlError::Usage(format!("cannot hash the passphrase: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_list_has_256_distinct_plain_words() {
        let mut w: Vec<&str> = WORDS.to_vec();
        w.sort_unstable();
        w.dedup();
        assert_eq!(w.len(), 256);
        assert!(WORDS
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    #[test]
    fn passphrases_are_random_words_and_hash_with_argon2id() {
        let a = new_passphrase(7);
        assert_eq!(a.split(' ').count(), 7);
        assert!(a.split(' ').all(|w| WORDS.contains(&w)));
        assert_ne!(a, new_passphrase(7));
        let h = hash_passphrase(&a).unwrap();
        assert!(h.starts_with("$argon2id$"));
    }
}
