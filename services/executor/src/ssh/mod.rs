//! The SSH layer: a pool of russh client connections per host, host key policy, and command
//! execution with streamed output, exit codes, timeouts and real cancellation.
//!
//! Every command runs wrapped as
//! `read _ _ _ _ pg _ </proc/$$/stat; printf '<prefix> PGID %s %s\n' "$pg" "$$" >&2; eval '<line>'`
//! in the login shell (a POSIX sh; `eval` instead of a second `sh -c` saves a process per command).
//! sshd starts a non-pty session in its own session (setsid), so the wrapper shell leads a
//! process group containing everything the command starts. Its id comes back on stderr as a
//! control line with a per-run nonce (taken out of the output), and cancel runs
//! `kill -TERM -<pgid>`, waits a grace period, then `kill -KILL -<pgid>`, over a second channel.

pub mod coalesce;
pub mod control;
pub mod known_hosts;
mod shell;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbus_schemas::events::host::HostKeyPolicy;
use fleetbus_schemas::events::job::OutputStream;
use fleetbus_schemas::HostId;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{client, ChannelMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::control::{Control, ControlFilter, Utf8Stream};
use self::known_hosts::{KnownHosts, Pinned};
use crate::error::ExecError;
use crate::quote::quote;
use fleetbus_remote::hostkey::modern_algorithms;

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host's id (key of the pool and the known-hosts store).
    pub host: HostId,
    /// IP or DNS name.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Host key policy.
    pub policy: HostKeyPolicy,
}

impl Target {
    fn addr(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

/// SSH settings.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Private key file (OpenSSH format).
    pub key_path: PathBuf,
    /// Optional password per host id (from a secrets file); tried after the key.
    pub passwords: HashMap<HostId, String>,
    /// TCP connect + handshake + auth deadline.
    pub connect_timeout: Duration,
    /// Keepalive interval on pooled connections.
    pub keepalive: Duration,
    /// Reuse connections (`false`: one connection per command, closed after it).
    pub pool: bool,
    /// Grace between TERM and KILL on cancel.
    pub kill_grace: Duration,
    /// How long [`SshPool::exec_shared`] waits for more read-only commands for the same host
    /// before running them as one remote exec (zero: run each at once, alone).
    pub coalesce_window: Duration,
    /// At most this many commands share one remote exec; a full batch runs at once.
    pub coalesce_max_parts: usize,
    /// Run coalesced batches in one persistent remote shell per pooled connection instead of
    /// one exec each (only with `pool`; see `ssh/shell.rs`).
    pub coalesce_shell: bool,
}

impl SshSettings {
    /// Defaults with a key file.
    pub fn new(key_path: impl Into<PathBuf>) -> Self {
        SshSettings {
            key_path: key_path.into(),
            passwords: HashMap::new(),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            pool: true,
            kill_grace: Duration::from_secs(3),
            coalesce_window: coalesce::DEFAULT_WINDOW,
            coalesce_max_parts: coalesce::DEFAULT_MAX_PARTS,
            coalesce_shell: true,
        }
    }
}

/// Host key facts for the bus (`host.key_pinned`, `host.key_mismatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNotice {
    /// Pinned on first contact (accept-new).
    Pinned {
        /// The host.
        host: HostId,
        /// The key.
        key: Pinned,
    },
    /// A key other than the pinned one was presented and refused.
    Mismatch {
        /// The host.
        host: HostId,
        /// Pinned fingerprint.
        expected: String,
        /// Presented fingerprint.
        presented: String,
    },
}

#[derive(Debug, Clone)]
enum Verdict {
    Mismatch { expected: String, presented: String },
    Unknown { presented: String },
}

struct Handler {
    host: HostId,
    policy: HostKeyPolicy,
    known: Arc<KnownHosts>,
    verdict: Arc<Mutex<Option<Verdict>>>,
    notices: mpsc::UnboundedSender<KeyNotice>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKey,
    ) -> Result<bool, Self::Error> {
        let presented = key.fingerprint(HashAlg::Sha256).to_string();
        let algorithm = key.algorithm().as_str().to_string();
        let pinned = self.known.get(&self.host);
        let set = |v: Verdict| {
            *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        };
        match (pinned, self.policy) {
            (Some(p), _) if p.fingerprint == presented => Ok(true),
            (_, HostKeyPolicy::Off) => {
                warn!(host = %self.host, fingerprint = %presented, "host key not checked (policy off)");
                Ok(true)
            }
            (Some(p), _) => {
                warn!(host = %self.host, expected = %p.fingerprint, presented = %presented, "host key mismatch, refusing");
                let _ = self.notices.send(KeyNotice::Mismatch {
                    host: self.host.clone(),
                    expected: p.fingerprint.clone(),
                    presented: presented.clone(),
                });
                set(Verdict::Mismatch {
                    expected: p.fingerprint,
                    presented,
                });
                Ok(false)
            }
            (None, HostKeyPolicy::Strict) => {
                set(Verdict::Unknown { presented });
                Ok(false)
            }
            (None, HostKeyPolicy::AcceptNew) => {
                let key = Pinned {
                    algorithm,
                    fingerprint: presented,
                };
                match self.known.pin(&self.host, key.clone()) {
                    Ok(_) => {
                        let _ = self.notices.send(KeyNotice::Pinned {
                            host: self.host.clone(),
                            key,
                        });
                        Ok(true)
                    }
                    Err(e) => {
                        warn!(host = %self.host, error = %e, "cannot pin host key, refusing");
                        Ok(false)
                    }
                }
            }
        }
    }
}

/// One authenticated connection.
struct Conn {
    target: Target,
    handle: client::Handle<Handler>,
}

/// What an exec run reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// Output text.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// Text (complete UTF-8).
        data: String,
    },
    /// A batch step began.
    Step {
        /// 1-based.
        step: u32,
        /// Number of steps.
        total: u32,
    },
}

/// How an exec run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The command exited (see the exit code).
    Exited,
    /// Cancelled by the caller; the process group was killed.
    Cancelled,
    /// The command timeout passed; the process group was killed.
    TimedOut,
}

/// The result of an exec run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// How it ended.
    pub end: End,
    /// Remote exit code.
    pub exit_code: Option<i32>,
    /// Remote signal name if killed by one.
    pub exit_signal: Option<String>,
    /// For batch scripts: the step that failed and its exit code.
    pub failed_step: Option<(u32, i32)>,
    /// Whether the kill confirmed the process group gone (cancel/timeout only).
    pub killed: bool,
}

/// A host's pooled connection; the async lock makes callers wait for one connect.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The pool. Cheap to clone.
#[derive(Clone)]
pub struct SshPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    settings: SshSettings,
    config: Arc<client::Config>,
    key: Arc<PrivateKey>,
    known: Arc<KnownHosts>,
    notices: mpsc::UnboundedSender<KeyNotice>,
    slots: Mutex<HashMap<HostId, Slot>>,
    /// Read-only commands waiting to share a remote exec, per host.
    pending: Mutex<HashMap<HostId, coalesce::Pending>>,
    /// Persistent remote shells for coalesced reads, per host.
    shells: Mutex<HashMap<HostId, shell::ShellSlot>>,
    /// Remote execs started (command channels, not counting kill helpers).
    execs: AtomicU64,
}

/// Loads an OpenSSH private key.
pub fn load_key(path: &Path) -> Result<PrivateKey, ExecError> {
    russh::keys::load_secret_key(path, None).map_err(|e| ExecError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl SshPool {
    /// A pool with a key loaded from `settings.key_path`; key notices go to `notices`.
    pub fn new(
        settings: SshSettings,
        known: Arc<KnownHosts>,
        notices: mpsc::UnboundedSender<KeyNotice>,
    ) -> Result<Self, ExecError> {
        let key = load_key(&settings.key_path)?;
        let config = client::Config {
            preferred: modern_algorithms(),
            keepalive_interval: settings.pool.then_some(settings.keepalive),
            keepalive_max: 3,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        Ok(SshPool {
            inner: Arc::new(PoolInner {
                settings,
                config: Arc::new(config),
                key: Arc::new(key),
                known,
                notices,
                slots: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                shells: Mutex::new(HashMap::new()),
                execs: AtomicU64::new(0),
            }),
        })
    }

    /// The known-hosts store.
    pub fn known_hosts(&self) -> &Arc<KnownHosts> {
        &self.inner.known
    }

    /// How many remote execs this pool has started (one per [`SshPool::exec`], one per shared
    /// batch of [`SshPool::exec_shared`] that ran as its own exec, one per persistent shell
    /// opened; cancel helpers not counted).
    pub fn remote_execs(&self) -> u64 {
        self.inner.execs.load(Ordering::Relaxed)
    }

    /// Drops a pooled connection (host removed or changed) and its persistent shell.
    pub async fn evict(&self, host: &HostId) {
        let shell = self
            .inner
            .shells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
        if let Some(shell) = shell {
            // A batch running in it keeps the slot until it ends; it is gone from the map, so
            // the next batch opens a fresh one.
            if let Ok(mut guard) = shell.try_lock() {
                if let Some(s) = guard.take() {
                    s.retire().await;
                }
            }
        }
        let slot = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
        if let Some(slot) = slot {
            if let Some(conn) = slot.lock().await.take() {
                let _ = conn
                    .handle
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
            }
        }
    }

    async fn connection(&self, target: &Target) -> Result<Arc<Conn>, ExecError> {
        if !self.inner.settings.pool {
            return Ok(Arc::new(self.connect(target).await?));
        }
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(target.host.clone()).or_default().clone()
        };
        // One connect at a time per host; other callers wait and reuse it.
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.handle.is_closed() && conn.target == *target {
                return Ok(conn.clone());
            }
            debug!(host = %target.host, "pooled connection closed or target changed, reconnecting");
        }
        let conn = Arc::new(self.connect(target).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self, target: &Target) -> Result<Conn, ExecError> {
        let secs = self.inner.settings.connect_timeout.as_secs().max(1);
        match tokio::time::timeout(
            self.inner.settings.connect_timeout,
            self.connect_inner(target),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ExecError::Timeout {
                what: format!("connecting to {} ({})", target.host, target.addr()),
                secs,
            }),
        }
    }

    async fn connect_inner(&self, target: &Target) -> Result<Conn, ExecError> {
        let addr = target.addr();
        let verdict = Arc::new(Mutex::new(None));
        let handler = Handler {
            host: target.host.clone(),
            policy: target.policy,
            known: self.inner.known.clone(),
            verdict: verdict.clone(),
            notices: self.inner.notices.clone(),
        };
        let socket = tokio::net::TcpStream::connect((target.address.as_str(), target.port))
            .await
            .map_err(|e| ExecError::Connect {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = socket.set_nodelay(true);
        let connected = client::connect_stream(self.inner.config.clone(), socket, handler).await;
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                let v = verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(match v {
                    Some(Verdict::Mismatch {
                        expected,
                        presented,
                    }) => ExecError::HostKeyMismatch {
                        host: target.host.to_string(),
                        expected,
                        presented,
                    },
                    Some(Verdict::Unknown { presented }) => ExecError::HostKeyUnknown {
                        host: target.host.to_string(),
                        presented,
                    },
                    None => match e {
                        russh::Error::NoCommonAlgo { kind, ours, theirs } => {
                            ExecError::NoCommonAlgorithm {
                                addr,
                                detail: format!(
                                    "{kind:?}: server offers {}; client accepts {}",
                                    theirs.join(","),
                                    ours.join(",")
                                ),
                            }
                        }
                        other => ExecError::Session {
                            addr,
                            reason: other.to_string(),
                        },
                    },
                });
            }
        };
        let user = target.user.clone();
        let hash = if self.inner.key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten()
                .or(Some(HashAlg::Sha256))
        } else {
            None
        };
        let auth = handle
            .authenticate_publickey(
                user.clone(),
                PrivateKeyWithHashAlg::new(self.inner.key.clone(), hash),
            )
            .await
            .map_err(|e| ExecError::Auth {
                user: user.clone(),
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let mut ok = auth.success();
        if !ok {
            if let Some(pw) = self.inner.settings.passwords.get(&target.host) {
                ok = handle
                    .authenticate_password(user.clone(), pw.clone())
                    .await
                    .map_err(|e| ExecError::Auth {
                        user: user.clone(),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?
                    .success();
            }
        }
        if !ok {
            return Err(ExecError::Auth {
                user,
                addr,
                reason: "the server refused the key (and the password, if one is configured)"
                    .into(),
            });
        }
        Ok(Conn {
            target: target.clone(),
            handle,
        })
    }

    /// Opens (or reuses) the connection to `target` without running anything.
    pub async fn check(&self, target: &Target) -> Result<(), ExecError> {
        let conn = self.connection(target).await?;
        if !self.inner.settings.pool {
            let _ = conn
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        Ok(())
    }

    /// Runs `line` on `target`, sending output to `events` as it arrives. `timeout` bounds the
    /// run; `cancel` stops it. Both kill the remote process group (TERM, grace, KILL).
    pub async fn exec(
        &self,
        target: &Target,
        line: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        events: &mpsc::UnboundedSender<ExecEvent>,
    ) -> Result<ExecOutcome, ExecError> {
        let nonce = ulid::Ulid::new().to_string();
        let mut sink = Direct {
            events,
            out: Utf8Stream::default(),
            err: Utf8Stream::default(),
            failed_step: None,
        };
        let ran = self
            .run(target, &nonce, line, timeout, cancel, &mut sink)
            .await?;
        Ok(ExecOutcome {
            end: ran.end,
            exit_code: ran.exit_code,
            exit_signal: ran.exit_signal,
            failed_step: sink.failed_step,
            killed: ran.killed,
        })
    }

    /// Opens a channel (reconnecting a dead pooled connection once), runs the wrapped `line`
    /// with the control-line `nonce`, feeds the output to `sink`, and closes an unpooled
    /// connection afterwards.
    async fn run(
        &self,
        target: &Target,
        nonce: &str,
        line: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        sink: &mut dyn Sink,
    ) -> Result<Ran, ExecError> {
        let mut conn = self.connection(target).await?;
        let channel = match conn.handle.channel_open_session().await {
            Ok(c) => c,
            // A pooled connection can be dead before the handle notices: reconnect once.
            Err(first) if self.inner.settings.pool => {
                debug!(host = %target.host, error = %first, "pooled connection unusable, reconnecting");
                self.drop_slot(&target.host, &conn).await;
                conn = self.connection(target).await?;
                conn.handle
                    .channel_open_session()
                    .await
                    .map_err(|e| ExecError::Session {
                        addr: target.addr(),
                        reason: format!("cannot open a channel: {e}"),
                    })?
            }
            Err(e) => {
                return Err(ExecError::Session {
                    addr: target.addr(),
                    reason: format!("cannot open a channel: {e}"),
                })
            }
        };
        let result = self
            .exec_on(&conn, channel, target, nonce, line, timeout, cancel, sink)
            .await;
        if !self.inner.settings.pool {
            let _ = conn
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        result
    }

    /// Forgets the pooled connection if it is still `conn`.
    async fn drop_slot(&self, host: &HostId, conn: &Arc<Conn>) {
        let slot = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .cloned();
        if let Some(slot) = slot {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *guard = None;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_on(
        &self,
        conn: &Conn,
        mut channel: russh::Channel<client::Msg>,
        target: &Target,
        nonce: &str,
        line: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        sink: &mut dyn Sink,
    ) -> Result<Ran, ExecError> {
        let addr = target.addr();
        let session_err = |reason: String| ExecError::Session {
            addr: addr.clone(),
            reason,
        };
        let prefix = format!("\x1eFLEETBUS-{nonce} ");
        let wrapped = wrap(nonce, line)?;
        channel
            .exec(true, wrapped.into_bytes())
            .await
            .map_err(|e| session_err(format!("exec request failed: {e}")))?;
        self.inner.execs.fetch_add(1, Ordering::Relaxed);
        // Commands get end-of-file on stdin rather than waiting for input that never comes.
        let _ = channel.eof().await;

        let mut filter = ControlFilter::new(&prefix);
        let mut pg: Option<(u32, u32)> = None;
        let mut exit_code = None;
        let mut exit_signal = None;
        let mut end = End::Exited;
        let mut killed = false;
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        let mut stopping = false;
        loop {
            tokio::select! {
                msg = channel.wait() => {
                    let Some(msg) = msg else { break };
                    match msg {
                        ChannelMsg::Data { data } => sink.stdout(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            let (bytes, controls) = filter.push(&data);
                            for c in controls {
                                match c {
                                    Control::Pgid { pgid, pid } => pg = Some((pgid, pid)),
                                    other => sink.control(other),
                                }
                            }
                            sink.stderr(&bytes);
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            exit_code = Some(exit_status as i32);
                        }
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            exit_signal = Some(format!("{signal_name:?}"));
                        }
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                _ = cancel.cancelled(), if !stopping => {
                    stopping = true;
                    end = End::Cancelled;
                    killed = self.kill_group(conn, target, pg).await;
                }
                _ = &mut sleep, if !stopping => {
                    stopping = true;
                    end = End::TimedOut;
                    killed = self.kill_group(conn, target, pg).await;
                }
            }
        }
        sink.stderr(&filter.finish());
        sink.finish();
        if exit_code.is_none() && exit_signal.is_none() && end == End::Exited {
            return Err(session_err(
                "the connection was lost while the command ran (no exit status received)".into(),
            ));
        }
        Ok(Ran {
            end,
            exit_code,
            exit_signal,
            killed,
        })
    }

    /// TERM the group, wait up to the grace period, then KILL; true when the group is gone.
    async fn kill_group(&self, conn: &Conn, target: &Target, pg: Option<(u32, u32)>) -> bool {
        let Some((pgid, pid)) = pg else {
            warn!(host = %target.host, "cancel before the remote process group was known");
            return false;
        };
        // Only a group the wrapper leads is ours to kill; otherwise kill just the wrapper.
        // Liveness is read from /proc, skipping zombies: orphans reparented to an init that does
        // not reap (containers) would otherwise look alive forever.
        let (victim, field) = if pgid == pid {
            (format!("-{pgid}"), 3)
        } else {
            (pid.to_string(), 0)
        };
        let tenths = (self.inner.settings.kill_grace.as_millis() / 100).max(1);
        let script = format!(
            "fb_alive() {{ for fb_s in /proc/[0-9]*/stat; do read -r fb_l < \"$fb_s\" 2>/dev/null || continue; \
             fb_p=${{fb_s#/proc/}}; fb_p=${{fb_p%/stat}}; set -- ${{fb_l##*) }}; [ \"$1\" = Z ] && continue; \
             if [ {field} = 0 ]; then [ \"$fb_p\" = {pid} ] && return 0; else [ \"$3\" = {pgid} ] && return 0; fi; done; return 1; }}; \
             kill -TERM {victim} 2>/dev/null; i=0; while fb_alive && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done; \
             if fb_alive; then kill -KILL {victim} 2>/dev/null; sleep 0.1; fi; \
             if fb_alive; then echo alive; else echo gone; fi"
        );
        let run = async {
            let mut ch = conn.handle.channel_open_session().await.ok()?;
            ch.exec(true, script.into_bytes()).await.ok()?;
            let mut out = Vec::new();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Some(String::from_utf8_lossy(&out).trim() == "gone")
        };
        let limit = self.inner.settings.kill_grace + Duration::from_secs(5);
        match tokio::time::timeout(limit, run).await {
            Ok(Some(gone)) => gone,
            _ => {
                warn!(host = %target.host, pgid, "could not confirm the remote process group is gone");
                false
            }
        }
    }
}

/// How a remote exec ended, before the sink adds what it learned from the output.
#[derive(Debug, Clone)]
struct Ran {
    end: End,
    exit_code: Option<i32>,
    exit_signal: Option<String>,
    killed: bool,
}

/// Where the output of a remote exec goes, as raw bytes in arrival order per stream.
trait Sink: Send {
    /// Stdout bytes.
    fn stdout(&mut self, bytes: &[u8]);
    /// Stderr bytes, with the wrapper's PGID control line already taken out.
    fn stderr(&mut self, bytes: &[u8]);
    /// Batch control lines (`STEP`, `FAIL`).
    fn control(&mut self, control: Control);
    /// The streams ended.
    fn finish(&mut self);
}

/// The sink of a plain exec: decoded text straight to the caller's events.
struct Direct<'a> {
    events: &'a mpsc::UnboundedSender<ExecEvent>,
    out: Utf8Stream,
    err: Utf8Stream,
    failed_step: Option<(u32, i32)>,
}

impl Direct<'_> {
    fn send(&self, stream: OutputStream, data: String) {
        if !data.is_empty() {
            let _ = self.events.send(ExecEvent::Output { stream, data });
        }
    }
}

impl Sink for Direct<'_> {
    fn stdout(&mut self, bytes: &[u8]) {
        let text = self.out.push(bytes);
        self.send(OutputStream::Stdout, text);
    }

    fn stderr(&mut self, bytes: &[u8]) {
        let text = self.err.push(bytes);
        self.send(OutputStream::Stderr, text);
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Step { step, total } => {
                let _ = self.events.send(ExecEvent::Step { step, total });
            }
            Control::Fail { step, code } => self.failed_step = Some((step, code)),
            Control::Pgid { .. } => {}
        }
    }

    fn finish(&mut self) {
        let out = self.out.finish();
        self.send(OutputStream::Stdout, out);
        let err = self.err.finish();
        self.send(OutputStream::Stderr, err);
    }
}

/// The wrapper that reports the process group and then becomes the command.
fn wrap(nonce: &str, line: &str) -> Result<String, ExecError> {
    Ok(format!(
        "read _ _ _ _ fb_pg _ </proc/$$/stat; printf '\\036FLEETBUS-{nonce} PGID %s %s\\n' \"$fb_pg\" \"$$\" >&2; FLEETBUS_TAG=FLEETBUS-{nonce}; export FLEETBUS_TAG; eval {}",
        quote(line)?
    ))
}

/// Builds the remote script of a batch: each line is run with `eval` in one shell (so `cd` and
/// variables persist), preceded by a `STEP i/n` control line; the first failing step reports
/// `FAIL i code` and ends the script with that code. The control tag (with the run's nonce)
/// comes from the wrapper through `FLEETBUS_TAG`, which the script then unsets.
pub fn batch_script(lines: &[String]) -> Result<String, ExecError> {
    let total = lines.len();
    let mut s = String::from("fb_tag=\"$FLEETBUS_TAG\"; unset FLEETBUS_TAG\n");
    for (i, line) in lines.iter().enumerate() {
        let step = i + 1;
        s.push_str(&format!(
            "printf '\\036%s STEP {step}/{total}\\n' \"$fb_tag\" >&2\neval {}\nfb_rc=$?\nif [ $fb_rc -ne 0 ]; then printf '\\036%s FAIL {step} %s\\n' \"$fb_tag\" \"$fb_rc\" >&2; exit $fb_rc; fi\n",
            quote(line)?
        ));
    }
    Ok(s)
}
