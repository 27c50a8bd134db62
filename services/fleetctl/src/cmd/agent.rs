//! `fleetctl agent add|revoke|block|unblock|ls`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Subcommand;
use fleetbus_schemas::commands::AgentCommand;
use fleetbus_schemas::{AgentId, Command, HostId};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::ctx::summarize;
use crate::{CtlError, Ctx};

/// `agent` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Issue a new key for an agent. The key is shown once; only its SHA-256 goes on the bus.
    Add {
        /// The agent id.
        agent: AgentId,
        /// The (registered) host it runs on.
        #[arg(long)]
        host: HostId,
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Revoke the agent's key.
    Revoke {
        /// The agent id.
        agent: AgentId,
    },
    /// Block the agent: reports are stored but raise no notifications.
    Block {
        /// The agent id.
        agent: AgentId,
        /// Why.
        #[arg(long, default_value = "blocked by admin")]
        reason: String,
    },
    /// Unblock the agent.
    Unblock {
        /// The agent id.
        agent: AgentId,
    },
    /// List agents with their hosts, key ids and blocked state.
    Ls,
}

/// A fresh key: 32 random bytes, base64url without padding (43 characters).
pub(crate) fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of the key as lowercase hex: what ingest stores and compares.
pub(crate) fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The public key id: `k-` and the first 8 hex digits of the hash, so a listing can be matched
/// with a key file without showing the key.
pub(crate) fn key_id(hash: &str) -> String {
    format!("k-{}", &hash[..8.min(hash.len())])
}

fn write_key_file(path: &Path, key: &str) -> Result<(), CtlError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CtlError::io(dir, e))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CtlError::io(&tmp, e))?;
    f.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CtlError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CtlError::io(path, e))
}

/// Runs an `agent` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let simple = |cmd: AgentCommand| Command::Agent(cmd);
    match args.verb {
        Verb::Add {
            agent,
            host,
            key_file,
        } => {
            let key = new_key();
            let hash = key_hash(&key);
            let id = key_id(&hash);
            let outcome = ctx
                .send(simple(AgentCommand::IssueKey {
                    agent: agent.clone(),
                    host: host.clone(),
                    key_id: id.clone(),
                    key_hash: hash,
                }))
                .await?;
            // Written (or shown) only once ingest has accepted it, so a key file always holds a
            // key that works.
            let mut json = serde_json::json!({
                "agent": agent,
                "host": host,
                "key_id": id,
                "command_id": outcome.command.id.to_string(),
                "event_id": outcome.event.id.to_string(),
            });
            let human = match &key_file {
                Some(path) => {
                    write_key_file(path, &key)?;
                    json["key_file"] = serde_json::json!(path);
                    format!(
                        "agent {agent} on {host}: key {id} written to {} (mode 0600)",
                        path.display()
                    )
                }
                None => {
                    json["key"] = serde_json::json!(key);
                    format!("agent {agent} on {host}: key {id}\n{key}\nstore it now: it is not shown again")
                }
            };
            ctx.print(human, &json);
            Ok(())
        }
        Verb::Revoke { agent } => report(ctx, simple(AgentCommand::RevokeKey { agent })).await,
        Verb::Block { agent, reason } => {
            report(ctx, simple(AgentCommand::Block { agent, reason })).await
        }
        Verb::Unblock { agent } => report(ctx, simple(AgentCommand::Unblock { agent })).await,
        Verb::Ls => {
            let registry = ctx
                .query(
                    fleetbus_schemas::queries::model::REGISTRY,
                    &fleetbus_schemas::queries::RegistryQuery {},
                )
                .await?;
            let agents = registry.get("agents").cloned().unwrap_or_default();
            let mut human = format!(
                "{:<24} {:<24} {:<12} {}\n",
                "AGENT", "HOST", "KEY", "BLOCKED"
            );
            if let Some(map) = agents.as_object() {
                for (name, a) in map {
                    let s = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                    let blocked = if a.get("blocked").and_then(|b| b.as_bool()).unwrap_or(false) {
                        format!("yes ({})", s("block_reason"))
                    } else {
                        "no".into()
                    };
                    human.push_str(&format!(
                        "{name:<24} {:<24} {:<12} {blocked}\n",
                        s("host"),
                        s("key_id")
                    ));
                }
            }
            ctx.print(human, &agents);
            Ok(())
        }
    }
}

/// Sends a command and prints the event it caused.
pub(crate) async fn report(ctx: &Ctx, command: Command) -> Result<(), CtlError> {
    let outcome = ctx.send(command).await?;
    ctx.print(
        summarize(&outcome.event),
        &serde_json::json!({
            "command_id": outcome.command.id.to_string(),
            "subject": outcome.subject,
            "event": outcome.event,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_base64url_and_hash_to_sha256_hex() {
        let a = new_key();
        let b = new_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let h = key_hash("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key_id(&h), "k-ba7816bf");
    }

    #[test]
    fn key_file_is_private_and_replaced_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/web-1.key");
        write_key_file(&path, "first").unwrap();
        write_key_file(&path, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("keys")).unwrap().count(),
            1
        );
    }
}
