//! Test harness for fleetbus: a real `nats-server` per test (single node or cluster) on free
//! loopback ports with a temp JetStream dir, killed on drop; helpers to find workspace binaries.
//!
//! Panics are deliberate here: this crate is only used by tests, and a failed setup should
//! stop the test with the reason (e.g. the server's stderr).

pub mod nats;
pub mod sshd;

pub use nats::{NatsCluster, NatsServer, ServerErrors};

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Poll `cond` every 20 ms until it returns `true` (then `true`) or `timeout` passes (`false`).
pub async fn wait_for<F, Fut>(mut cond: F, timeout: Duration) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The directory cargo puts workspace binaries in: `CARGO_TARGET_DIR/debug`, else the
/// directory of the running test binary's profile (`target/debug`), else `<workspace>/target/debug`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            workspace_root().join(dir)
        } else {
            dir
        };
        return dir.join("debug");
    }
    // Test binaries live in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile) = exe.parent().and_then(|deps| {
            (deps.file_name()? == "deps")
                .then(|| deps.parent())
                .flatten()
        }) {
            return profile.to_path_buf();
        }
    }
    workspace_root().join("target").join("debug")
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// Path of a workspace binary, e.g. `bin_path("fleetbus-ingest")`. Panics with the command to
/// run if it has not been built (tests do not build binaries themselves).
pub fn bin_path(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "binary {} not found; run `cargo build -p {name}` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}
