//! Object-store access and snapshot encryption.
//!
//! Snapshots are sealed with ChaCha20-Poly1305 under a key that only ingest holds, in a mode-0600
//! file under the state dir (`<state>/ingest/fleet/snapshot.key`). The stored object is
//! `FBS1 ‖ nonce (12) ‖ ciphertext+tag`; the associated data is the object name, so a sealed
//! snapshot cannot be passed off as another agent's. The key never reaches the log or the bus.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, object_store};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use tokio::io::AsyncReadExt;

use super::FleetError;

pub(crate) use fleetbus_runtime::objects::digest_hex;
pub(crate) use fleetbus_schemas::subjects::{ASSETS_BUCKET, SNAPSHOTS_BUCKET};

const MAGIC: &[u8; 4] = b"FBS1";
const NONCE_LEN: usize = 12;

/// The snapshot sealing key.
#[derive(Clone)]
pub(crate) struct SnapshotKey(Key);

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(..)")
    }
}

impl SnapshotKey {
    /// Where the key lives under a state dir.
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("ingest").join("fleet").join("snapshot.key")
    }

    /// Loads the key, creating it (random, mode 0600) on first use. A key file readable by
    /// others is refused.
    pub(crate) fn load_or_create(path: &Path) -> Result<SnapshotKey, FleetError> {
        let err = |reason: String| FleetError::Key {
            path: path.to_owned(),
            reason,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create its directory: {e}")))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            let key = ChaCha20Poly1305::generate_key(&mut OsRng);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(format!("cannot create: {e}")))?;
            f.write_all(hex::encode(key).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(format!("cannot write: {e}")))?;
            tracing::info!(path = %path.display(), "snapshot key created");
        }
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode is {:o}; it must be 0600 (chmod 600 it)",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let bytes =
            hex::decode(text.trim()).map_err(|_| err("expected 64 hex characters".into()))?;
        if bytes.len() != 32 {
            return Err(err(format!(
                "expected a 32-byte key, found {} bytes",
                bytes.len()
            )));
        }
        Ok(SnapshotKey(*Key::from_slice(&bytes)))
    }

    /// Seals a snapshot for `object`.
    pub(crate) fn seal(&self, object: &str, plaintext: &[u8]) -> Result<Vec<u8>, FleetError> {
        let cipher = ChaCha20Poly1305::new(&self.0);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: object.as_bytes(),
                },
            )
            .map_err(|_| FleetError::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a sealed snapshot of `object`; fails if it was altered or sealed for another name.
    pub(crate) fn open(&self, object: &str, sealed: &[u8]) -> Result<Vec<u8>, FleetError> {
        if sealed.len() < MAGIC.len() + NONCE_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(FleetError::Crypto(format!(
                "object {object} is not a sealed snapshot"
            )));
        }
        let (nonce, body) = sealed[MAGIC.len()..].split_at(NONCE_LEN);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: object.as_bytes(),
                },
            )
            .map_err(|_| {
                FleetError::Crypto(format!(
                    "object {object} does not open with this key (altered, or sealed with another key)"
                ))
            })
    }
}

/// Opens a bucket, creating it when it does not exist yet.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
) -> Result<object_store::ObjectStore, FleetError> {
    fleetbus_runtime::objects::bucket(js, name)
        .await
        .map_err(|e| FleetError::Store(e.to_string()))
}

/// Reads a whole object.
pub(crate) async fn read_object(
    store: &object_store::ObjectStore,
    name: &str,
) -> Result<Option<Vec<u8>>, FleetError> {
    let mut object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FleetError::Store(format!("get {name}: {e}"))),
    };
    let mut buf = Vec::with_capacity(object.info.size);
    object
        .read_to_end(&mut buf)
        .await
        .map_err(|e| FleetError::Store(format!("read {name}: {e}")))?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_snapshots_open_only_under_their_own_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = SnapshotKey::path(dir.path());
        let key = SnapshotKey::load_or_create(&path).unwrap();
        let again = SnapshotKey::load_or_create(&path).unwrap();
        let plain = b"disk layout: /dev/sda1 ext4\nsecret=hunter2\n".repeat(10);
        let sealed = key.seal("web-1/01A", &plain).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "plaintext visible in ciphertext"
        );
        assert_eq!(again.open("web-1/01A", &sealed).unwrap(), plain);
        assert!(
            key.open("web-2/01A", &sealed).is_err(),
            "opened under another name"
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            key.open("web-1/01A", &flipped).is_err(),
            "altered ciphertext opened"
        );
        std::fs::remove_file(&path).unwrap();
        let other = SnapshotKey::load_or_create(&path).unwrap();
        assert!(
            other.open("web-1/01A", &sealed).is_err(),
            "opened with another key"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = SnapshotKey::path(dir.path());
        SnapshotKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SnapshotKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("0600"), "{e}");
    }
}
