//! A persistent remote shell per pooled host connection for coalesced reads: one long-lived
//! session channel runs the usual wrapper, which then becomes `/bin/sh -s` reading commands from
//! the channel's stdin. Each batch of [`super::coalesce`] is written to that stdin as the same
//! part script a one-off exec would run; the batch ends when the last part's nonce-tagged end
//! marker is in on both streams. So a warm status poll costs no sshd session fork and no login
//! shell per batch, only the parts themselves.
//!
//! Why the stream stays in step: parts are numbered across the shell's whole life (`END 7`,
//! `END 8`, … for its second batch), so a marker left over from an earlier batch or forged by
//! output never matches the one expected next; every part reads `/dev/null`, so none can eat
//! the script after it; and the shell leaves no byte after the last marker of a batch.
//!
//! One batch at a time per shell. A batch that finds the shell busy runs as a one-off exec
//! instead of queueing behind it: a status read that hangs must not stall every later read of
//! its host. A shell whose stream position is unknown is never used again: when it ends, errs
//! or closes, the batch either runs as a one-off exec (nothing of it was seen yet) or is
//! answered the way a one-off exec that ended there would be; a batch that times out or whose
//! callers all left kills the shell's process group (TERM, grace, KILL) and closes its channel.
//! The next batch opens a fresh shell.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::{client, ChannelMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::coalesce::{copy, script, Demux, PartMsg, SCRIPT_HEAD};
use super::control::{Control, ControlFilter};
use super::{wrap, Conn, End, Ran, Sink, SshPool, Target};
use crate::error::ExecError;

/// One host's persistent shell.
pub(super) struct Shell {
    /// The pooled connection the channel lives on.
    conn: Arc<Conn>,
    channel: russh::Channel<client::Msg>,
    nonce: String,
    /// Takes the wrapper's PGID line out of stderr (it arrives before the first batch's output).
    filter: ControlFilter,
    /// The shell's process group and pid.
    pg: Option<(u32, u32)>,
    /// Parts run so far; the next batch's parts are numbered from `seq + 1`.
    seq: usize,
}

/// A host's shell slot; the lock is held for the whole batch.
pub(super) type ShellSlot = Arc<tokio::sync::Mutex<Option<Shell>>>;

impl Shell {
    /// Closes the channel; sshd then hangs up the shell (and with it what it runs).
    pub(super) async fn retire(self) {
        let _ = self.channel.close().await;
    }
}

/// How a batch in a shell went.
enum Outcome {
    /// Every part has its result; the shell is ready for the next batch.
    Complete,
    /// The shell ended, or the batch was abandoned; the shell must not be used again.
    Ended { ran: Result<Ran, ExecError> },
    /// Nothing of the batch was seen before the shell turned out to be unusable.
    NotRun,
}

impl SshPool {
    /// Runs a batch in the host's persistent shell. `Err` hands the callers back when the batch
    /// did not run there (shell busy or unusable before any of it was seen): run it as a one-off
    /// exec.
    pub(super) async fn shell_batch(
        &self,
        target: &Target,
        lines: &[&str],
        timeout: Option<Duration>,
        all_left: &CancellationToken,
        txs: Vec<mpsc::UnboundedSender<PartMsg>>,
    ) -> Result<(), Vec<mpsc::UnboundedSender<PartMsg>>> {
        let slot = {
            let mut shells = self.inner.shells.lock().unwrap_or_else(|p| p.into_inner());
            shells.entry(target.host.clone()).or_default().clone()
        };
        let Ok(mut guard) = slot.try_lock() else {
            debug!(host = %target.host, "remote shell busy, running the batch as its own exec");
            return Err(txs);
        };
        let conn = match self.connection(target).await {
            Ok(c) => c,
            Err(e) => {
                for tx in &txs {
                    let _ = tx.send(PartMsg::Done(Err(copy(&e))));
                }
                return Ok(());
            }
        };
        if let Some(old) =
            guard.take_if(|s| !Arc::ptr_eq(&s.conn, &conn) || conn.handle.is_closed())
        {
            old.retire().await;
        }
        if guard.is_none() {
            match self.open_shell(conn, target).await {
                Ok(shell) => *guard = Some(shell),
                Err(e) => {
                    debug!(host = %target.host, error = %e, "cannot open a remote shell, running the batch as its own exec");
                    return Err(txs);
                }
            }
        }
        let Some(shell) = guard.as_mut() else {
            return Err(txs);
        };
        let body = match script(lines, shell.seq) {
            Ok(b) => b,
            Err(e) => {
                for tx in &txs {
                    let _ = tx.send(PartMsg::Done(Err(copy(&e))));
                }
                return Ok(());
            }
        };
        let started = Instant::now();
        let mut demux = Demux::new(&shell.nonce, shell.seq, true, txs);
        let outcome = self
            .run_in_shell(shell, target, body, timeout, all_left, &mut demux)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Outcome::Complete => {
                shell.seq += lines.len();
                drop(guard);
                demux.release();
                debug!(host = %target.host, parts = lines.len(), ms, "batch finished in the remote shell");
                Ok(())
            }
            Outcome::Ended { ran } => {
                if let Some(s) = guard.take() {
                    s.retire().await;
                }
                match &ran {
                    Ok(r) => {
                        debug!(host = %target.host, parts = lines.len(), ms, end = ?r.end, "remote shell ended during a batch")
                    }
                    Err(e) => {
                        warn!(host = %target.host, parts = lines.len(), ms, error = %e, "remote shell failed during a batch")
                    }
                }
                demux.conclude(ran, target);
                Ok(())
            }
            Outcome::NotRun => {
                if let Some(s) = guard.take() {
                    s.retire().await;
                }
                debug!(host = %target.host, "remote shell gone before the batch ran, running it as its own exec");
                Err(demux.into_senders())
            }
        }
    }

    /// Starts the wrapper on a new channel and makes it a shell reading stdin (same pid, so the
    /// PGID it reports is the shell's group).
    async fn open_shell(&self, conn: Arc<Conn>, target: &Target) -> Result<Shell, ExecError> {
        let session_err = |reason: String| ExecError::Session {
            addr: target.addr(),
            reason,
        };
        let channel = conn
            .handle
            .channel_open_session()
            .await
            .map_err(|e| session_err(format!("cannot open a channel: {e}")))?;
        let nonce = ulid::Ulid::new().to_string();
        let wrapped = wrap(&nonce, "exec /bin/sh -s")?;
        channel
            .exec(true, wrapped.into_bytes())
            .await
            .map_err(|e| session_err(format!("exec request failed: {e}")))?;
        self.inner.execs.fetch_add(1, Ordering::Relaxed);
        channel
            .data(SCRIPT_HEAD.as_bytes())
            .await
            .map_err(|e| session_err(format!("cannot write to the remote shell: {e}")))?;
        debug!(host = %target.host, "remote shell opened");
        Ok(Shell {
            conn,
            channel,
            filter: ControlFilter::new(&format!("\x1eFLEETBUS-{nonce} ")),
            nonce,
            pg: None,
            seq: 0,
        })
    }

    /// Every caller left (`Cancelled`) or the deadline passed (`TimedOut`): kills the shell's
    /// running process group.
    async fn abandon(&self, shell: &Shell, target: &Target, end: End) -> Outcome {
        let killed = self.kill_group(&shell.conn, target, shell.pg).await;
        Outcome::Ended {
            ran: Ok(stopped(end, killed)),
        }
    }

    async fn run_in_shell(
        &self,
        shell: &mut Shell,
        target: &Target,
        body: String,
        timeout: Option<Duration>,
        all_left: &CancellationToken,
        demux: &mut Demux,
    ) -> Outcome {
        // What arrived while the shell was idle: only stray output of background commands of
        // earlier parts, or the news that the shell is gone.
        loop {
            tokio::select! {
                biased;
                msg = shell.channel.wait() => match msg {
                    Some(ChannelMsg::Data { .. }) => {
                        debug!(host = %target.host, "output between batches dropped");
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        let (_, controls) = shell.filter.push(&data);
                        note_pgid(shell, controls);
                    }
                    Some(ChannelMsg::WindowAdjusted { .. }) | Some(ChannelMsg::Success) => {}
                    _ => return Outcome::NotRun,
                },
                _ = std::future::ready(()) => break,
            }
        }
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        // The write waits for the channel's window, which a wedged shell never reopens.
        tokio::select! {
            written = shell.channel.data(body.as_bytes()) => {
                if written.is_err() {
                    return Outcome::NotRun;
                }
            }
            _ = all_left.cancelled() => return self.abandon(shell, target, End::Cancelled).await,
            _ = &mut sleep => return self.abandon(shell, target, End::TimedOut).await,
        }
        let mut seen = false;
        let mut exit_code = None;
        let mut exit_signal = None;
        loop {
            tokio::select! {
                msg = shell.channel.wait() => {
                    let Some(msg) = msg else { break };
                    match msg {
                        ChannelMsg::Data { data } => {
                            seen = true;
                            demux.stdout(&data);
                        }
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            let (bytes, controls) = shell.filter.push(&data);
                            seen |= !bytes.is_empty();
                            note_pgid(shell, controls);
                            demux.stderr(&bytes);
                        }
                        ChannelMsg::ExitStatus { exit_status } => exit_code = Some(exit_status as i32),
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            exit_signal = Some(format!("{signal_name:?}"));
                        }
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                    if demux.complete() {
                        return Outcome::Complete;
                    }
                }
                _ = all_left.cancelled() => return self.abandon(shell, target, End::Cancelled).await,
                _ = &mut sleep => return self.abandon(shell, target, End::TimedOut).await,
            }
        }
        // The channel closed: the shell ended (a part killed it, or it was killed) or the
        // connection dropped.
        if !seen {
            return Outcome::NotRun;
        }
        demux.stderr(&shell.filter.finish());
        demux.finish();
        let ran = if exit_code.is_none() && exit_signal.is_none() {
            Err(ExecError::Session {
                addr: target.addr(),
                reason: "the connection was lost while the command ran (no exit status received)"
                    .into(),
            })
        } else {
            Ok(Ran {
                end: End::Exited,
                exit_code,
                exit_signal,
                killed: false,
            })
        };
        Outcome::Ended { ran }
    }
}

fn note_pgid(shell: &mut Shell, controls: Vec<Control>) {
    for c in controls {
        if let Control::Pgid { pgid, pid } = c {
            shell.pg = Some((pgid, pid));
        }
    }
}

fn stopped(end: End, killed: bool) -> Ran {
    Ran {
        end,
        exit_code: None,
        exit_signal: None,
        killed,
    }
}
