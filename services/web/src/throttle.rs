//! Login throttling: per (account, client address), exponential backoff, kept in a file so a
//! restart does not reset it.
//!
//! Why this shape: a lockout per address locked out everyone behind a proxy, and one per
//! account let anyone lock a user out. Keying on the pair means a guesser slows down only
//! itself, and another account's correct password from the same address is never refused.
//! The client address is the connection's peer, or, when the peer is a configured trusted
//! proxy, the first untrusted address from the right of `X-Forwarded-For` ([`client_ip`]).
//!
//! Every attempt counts as a failure until the password is proven right (then the key is
//! cleared), so parallel guesses cannot all slip through one free slot. After `free` failures,
//! the next attempt must wait `base · 2^(failures − free)`, at most `max`, after the last
//! failure; attempts refused while waiting do not count. A key quiet for `forget` is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::WebError;

/// Most keys kept; beyond it the ones that block nobody are dropped first.
const MAX_KEYS: usize = 10_000;

/// The backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures that cost nothing.
    pub free: u32,
    /// The first wait after the free failures.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A key without failures for this long starts afresh.
    pub forget: Duration,
}

impl Backoff {
    /// How long after the last failure the next attempt is allowed, after `failures` failures.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures < self.free {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    account: String,
    address: String,
    failures: u32,
    /// Unix milliseconds (wall clock: it has to mean the same after a restart).
    last_failure_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<Entry>,
}

/// The throttle; see the module docs.
pub struct LoginThrottle {
    entries: Mutex<HashMap<(String, String), Entry>>,
    policy: Backoff,
    path: PathBuf,
    /// Serializes file writes so the last state written is the newest.
    writing: tokio::sync::Mutex<()>,
}

impl LoginThrottle {
    /// Loads the throttle kept at `path` (empty when the file does not exist yet).
    pub fn load(path: &Path, policy: Backoff) -> Result<LoginThrottle, WebError> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| {
                    WebError::Startup(format!(
                        "{}: not a login throttle file: {e}; remove it to start afresh",
                        path.display()
                    ))
                })?;
                file.entries
                    .into_iter()
                    .map(|e| ((e.account.clone(), e.address.clone()), e))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(WebError::Startup(format!("{}: {e}", path.display()))),
        };
        Ok(LoginThrottle {
            entries: Mutex::new(entries),
            policy,
            path: path.to_owned(),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts an attempt: `Err(wait)` while the key must wait, otherwise the attempt is
    /// counted as a failure (and saved) until [`LoginThrottle::succeeded`] clears it.
    pub async fn attempt(
        &self,
        account: &str,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Duration> {
        let now_ms = now.timestamp_millis();
        {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let key = (account.to_owned(), address.to_owned());
            if let Some(entry) = map.get(&key) {
                let since = Duration::from_millis(
                    u64::try_from(now_ms.saturating_sub(entry.last_failure_ms)).unwrap_or(0),
                );
                if since >= self.policy.forget {
                    map.remove(&key);
                } else {
                    let wait = self.policy.delay(entry.failures);
                    if since < wait {
                        return Err(wait - since);
                    }
                }
            }
            if map.len() >= MAX_KEYS {
                self.shrink(&mut map, now_ms);
            }
            let entry = map.entry(key).or_insert_with(|| Entry {
                account: account.to_owned(),
                address: address.to_owned(),
                failures: 0,
                last_failure_ms: now_ms,
            });
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure_ms = now_ms;
        }
        self.save().await;
        Ok(())
    }

    /// The password was right: the key starts afresh.
    pub async fn succeeded(&self, account: &str, address: &str) {
        let removed = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(account.to_owned(), address.to_owned()))
            .is_some();
        if removed {
            self.save().await;
        }
    }

    /// The attempt could not be decided (the bus did not answer): it does not count.
    pub async fn forgive(&self, account: &str, address: &str) {
        let changed = {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let key = (account.to_owned(), address.to_owned());
            match map.get_mut(&key) {
                Some(entry) if entry.failures > 1 => {
                    entry.failures -= 1;
                    true
                }
                Some(_) => map.remove(&key).is_some(),
                None => false,
            }
        };
        if changed {
            self.save().await;
        }
    }

    /// Drops keys that block nobody now; if that is not enough, the oldest ones.
    fn shrink(&self, map: &mut HashMap<(String, String), Entry>, now_ms: i64) {
        let policy = self.policy;
        map.retain(|_, e| {
            let wait = i64::try_from(policy.delay(e.failures).as_millis()).unwrap_or(i64::MAX);
            e.last_failure_ms.saturating_add(wait) > now_ms
        });
        if map.len() >= MAX_KEYS {
            let mut ages: Vec<i64> = map.values().map(|e| e.last_failure_ms).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, e| e.last_failure_ms > cut);
        }
    }

    /// Writes the file atomically (temp file, fsync, rename). A failed write is logged: the
    /// throttle keeps working in memory.
    async fn save(&self) {
        let _writing = self.writing.lock().await;
        let file = File {
            version: 1,
            entries: self
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
        };
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &file)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "login throttle not saved")
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "login throttle not saved")
            }
        }
    }
}

fn write_atomically(path: &Path, file: &File) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the first address
/// from the right of `X-Forwarded-For` (all its values, in order) that is not a trusted proxy.
/// A hop that does not parse ends the walk at the last trusted address (it was written by
/// someone we do not trust). `None` without a peer (in-process tests).
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let ip = match hop.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => match hop.parse::<SocketAddr>() {
                Ok(sa) => sa.ip(),
                Err(_) => return Some(client),
            },
        }
        .to_canonical();
        client = ip;
        if !trusted.contains(&ip) {
            return Some(ip);
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            free: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            forget: Duration::from_secs(3600),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn delays_double_after_the_free_failures_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (0..12).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[tokio::test]
    async fn backoff_is_per_account_and_address_and_survives_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web/login-throttle.json");
        let th = LoginThrottle::load(&path, policy()).expect("load");
        for _ in 0..3 {
            th.attempt("ann", "10.0.0.1", at(0)).await.expect("free");
        }
        assert_eq!(
            th.attempt("ann", "10.0.0.1", at(0)).await,
            Err(Duration::from_secs(1))
        );
        // Other account, same address; same account, other address: unaffected.
        th.attempt("bob", "10.0.0.1", at(0)).await.expect("bob");
        th.attempt("ann", "10.0.0.2", at(0))
            .await
            .expect("other address");
        th.attempt("ann", "10.0.0.1", at(1))
            .await
            .expect("waited 1 s");
        assert_eq!(
            th.attempt("ann", "10.0.0.1", at(2)).await,
            Err(Duration::from_secs(1))
        );
        th.attempt("ann", "10.0.0.1", at(3))
            .await
            .expect("waited 2 s");
        assert_eq!(
            th.attempt("ann", "10.0.0.1", at(3)).await,
            Err(Duration::from_secs(4))
        );

        let reloaded = LoginThrottle::load(&path, policy()).expect("reload");
        assert_eq!(
            reloaded.attempt("ann", "10.0.0.1", at(5)).await,
            Err(Duration::from_secs(2)),
            "the wait survives a restart"
        );
        reloaded
            .attempt("ann", "10.0.0.1", at(7))
            .await
            .expect("waited");
        // An attempt the bus could not decide is taken back: the wait is that of 5 failures.
        reloaded.forgive("ann", "10.0.0.1").await;
        assert_eq!(
            reloaded.attempt("ann", "10.0.0.1", at(7)).await,
            Err(Duration::from_secs(4))
        );
        reloaded.succeeded("ann", "10.0.0.1").await;
        reloaded
            .attempt("ann", "10.0.0.1", at(7))
            .await
            .expect("cleared");
        // A key quiet for `forget` starts afresh.
        for _ in 0..5 {
            let _ = reloaded.attempt("cy", "10.0.0.3", at(10)).await;
        }
        assert!(reloaded.attempt("cy", "10.0.0.3", at(10)).await.is_err());
        reloaded
            .attempt("cy", "10.0.0.3", at(3700))
            .await
            .expect("forgotten");
        let mode = std::fs::metadata(&path).map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o777
        });
        assert_eq!(mode.expect("file"), 0o600);
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.0.0.9");
        let peer = Some(ip("192.0.2.7"));
        // Untrusted peer: its header is ignored.
        assert_eq!(client_ip(peer, &["203.0.113.5"], &[proxy]), peer);
        assert_eq!(client_ip(peer, &["203.0.113.5"], &[]), peer);
        // Trusted peer: the rightmost untrusted hop.
        let via = Some(proxy);
        assert_eq!(
            client_ip(via, &["1.1.1.1, 203.0.113.5"], &[proxy]),
            Some(ip("203.0.113.5")),
            "a client cannot choose its address by prepending hops"
        );
        assert_eq!(
            client_ip(via, &["203.0.113.5", "10.0.0.8"], &[proxy, ip("10.0.0.8")]),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(client_ip(via, &[], &[proxy]), via);
        assert_eq!(client_ip(via, &["garbage"], &[proxy]), via);
        assert_eq!(
            client_ip(via, &["203.0.113.5:4711"], &[proxy]),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            client_ip(Some(ip("::ffff:10.0.0.9")), &["203.0.113.5"], &[proxy]),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(client_ip(None, &["203.0.113.5"], &[proxy]), None);
    }
}
