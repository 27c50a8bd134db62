//! fleetbus' own known-hosts store: one pinned `SHA256:` fingerprint per host id.
//!
//! The file (`<state>/known_hosts.json`) is a cache: every pin is also a `host.key_pinned` event,
//! and on start the executor folds those events back in, so the store can be rebuilt from the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fleetbus_schemas::HostId;

use crate::error::ExecError;
pub use fleetbus_remote::hostkey::Pinned;

/// The store. Cheap to share (`Arc`); writes go to disk before the lock is released.
#[derive(Debug)]
pub struct KnownHosts {
    path: Option<PathBuf>,
    keys: Mutex<BTreeMap<HostId, Pinned>>,
}

impl KnownHosts {
    /// An in-memory store (benchmarks, `off` policy labs).
    pub fn in_memory() -> Self {
        KnownHosts {
            path: None,
            keys: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads `path` if it exists (an unreadable or corrupt file is an error: better to stop than
    /// to forget pins and accept a changed key).
    pub fn open(path: &Path) -> Result<Self, ExecError> {
        let keys = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ExecError::Config(format!(
                    "known hosts file {} is corrupt ({e}); fix or remove it (pins are rebuilt from host.key_pinned events)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(ExecError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        Ok(KnownHosts {
            path: Some(path.to_path_buf()),
            keys: Mutex::new(keys),
        })
    }

    /// The pinned key of a host.
    pub fn get(&self, host: &HostId) -> Option<Pinned> {
        self.lock().get(host).cloned()
    }

    /// Pins (or replaces) a host's key and writes the file. Returns whether anything changed.
    pub fn pin(&self, host: &HostId, pinned: Pinned) -> Result<bool, ExecError> {
        let mut keys = self.lock();
        if keys.get(host) == Some(&pinned) {
            return Ok(false);
        }
        keys.insert(host.clone(), pinned);
        self.persist(&keys)?;
        Ok(true)
    }

    /// Forgets a host (removed from the registry).
    pub fn forget(&self, host: &HostId) -> Result<(), ExecError> {
        let mut keys = self.lock();
        if keys.remove(host).is_some() {
            self.persist(&keys)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<HostId, Pinned>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    // A few hundred bytes per host, written rarely (first contact, trust): a synchronous write
    // under the lock keeps pins and file in step.
    fn persist(&self, keys: &BTreeMap<HostId, Pinned>) -> Result<(), ExecError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(keys)
            .map_err(|e| ExecError::Config(format!("encoding known hosts: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(ExecError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(ExecError::io(format!("renaming {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts.json");
        let h = HostId::new("h1").unwrap();
        let p = Pinned {
            algorithm: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
        };
        let store = KnownHosts::open(&path).unwrap();
        assert!(store.pin(&h, p.clone()).unwrap());
        assert!(!store.pin(&h, p.clone()).unwrap());
        assert_eq!(KnownHosts::open(&path).unwrap().get(&h), Some(p));
        std::fs::write(&path, "{not json").unwrap();
        assert!(KnownHosts::open(&path).is_err());
    }
}
