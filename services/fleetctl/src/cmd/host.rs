//! `fleetctl host add|update|rm|ls|add-service|rm-service|import|trust`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use fleetbus_schemas::commands::HostCommand;
use fleetbus_schemas::events::host::{HostKeyPolicy, HostSpec};
use fleetbus_schemas::events::service::{ServiceAction, ServiceManager, ServiceSpec};
use fleetbus_schemas::{Command, HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::agent::report;
use crate::{CtlError, Ctx};

/// `host` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

/// The registration flags shared by `add` and `update`.
#[derive(Debug, clap::Args)]
struct SpecArgs {
    /// The host id.
    host: HostId,
    /// Address to reach it over SSH.
    #[arg(long)]
    address: String,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// Login user.
    #[arg(long)]
    user: String,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A role (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Host key policy: strict, accept_new or off.
    #[arg(long, default_value = "accept_new", value_parser = parse_policy)]
    key_policy: HostKeyPolicy,
    /// Allow ad-hoc commands on this host.
    #[arg(long)]
    allow_adhoc: bool,
    /// Register it disabled (kept, not polled).
    #[arg(long)]
    disabled: bool,
}

impl SpecArgs {
    fn spec(self) -> HostSpec {
        HostSpec {
            host: self.host,
            address: self.address,
            port: self.port,
            user: self.user,
            tags: self.tags,
            roles: self.roles,
            host_key_policy: self.key_policy,
            allow_adhoc: self.allow_adhoc,
            disabled: self.disabled,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Register a host.
    Add(SpecArgs),
    /// Change a host's registration (all fields are replaced).
    Update(SpecArgs),
    /// Remove a host and its services.
    Rm {
        /// The host id.
        host: HostId,
    },
    /// List hosts and their services.
    Ls,
    /// Register (or replace) a service on a host.
    AddService {
        /// The host id.
        host: HostId,
        /// The service name.
        service: ServiceName,
        /// runit or systemd.
        #[arg(long, value_parser = parse_manager)]
        manager: ServiceManager,
        /// systemd unit name or absolute runit service directory.
        #[arg(long)]
        unit: String,
        /// An allowed action (repeatable; default: status, start, stop, restart, logs).
        #[arg(long = "action")]
        actions: Vec<ServiceAction>,
        /// runit: log file or svlogd directory.
        #[arg(long)]
        log_path: Option<String>,
        /// The service is not expected to run (a stop opens no alert).
        #[arg(long)]
        not_expected_running: bool,
    },
    /// Remove a service.
    RmService {
        /// The host id.
        host: HostId,
        /// The service name.
        service: ServiceName,
    },
    /// Register hosts and services from a TOML or JSON file (idempotent: unchanged entries are
    /// skipped, changed ones updated).
    Import {
        /// The file (`.json` is read as JSON, anything else as TOML).
        file: PathBuf,
    },
    /// Read the host's SSH host key (without logging in), print its fingerprint, and pin it
    /// when `--fingerprint` matches what was read (or `--yes` after a person checked it).
    Trust {
        /// The host id (address and port come from the registry).
        host: HostId,
        /// The `SHA256:…` fingerprint obtained out of band; pinned only if the scan matches.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Pin the scanned key without `--fingerprint` (a person compared it already).
        #[arg(long)]
        yes: bool,
    },
}

fn from_json_str<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown {what} {s:?}"))
}

fn parse_policy(s: &str) -> Result<HostKeyPolicy, String> {
    from_json_str(s, "key policy").map_err(|e| format!("{e}, expected strict, accept_new or off"))
}

fn parse_manager(s: &str) -> Result<ServiceManager, String> {
    from_json_str(s, "manager").map_err(|e| format!("{e}, expected runit or systemd"))
}

const DEFAULT_ACTIONS: [ServiceAction; 5] = [
    ServiceAction::Status,
    ServiceAction::Start,
    ServiceAction::Stop,
    ServiceAction::Restart,
    ServiceAction::Logs,
];

/// The import file: hosts, each with its services.
///
/// ```toml
/// [[hosts]]
/// host = "web-1"
/// address = "127.0.0.2"
/// port = 22
/// user = "fleet"
/// tags = ["web"]
///
/// [[hosts.services]]
/// name = "nginx"
/// manager = "runit"
/// unit = "/etc/sv/nginx"
/// actions = ["status", "restart", "logs"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportFile {
    /// The hosts.
    #[serde(default)]
    pub hosts: Vec<ImportHost>,
}

/// One host in an import file: the fields of `HostSpec` plus its services. Also reads the
/// executor's static-host format (`id` for the host id, informational `key_path` and
/// `host_key_fingerprint`), so the demo fleet's `hosts.toml` imports as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportHost {
    /// Host id.
    #[serde(alias = "id")]
    pub host: HostId,
    /// SSH address.
    pub address: String,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Host key policy.
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    /// Ad-hoc commands allowed.
    #[serde(default)]
    pub allow_adhoc: bool,
    /// Disabled.
    #[serde(default)]
    pub disabled: bool,
    /// Its services.
    #[serde(default)]
    pub services: Vec<ImportService>,
    /// Informational: the SSH key the executor uses (not registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// Informational: the host key fingerprint (not registered; pinned on first contact or
    /// with `host trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

fn default_port() -> u16 {
    22
}

fn yes() -> bool {
    true
}

/// One service in an import file: the fields of `ServiceSpec` without the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportService {
    /// Service name.
    pub name: ServiceName,
    /// Manager.
    pub manager: ServiceManager,
    /// Unit or runit directory.
    pub unit: String,
    /// Allowed actions (default: status, start, stop, restart, logs).
    #[serde(default)]
    pub actions: Option<Vec<ServiceAction>>,
    /// runit log path.
    #[serde(default)]
    pub log_path: Option<String>,
    /// Expected to run.
    #[serde(default = "yes")]
    pub expected_running: bool,
}

impl ImportHost {
    fn split(self) -> (HostSpec, Vec<ServiceSpec>) {
        let services = self
            .services
            .into_iter()
            .map(|s| ServiceSpec {
                host: self.host.clone(),
                name: s.name,
                manager: s.manager,
                unit: s.unit,
                actions: s.actions.unwrap_or_else(|| DEFAULT_ACTIONS.to_vec()),
                log_path: s.log_path,
                expected_running: s.expected_running,
            })
            .collect();
        let spec = HostSpec {
            host: self.host,
            address: self.address,
            port: self.port,
            user: self.user,
            tags: self.tags,
            roles: self.roles,
            host_key_policy: self.host_key_policy,
            allow_adhoc: self.allow_adhoc,
            disabled: self.disabled,
        };
        (spec, services)
    }
}

/// Parses an import file's text; errors name the offending field.
pub(crate) fn parse_import(text: &str, json: bool, what: &str) -> Result<ImportFile, CtlError> {
    let input = |reason: String| CtlError::Input {
        what: what.to_owned(),
        reason,
    };
    if json {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| input(format!("at {}: {}", e.path(), e.inner())))
    } else {
        toml::from_str(text).map_err(|e| input(e.to_string()))
    }
}

fn read_import(path: &Path) -> Result<ImportFile, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse_import(&text, json, &path.display().to_string())
}

/// Runs a `host` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.verb {
        Verb::Add(spec) => report(ctx, Command::Host(HostCommand::Add(spec.spec()))).await,
        Verb::Update(spec) => report(ctx, Command::Host(HostCommand::Update(spec.spec()))).await,
        Verb::Rm { host } => report(ctx, Command::Host(HostCommand::Remove { host })).await,
        Verb::RmService { host, service } => {
            report(
                ctx,
                Command::Host(HostCommand::RemoveService {
                    host,
                    name: service,
                }),
            )
            .await
        }
        Verb::AddService {
            host,
            service,
            manager,
            unit,
            actions,
            log_path,
            not_expected_running,
        } => {
            let spec = ServiceSpec {
                host,
                name: service,
                manager,
                unit,
                actions: if actions.is_empty() {
                    DEFAULT_ACTIONS.to_vec()
                } else {
                    actions
                },
                log_path,
                expected_running: !not_expected_running,
            };
            report(ctx, Command::Host(HostCommand::AddService(spec))).await
        }
        Verb::Ls => ls(ctx).await,
        Verb::Import { file } => import(ctx, &file).await,
        Verb::Trust {
            host,
            fingerprint,
            yes,
        } => trust(ctx, &host, fingerprint.as_deref(), yes).await,
    }
}

/// The registration of `host` from `fleet.q.registry`, or a clear error naming the host.
pub(crate) async fn registered_host(
    ctx: &Ctx,
    host: &HostId,
) -> Result<(HostSpec, Vec<ServiceSpec>, serde_json::Value), CtlError> {
    let reg = registry(ctx).await?;
    let Some(raw) = reg.get("hosts").and_then(|h| h.get(host.as_str())).cloned() else {
        return Err(CtlError::Input {
            what: format!("host {host}"),
            reason: "not registered (see `fleetctl host ls`; add it with `fleetctl host add`)"
                .into(),
        });
    };
    let spec: HostSpec = serde_json::from_value(raw).map_err(|e| CtlError::Query {
        model: "registry".into(),
        message: format!("host {host} has an unreadable registration: {e}"),
    })?;
    let mut services = Vec::new();
    if let Some(map) = reg.get("services").and_then(|s| s.as_object()) {
        for (key, raw) in map {
            if raw.get("host").and_then(|h| h.as_str()) != Some(host.as_str()) {
                continue;
            }
            let svc: ServiceSpec =
                serde_json::from_value(raw.clone()).map_err(|e| CtlError::Query {
                    model: "registry".into(),
                    message: format!("service {key} has an unreadable registration: {e}"),
                })?;
            services.push(svc);
        }
    }
    let pinned = reg
        .get("host_keys")
        .and_then(|k| k.get(host.as_str()))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok((spec, services, pinned))
}

async fn trust(
    ctx: &Ctx,
    host: &HostId,
    expected: Option<&str>,
    yes: bool,
) -> Result<(), CtlError> {
    let (spec, _, pinned) = registered_host(ctx, host).await?;
    let scanned = fleetbus_remote::hostkey::scan_host_key(&spec.address, spec.port, ctx.timeout())
        .await
        .map_err(|e| CtlError::Ssh {
            what: format!(
                "reading the host key of {host} ({}:{})",
                spec.address, spec.port
            ),
            reason: e.to_string(),
        })?;
    let pinned_fp = pinned
        .get("fingerprint")
        .and_then(|f| f.as_str())
        .map(String::from);
    let mut human = format!(
        "host {host} ({}:{}) presents {} {}\n",
        spec.address, spec.port, scanned.algorithm, scanned.fingerprint
    );
    match &pinned_fp {
        Some(fp) if *fp == scanned.fingerprint => human.push_str("already pinned: same key\n"),
        Some(fp) => human.push_str(&format!("currently pinned: {fp} (this rotates it)\n")),
        None => human.push_str("no key pinned yet\n"),
    }
    let report = |pinned_now: bool, event: Option<&fleetbus_schemas::Envelope>| {
        serde_json::json!({
            "host": host,
            "address": spec.address,
            "port": spec.port,
            "algorithm": scanned.algorithm,
            "fingerprint": scanned.fingerprint,
            "previously_pinned": pinned_fp,
            "pinned": pinned_now,
            "event_id": event.map(|e| e.id.to_string()),
        })
    };
    match expected {
        Some(want) if want.trim() != scanned.fingerprint => {
            if ctx.global.json {
                crate::ctx::print_json(&report(false, None));
            } else {
                eprint!("{human}");
            }
            return Err(CtlError::Input {
                what: format!("host trust {host}"),
                reason: format!(
                    "fingerprint mismatch: expected {}, the host presents {}; nothing was pinned",
                    want.trim(),
                    scanned.fingerprint
                ),
            });
        }
        Some(_) => {}
        None if yes => {}
        None => {
            human.push_str(&format!(
                "not pinned: compare the fingerprint out of band, then run `fleetctl host trust {host} --fingerprint {}`\n",
                scanned.fingerprint
            ));
            ctx.print(human, &report(false, None));
            return Ok(());
        }
    }
    let outcome = ctx
        .send(Command::Host(HostCommand::TrustKey {
            host: host.clone(),
            algorithm: scanned.algorithm.clone(),
            fingerprint: scanned.fingerprint.clone(),
        }))
        .await?;
    human.push_str(&format!(
        "pinned {} {} for {host} (event {})\n",
        scanned.algorithm, scanned.fingerprint, outcome.event.id
    ));
    ctx.print(human, &report(true, Some(&outcome.event)));
    Ok(())
}

async fn registry(ctx: &Ctx) -> Result<serde_json::Value, CtlError> {
    ctx.query(
        fleetbus_schemas::queries::model::REGISTRY,
        &fleetbus_schemas::queries::RegistryQuery {},
    )
    .await
}

async fn ls(ctx: &Ctx) -> Result<(), CtlError> {
    let reg = registry(ctx).await?;
    let hosts = reg.get("hosts").cloned().unwrap_or_default();
    let services = reg.get("services").cloned().unwrap_or_default();
    let mut human = format!(
        "{:<20} {:<24} {:<12} {:<24} {}\n",
        "HOST", "ADDRESS", "USER", "TAGS", "SERVICES"
    );
    if let Some(map) = hosts.as_object() {
        for (id, h) in map {
            let s = |k: &str| {
                h.get(k)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let tags = h
                .get("tags")
                .and_then(|t| t.as_array())
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let svcs: Vec<String> = services
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, sv)| {
                            sv.get("host").and_then(|x| x.as_str()) == Some(id.as_str())
                        })
                        .filter_map(|(_, sv)| {
                            sv.get("name").and_then(|x| x.as_str()).map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let address = format!("{}:{}", s("address"), s("port"));
            human.push_str(&format!(
                "{id:<20} {address:<24} {:<12} {tags:<24} {}\n",
                s("user"),
                svcs.join(",")
            ));
        }
    }
    ctx.print(
        human,
        &serde_json::json!({ "hosts": hosts, "services": services }),
    );
    Ok(())
}

async fn import(ctx: &Ctx, file: &Path) -> Result<(), CtlError> {
    let parsed = read_import(file)?;
    let reg = registry(ctx).await?;
    let mut lines = Vec::new();
    let mut changes = Vec::new();
    for entry in parsed.hosts {
        let (spec, services) = entry.split();
        let existing = reg
            .get("hosts")
            .and_then(|h| h.get(spec.host.as_str()))
            .cloned();
        let wanted = serde_json::to_value(&spec).unwrap_or_default();
        let command = match existing {
            None => Some(HostCommand::Add(spec.clone())),
            Some(e) if e != wanted => Some(HostCommand::Update(spec.clone())),
            Some(_) => None,
        };
        let verb = match &command {
            Some(HostCommand::Add(_)) => "added",
            Some(_) => "updated",
            None => "unchanged",
        };
        if let Some(c) = command {
            ctx.send(Command::Host(c)).await?;
        }
        lines.push(format!("host {}: {verb}", spec.host));
        changes.push(serde_json::json!({"host": spec.host, "outcome": verb}));
        for svc in services {
            let key = format!("{}:{}", svc.host, svc.name);
            let existing = reg.get("services").and_then(|s| s.get(&key)).cloned();
            let wanted = serde_json::to_value(&svc).unwrap_or_default();
            let verb = match existing {
                Some(e) if e == wanted => "unchanged",
                Some(_) => "updated",
                None => "added",
            };
            if verb != "unchanged" {
                ctx.send(Command::Host(HostCommand::AddService(svc)))
                    .await?;
            }
            lines.push(format!("service {key}: {verb}"));
            changes.push(serde_json::json!({"service": key, "outcome": verb}));
        }
    }
    ctx.print(lines.join("\n"), &changes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_toml_and_json_give_the_same_specs_with_defaults() {
        let toml_text = r#"
[[hosts]]
host = "web-1"
address = "127.0.0.2"
user = "fleet"
tags = ["web"]

[[hosts.services]]
name = "nginx"
manager = "runit"
unit = "/etc/sv/nginx"
"#;
        let json_text = r#"{"hosts":[{"host":"web-1","address":"127.0.0.2","user":"fleet","tags":["web"],
            "services":[{"name":"nginx","manager":"runit","unit":"/etc/sv/nginx"}]}]}"#;
        let a = parse_import(toml_text, false, "t").unwrap();
        let b = parse_import(json_text, true, "j").unwrap();
        assert_eq!(a, b);
        let (spec, services) = a.hosts[0].clone().split();
        assert_eq!(spec.port, 22);
        assert_eq!(spec.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(services[0].host.as_str(), "web-1");
        assert_eq!(services[0].actions, DEFAULT_ACTIONS.to_vec());
        assert!(services[0].expected_running);
    }

    #[test]
    fn import_reads_the_executor_static_host_format() {
        let text = r#"
[[hosts]]
id = "demo-1"
address = "127.0.0.2"
port = 2201
user = "fleet"
host_key_policy = "strict"
key_path = "/state/demo/id_ed25519"
host_key_fingerprint = "SHA256:abc"

[[hosts.services]]
name = "web"
manager = "runit"
unit = "/state/demo/demo-1/sv/web"
actions = ["status", "restart", "logs"]
log_path = "/state/demo/demo-1/log/web/current"
"#;
        let f = parse_import(text, false, "hosts.toml").unwrap();
        let (spec, services) = f.hosts[0].clone().split();
        assert_eq!(spec.host.as_str(), "demo-1");
        assert_eq!(spec.port, 2201);
        assert_eq!(spec.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(services[0].actions.len(), 3);
        assert_eq!(
            services[0].log_path.as_deref(),
            Some("/state/demo/demo-1/log/web/current")
        );
    }

    #[test]
    fn import_errors_name_the_field() {
        let err = parse_import(
            r#"{"hosts":[{"host":"Web 1","address":"a","user":"u"}]}"#,
            true,
            "f.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("hosts[0].host") && err.contains("f.json"),
            "{err}"
        );
        let err = parse_import(
            "[[hosts]]\nhost = \"a\"\naddress = \"b\"\nuser = \"c\"\nport = 99999\n",
            false,
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
        let err = parse_import(
            "[[hosts]]\nhost = \"a\"\naddress = \"b\"\nuser = \"c\"\nbogus = 1\n",
            false,
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
