//! API tokens for scripts: `fbt_<id>_<secret>`, scoped to a role, stored as SHA-256 hashes in a
//! file private to the web service (mode 0600). The token itself is shown once, at creation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use fleetbus_schemas::UserRole;
use serde::{Deserialize, Serialize};

use crate::auth::{random_token, same, Principal, Via};
use crate::WebError;

/// One stored token (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (part of the token).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The role requests made with it act with.
    pub role: UserRole,
    /// SHA-256 (hex) of the whole token.
    pub hash: String,
    /// The user who created it.
    pub created_by: String,
    /// When.
    pub created: DateTime<Utc>,
}

/// The token store.
pub struct Tokens {
    path: PathBuf,
    records: RwLock<BTreeMap<String, TokenRecord>>,
}

impl Tokens {
    /// Loads the store (a missing file is an empty store).
    pub fn load(path: &Path) -> Result<Tokens, WebError> {
        let records = match std::fs::read(path) {
            Ok(bytes) => {
                let list: Vec<TokenRecord> = serde_json::from_slice(&bytes).map_err(|e| {
                    WebError::Internal(format!("{}: not a token list: {e}", path.display()))
                })?;
                list.into_iter().map(|r| (r.id.clone(), r)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(WebError::Internal(format!("{}: {e}", path.display()))),
        };
        Ok(Tokens {
            path: path.to_owned(),
            records: RwLock::new(records),
        })
    }

    /// Every token (no secrets).
    pub fn list(&self) -> Vec<TokenRecord> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a token; returns the token text (shown once) and its record.
    pub async fn create(
        &self,
        name: &str,
        role: UserRole,
        created_by: &str,
    ) -> Result<(String, TokenRecord), WebError> {
        let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        let token = format!("fbt_{id}_{}", random_token());
        let record = TokenRecord {
            id: id.clone(),
            name: name.chars().take(100).collect(),
            role,
            hash: hex::encode(crate::auth::token_hash(&token)),
            created_by: created_by.to_owned(),
            created: Utc::now(),
        };
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, record.clone());
        self.save().await?;
        Ok((token, record))
    }

    /// Revokes a token; false if there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, WebError> {
        let removed = self
            .records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some();
        if removed {
            self.save().await?;
        }
        Ok(removed)
    }

    /// The principal of a bearer token, if valid.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let rest = token.strip_prefix("fbt_")?;
        let (id, _) = rest.split_once('_')?;
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let record = records.get(id)?;
        let presented = hex::encode(crate::auth::token_hash(token));
        same(&presented, &record.hash).then(|| Principal {
            user: format!("token:{}", record.id),
            role: record.role,
            via: Via::Token {
                id: record.id.clone(),
            },
        })
    }

    async fn save(&self) -> Result<(), WebError> {
        let list = self.list();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_private(&path, &list))
            .await
            .map_err(|e| WebError::Internal(format!("token store: {e}")))?
    }
}

fn write_private(path: &Path, list: &[TokenRecord]) -> Result<(), WebError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| WebError::Internal(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(list)
        .map_err(|e| WebError::Internal(format!("encode tokens: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_hashed_at_rest_and_revocable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web/tokens.json");
        let store = Tokens::load(&path).expect("empty store");
        let (token, record) = store
            .create("ci", UserRole::Operator, "admin")
            .await
            .expect("create");
        let on_disk = std::fs::read_to_string(&path).expect("file");
        assert!(!on_disk.contains(&token), "token text must not be stored");
        assert!(on_disk.contains(&record.hash));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let reloaded = Tokens::load(&path).expect("reload");
        let p = reloaded.authenticate(&token).expect("valid token");
        assert_eq!(p.role, UserRole::Operator);
        let mut forged = token.clone();
        forged.pop();
        forged.push('x');
        assert!(reloaded.authenticate(&forged).is_none());
        assert!(reloaded.authenticate("fbt_nope_x").is_none());
        assert!(reloaded.revoke(&record.id).await.expect("revoke"));
        assert!(reloaded.authenticate(&token).is_none());
    }
}
