//! Logs written before fleetbus moved to redb 5 are redb file format v2 (redb 2.x); redb 3 and
//! later read format v3 only. [`v2_to_v3`] upgrades such a file in place with redb 2.6's
//! `Database::upgrade()`, after keeping a copy next to it (`log.redb.before-redb-v3-<unix ms>`).
//! The upgrade rewrites redb's own pages, not our tables: entries, hashes, snapshots and
//! checkpoints keep their bytes, and ingest verifies the chain right after, as at every open.

use std::path::{Path, PathBuf};

use super::{now_ms, LogError};

/// Upgrades the v2 file at `path` to v3 in place; returns where the copy of the v2 file is.
pub(super) fn v2_to_v3(path: &Path) -> Result<PathBuf, LogError> {
    let fail = |reason: String| LogError::Open {
        path: path.to_owned(),
        reason,
    };
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".before-redb-v3-{}", now_ms()));
    let backup = PathBuf::from(name);
    std::fs::copy(path, &backup).map_err(|e| {
        fail(format!(
            "file format v2 needs an upgrade; cannot keep a copy at {} first: {e}",
            backup.display()
        ))
    })?;
    let mut db = redb2::Database::open(path)
        .map_err(|e| fail(format!("file format v2: cannot open it to upgrade: {e}")))?;
    db.upgrade()
        .map_err(|e| fail(format!("file format v2: upgrade to v3 failed: {e}")))?;
    drop(db);
    tracing::warn!(
        log = %path.display(),
        backup = %backup.display(),
        "event log upgraded from redb file format v2 to v3; the v2 file is kept"
    );
    Ok(backup)
}
