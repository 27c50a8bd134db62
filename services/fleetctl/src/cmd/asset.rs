//! `fleetctl asset put|ls|rm`: files agents download, in the `assets` object store bucket.
//! Agents fetch the manifest (`GET /v1/assets`) and the files (`GET /v1/assets/{name}`) from
//! ingest with their key.

use std::collections::HashMap;
use std::path::PathBuf;

use async_nats::jetstream::object_store::ObjectMetadata;
use clap::Subcommand;
use fleetbus_runtime::objects as store;
use fleetbus_schemas::http::{content_type, AssetEntry};
use fleetbus_schemas::subjects::ASSETS_BUCKET;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::{CtlError, Ctx};

/// `asset` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Upload a file (replacing an asset of the same name).
    Put {
        /// The file.
        file: PathBuf,
        /// The asset name (default: the file name); may contain '/'.
        #[arg(long)]
        name: Option<String>,
        /// MIME type (default: from the extension).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// The manifest: name, size, SHA-256, content type.
    Ls,
    /// Remove an asset.
    Rm {
        /// The asset name.
        name: String,
    },
}

fn check_name(name: &str) -> Result<(), CtlError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(CtlError::Usage(format!(
            "asset name {name:?} must be 1–255 of a-z, A-Z, 0-9, '.', '-', '_' and '/' (no empty, '.' or '..' segments)"
        )))
    }
}

async fn manifest(ctx: &Ctx) -> Result<Vec<AssetEntry>, CtlError> {
    let js = ctx.jetstream().await?;
    let bucket = store::bucket(&js, ASSETS_BUCKET)
        .await
        .map_err(|e| CtlError::nats("open the assets bucket", e))?;
    let mut list = bucket
        .list()
        .await
        .map_err(|e| CtlError::nats("list assets", e))?;
    let mut out = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| CtlError::nats("list assets", e))?;
        if info.deleted {
            continue;
        }
        out.push(AssetEntry {
            sha256: store::digest_hex(info.digest.as_deref()).unwrap_or_default(),
            size: info.size as u64,
            content_type: info
                .metadata
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| content_type(&info.name).to_owned()),
            modified: info.modified.map(|m| m.to_string()),
            name: info.name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Runs an `asset` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.verb {
        Verb::Put {
            file,
            name,
            content_type: ctype,
        } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(String::from)
                    .ok_or_else(|| {
                        CtlError::Usage(format!(
                            "{} has no usable file name; pass --name",
                            file.display()
                        ))
                    })?,
            };
            check_name(&name)?;
            let bytes = std::fs::read(&file).map_err(|e| CtlError::io(&file, e))?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let ctype = ctype.unwrap_or_else(|| content_type(&name).to_owned());
            let js = ctx.jetstream().await?;
            let bucket = store::bucket(&js, ASSETS_BUCKET)
                .await
                .map_err(|e| CtlError::nats("open the assets bucket", e))?;
            let meta = ObjectMetadata {
                name: name.clone(),
                metadata: HashMap::from([("content-type".to_string(), ctype.clone())]),
                ..Default::default()
            };
            let info = bucket
                .put(meta, &mut bytes.as_slice())
                .await
                .map_err(|e| CtlError::nats(format!("upload {name}"), e))?;
            let stored = store::digest_hex(info.digest.as_deref()).unwrap_or_default();
            if stored != sha256 {
                return Err(CtlError::Nats {
                    what: format!("upload {name}"),
                    reason: format!("the store holds SHA-256 {stored}, the file has {sha256}"),
                });
            }
            let entry = AssetEntry {
                name: name.clone(),
                size: bytes.len() as u64,
                sha256: sha256.clone(),
                content_type: ctype,
                modified: info.modified.map(|m| m.to_string()),
            };
            ctx.print(
                format!("asset {name}: {} bytes, sha256 {sha256}", bytes.len()),
                &entry,
            );
            Ok(())
        }
        Verb::Ls => {
            let assets = manifest(ctx).await?;
            let mut human = format!(
                "{:<40} {:>10}  {:<64}  {}\n",
                "NAME", "SIZE", "SHA256", "TYPE"
            );
            for a in &assets {
                human.push_str(&format!(
                    "{:<40} {:>10}  {:<64}  {}\n",
                    a.name, a.size, a.sha256, a.content_type
                ));
            }
            ctx.print(human, &serde_json::json!({ "assets": assets }));
            Ok(())
        }
        Verb::Rm { name } => {
            let js = ctx.jetstream().await?;
            let bucket = store::bucket(&js, ASSETS_BUCKET)
                .await
                .map_err(|e| CtlError::nats("open the assets bucket", e))?;
            match bucket.info(name.as_str()).await {
                Ok(i) if !i.deleted => {}
                _ => {
                    return Err(CtlError::Usage(format!(
                        "no asset named {name:?} (see `fleetctl asset ls`)"
                    )))
                }
            }
            bucket
                .delete(name.as_str())
                .await
                .map_err(|e| CtlError::nats(format!("remove {name}"), e))?;
            ctx.print(
                format!("asset {name} removed"),
                &serde_json::json!({ "removed": name }),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_are_plain_relative_paths() {
        for ok in ["logo.png", "scripts/setup.sh", "a/b/c-1_2.tar.gz"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "a//b", "../x", "a/./b", "sp ace", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
