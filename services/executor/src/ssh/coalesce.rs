//! Coalescing of read-only commands per host: service status polls (and the status read after a
//! start/stop/restart/reload) that arrive for the same host within a short window run as ONE
//! remote exec instead of one each.
//!
//! Why: every exec makes sshd fork a session process and a shell before the command itself runs;
//! on a small control host that fixed cost, not the command, dominates a fleet-wide status poll
//! (100 statuses on 50 hosts: 169 ms with one exec per service, 2 cores, CPU-bound).
//!
//! The shared exec runs, in the usual wrapper shell, one part per command:
//!
//! ```text
//! (unset fb_tag; eval '<line>')
//! fb_rc=$?
//! printf '\n\036%s:END <n> %s\n' "$fb_tag" "$fb_rc"          # on stdout
//! printf '\n\036%s:END <n> %s\n' "$fb_tag" "$fb_rc" >&2      # and on stderr
//! ```
//!
//! Each part runs in a subshell, so `exit`, `cd`, `set -e` or closed descriptors in one part
//! cannot end or change the others — except a plain external command like the status templates
//! (`eval 'sudo -n /usr/bin/sv status /dir'`, see `is_simple_external`), which cannot do any of
//! that and runs without the extra fork. The end marker carries the run's random nonce (the same tag
//! as the wrapper's control lines, handed over in `FLEETBUS_TAG` and unset before any part runs),
//! so command output cannot forge one by accident; markers are also accepted only in order
//! (`END 1`, then `END 2`, …). The leading newline lets a marker follow output that has none; it
//! belongs to the marker and is removed with it. The streams are cut at the markers and each
//! caller gets only its own stdout, stderr and exit code.
//!
//! A cancel detaches only that caller; when every caller has left, the exec is cancelled like a
//! plain one (process group TERM, grace, KILL). The exec's timeout is the longest of its parts'.
//! Connection and session errors fail every part that has no result yet with that error.
//!
//! With pooled connections (and `coalesce_shell`, the default) a batch does not even need its
//! own exec: the same part script is written to a persistent shell per host (`ssh/shell.rs`),
//! its parts numbered on across batches; the one-off exec above stays for cold (`pool = false`)
//! settings, a shell that is busy, and a shell found dead before the batch ran. Every part reads
//! `/dev/null` (in the persistent shell stdin is the script itself).

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetbus_schemas::events::job::OutputStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::control::{Control, Utf8Stream};
use super::{End, ExecEvent, ExecOutcome, Ran, Sink, SshPool, Target};
use crate::error::ExecError;
use crate::quote::quote;

/// Default for [`super::SshSettings::coalesce_window`]: measured with `ops/bench/fanout` (see
/// the executor README); long enough to catch a burst of status jobs started together, short
/// next to the ~10 ms a single command takes end to end.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(2);

/// Default for [`super::SshSettings::coalesce_max_parts`].
pub const DEFAULT_MAX_PARTS: usize = 32;

/// Ids of batches, so a window timer only flushes the batch it was started for.
static BATCH_IDS: AtomicU64 = AtomicU64::new(1);

/// What the shared exec tells one caller.
pub(super) enum PartMsg {
    Event(ExecEvent),
    Done(Result<ExecOutcome, ExecError>),
}

/// One caller's command in a batch.
struct Part {
    line: String,
    timeout: Option<Duration>,
    tx: mpsc::UnboundedSender<PartMsg>,
}

/// Commands for one host waiting for their window to close.
pub(crate) struct Pending {
    id: u64,
    target: Target,
    parts: Vec<Part>,
}

impl Pending {
    fn new(target: &Target, part: Part) -> Self {
        Pending {
            id: BATCH_IDS.fetch_add(1, Ordering::Relaxed),
            target: target.clone(),
            parts: vec![part],
        }
    }
}

fn detached(end: End) -> ExecOutcome {
    ExecOutcome {
        end,
        exit_code: None,
        exit_signal: None,
        failed_step: None,
        killed: false,
    }
}

impl SshPool {
    /// Like [`SshPool::exec`], for read-only commands only (service status): commands for the
    /// same host issued within `coalesce_window` of each other (at most `coalesce_max_parts`) run
    /// as one remote exec, each in its own subshell, and every caller gets only its own output
    /// events and exit code. A lone command runs after the window, alone.
    ///
    /// `cancel` detaches this caller (returns [`End::Cancelled`], `killed: false`); the others
    /// keep their results, and the remote commands are killed only when every caller has left.
    /// `timeout` ends this caller's wait ([`End::TimedOut`]); the shared exec is bounded by the
    /// longest timeout of its parts and killed when that passes. Never use this for commands
    /// with side effects: a shared run cannot be cancelled for one caller.
    pub async fn exec_shared(
        &self,
        target: &Target,
        line: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        events: &mpsc::UnboundedSender<ExecEvent>,
    ) -> Result<ExecOutcome, ExecError> {
        // A line that cannot be quoted fails here, not inside a batch others share.
        quote(line)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.enqueue(
            target,
            Part {
                line: line.to_string(),
                timeout,
                tx,
            },
        );
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(PartMsg::Event(e)) => {
                        let _ = events.send(e);
                    }
                    Some(PartMsg::Done(result)) => return result,
                    None => {
                        return Err(ExecError::Session {
                            addr: target.addr(),
                            reason: "the shared exec ended without a result for this command".into(),
                        })
                    }
                },
                _ = cancel.cancelled() => return Ok(detached(End::Cancelled)),
                _ = &mut deadline => return Ok(detached(End::TimedOut)),
            }
        }
    }

    /// Adds a part to the host's open batch (or opens one with a window timer); a full batch,
    /// or any batch when the window is zero, runs at once.
    fn enqueue(&self, target: &Target, part: Part) {
        let settings = &self.inner.settings;
        let max = settings.coalesce_max_parts.max(1);
        let window = settings.coalesce_window;
        let mut run_now = Vec::new();
        let mut timer = None;
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.entry(target.host.clone()) {
                Entry::Occupied(mut o) if o.get().target == *target => o.get_mut().parts.push(part),
                Entry::Occupied(mut o) => {
                    // The host's address or login changed: what waits runs now, as planned.
                    let fresh = Pending::new(target, part);
                    timer = Some(fresh.id);
                    run_now.push(std::mem::replace(o.get_mut(), fresh));
                }
                Entry::Vacant(v) => {
                    let fresh = Pending::new(target, part);
                    timer = Some(fresh.id);
                    v.insert(fresh);
                }
            }
            let full = pending
                .get(&target.host)
                .is_some_and(|p| p.parts.len() >= max);
            if window.is_zero() || full {
                run_now.extend(pending.remove(&target.host));
                timer = None;
            }
        }
        for batch in run_now {
            let pool = self.clone();
            tokio::spawn(async move { pool.run_batch(batch).await });
        }
        if let Some(id) = timer {
            let pool = self.clone();
            let host = target.host.clone();
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let batch = {
                    let mut pending = pool.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
                    match pending.get(&host) {
                        Some(p) if p.id == id => pending.remove(&host),
                        _ => None,
                    }
                };
                if let Some(batch) = batch {
                    pool.run_batch(batch).await;
                }
            });
        }
    }

    async fn run_batch(&self, batch: Pending) {
        let Pending { target, parts, .. } = batch;
        // Callers that left while the window was open are not run at all.
        let parts: Vec<Part> = parts.into_iter().filter(|p| !p.tx.is_closed()).collect();
        if parts.is_empty() {
            return;
        }
        let timeout = parts.iter().try_fold(Duration::ZERO, |longest, p| {
            p.timeout.map(|t| longest.max(t))
        });
        let (lines, txs): (Vec<String>, Vec<_>) = parts.into_iter().map(|p| (p.line, p.tx)).unzip();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        // When every caller has left, stop the run the way a cancel stops a plain exec.
        let all_left = CancellationToken::new();
        let watcher = {
            let senders = txs.clone();
            let token = all_left.clone();
            tokio::spawn(async move {
                for s in &senders {
                    s.closed().await;
                }
                token.cancel();
            })
        };
        let n = lines.len();
        let started = Instant::now();
        let txs = if self.inner.settings.pool && self.inner.settings.coalesce_shell {
            match self
                .shell_batch(&target, &lines, timeout, &all_left, txs)
                .await
            {
                Ok(()) => {
                    watcher.abort();
                    return;
                }
                Err(txs) => txs,
            }
        } else {
            txs
        };
        let script = match script(&lines, 0) {
            Ok(body) => format!("{SCRIPT_HEAD}{body}"),
            Err(e) => {
                watcher.abort();
                for tx in &txs {
                    let _ = tx.send(PartMsg::Done(Err(copy(&e))));
                }
                return;
            }
        };
        let nonce = ulid::Ulid::new().to_string();
        let mut demux = Demux::new(&nonce, 0, false, txs);
        let result = self
            .run(&target, &nonce, &script, timeout, &all_left, &mut demux)
            .await;
        watcher.abort();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(ran) => {
                debug!(host = %target.host, parts = n, ms, end = ?ran.end, "shared exec finished")
            }
            Err(e) => warn!(host = %target.host, parts = n, ms, error = %e, "shared exec failed"),
        }
        demux.conclude(result, &target);
    }
}

/// Whether `line` is one external program with plain words, like the status templates
/// (`sudo -n /usr/bin/sv status /dir`, `/usr/bin/systemctl show … -- unit`): the first word is
/// an absolute path or `sudo` (never a builtin, function or assignment) and no byte is special
/// to `sh`. Such a command cannot exit, `cd`, set options or close descriptors of the shared
/// shell, so it runs without a subshell: one fork less per part (~0.4 ms of CPU on the 2-core
/// bench box, 100 parts ≈ 20 ms of a 100 ms fan-out).
fn is_simple_external(line: &str) -> bool {
    let Some(first) = line.split(' ').find(|w| !w.is_empty()) else {
        return false;
    };
    (first.starts_with('/') || first == "sudo")
        && !first.contains('=')
        && line.bytes().all(|b| b == b' ' || crate::quote::is_plain(b))
}

/// What a shell runs once, before any part: takes the run's tag (handed over by the wrapper in
/// `FLEETBUS_TAG`) into a shell variable no command inherits.
pub(super) const SCRIPT_HEAD: &str = "fb_tag=\"$FLEETBUS_TAG\"; unset FLEETBUS_TAG\n";

/// The parts of a batch as shell code, numbered from `base + 1` (run after [`SCRIPT_HEAD`]).
/// Every part reads `/dev/null`: in a persistent shell stdin is the script itself, and a part
/// must never eat the commands after it.
pub(super) fn script(lines: &[&str], base: usize) -> Result<String, ExecError> {
    let mut s = String::new();
    for (i, line) in lines.iter().enumerate() {
        let n = base + i + 1;
        let run = if is_simple_external(line) {
            format!("eval {} </dev/null", quote(line)?)
        } else {
            format!("(unset fb_tag; eval {}) </dev/null", quote(line)?)
        };
        s.push_str(&format!(
            "{run}\nfb_rc=$?\nprintf '\\n\\036%s:END {n} %s\\n' \"$fb_tag\" \"$fb_rc\"\nprintf '\\n\\036%s:END {n} %s\\n' \"$fb_tag\" \"$fb_rc\" >&2\n"
        ));
    }
    Ok(s)
}

/// The same error again, for every part of a failed batch (`ExecError` holds an `io::Error`,
/// which is not `Clone`).
pub(super) fn copy(e: &ExecError) -> ExecError {
    match e {
        ExecError::Invalid(m) => ExecError::Invalid(m.clone()),
        ExecError::Connect { addr, reason } => ExecError::Connect {
            addr: addr.clone(),
            reason: reason.clone(),
        },
        ExecError::HostKeyMismatch {
            host,
            expected,
            presented,
        } => ExecError::HostKeyMismatch {
            host: host.clone(),
            expected: expected.clone(),
            presented: presented.clone(),
        },
        ExecError::HostKeyUnknown { host, presented } => ExecError::HostKeyUnknown {
            host: host.clone(),
            presented: presented.clone(),
        },
        ExecError::NoCommonAlgorithm { addr, detail } => ExecError::NoCommonAlgorithm {
            addr: addr.clone(),
            detail: detail.clone(),
        },
        ExecError::Auth { user, addr, reason } => ExecError::Auth {
            user: user.clone(),
            addr: addr.clone(),
            reason: reason.clone(),
        },
        ExecError::Session { addr, reason } => ExecError::Session {
            addr: addr.clone(),
            reason: reason.clone(),
        },
        ExecError::Timeout { what, secs } => ExecError::Timeout {
            what: what.clone(),
            secs: *secs,
        },
        ExecError::Key { path, reason } => ExecError::Key {
            path: path.clone(),
            reason: reason.clone(),
        },
        ExecError::Io { what, source } => ExecError::Io {
            what: what.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        ExecError::Config(m) => ExecError::Config(m.clone()),
        ExecError::Bus(m) => ExecError::Bus(m.clone()),
        ExecError::Nats {
            context,
            source,
            hint,
        } => ExecError::Bus(format!("{context}{source}{hint}")),
        ExecError::BusIo(e) => ExecError::Bus(e.to_string()),
    }
}

/// A piece of one stream after cutting at the end markers.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// Output of part `.0` (0-based).
    Bytes(usize, Vec<u8>),
    /// Part `.0` ended with exit code `.1`.
    End(usize, i32),
}

/// Cuts one stream at the end markers `\n\x1eFLEETBUS-<nonce>:END <n> <code>\n`. Bytes that
/// could still become a marker are held back until they match or diverge.
#[derive(Debug)]
struct Cutter {
    marker: Vec<u8>,
    held: Vec<u8>,
    /// The whole marker prefix matched; collecting `<n> <code>` up to the newline.
    in_marker: bool,
    /// The part whose output flows now (0-based).
    part: usize,
    /// Markers are numbered from `base + 1` (a persistent shell numbers parts across batches).
    base: usize,
}

/// `<n> <code>` is short; anything longer after a marker prefix is output.
const MARKER_TAIL_MAX: usize = 24;

impl Cutter {
    fn new(nonce: &str, base: usize) -> Self {
        Cutter {
            marker: format!("\n\x1eFLEETBUS-{nonce}:END ").into_bytes(),
            held: Vec::new(),
            in_marker: false,
            part: 0,
            base,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut run = Vec::new();
        for &b in bytes {
            if self.in_marker {
                if b == b'\n' {
                    self.in_marker = false;
                    match parse_end(&self.held[self.marker.len()..]) {
                        Some((n, code)) if n == self.base + self.part + 1 => {
                            if !run.is_empty() {
                                pieces.push(Piece::Bytes(self.part, std::mem::take(&mut run)));
                            }
                            pieces.push(Piece::End(self.part, code));
                            self.part += 1;
                            self.held.clear();
                        }
                        _ => {
                            // Not the marker expected next: output after all. Its newline may
                            // start the real one.
                            run.append(&mut self.held);
                            self.held.push(b'\n');
                        }
                    }
                } else if self.held.len() >= self.marker.len() + MARKER_TAIL_MAX {
                    self.in_marker = false;
                    run.append(&mut self.held);
                    run.push(b);
                } else {
                    self.held.push(b);
                }
                continue;
            }
            if !self.held.is_empty() || b == b'\n' {
                self.held.push(b);
                let n = self.held.len();
                if self.marker[..n] == self.held[..] {
                    if n == self.marker.len() {
                        self.in_marker = true;
                    }
                    continue;
                }
                // Diverged. Only a newline can start a marker, and everything held before this
                // byte matched the marker, whose only newline is its first byte.
                let restart = b == b'\n';
                if restart {
                    self.held.pop();
                }
                run.append(&mut self.held);
                if restart {
                    self.held.push(b'\n');
                }
                continue;
            }
            run.push(b);
        }
        if !run.is_empty() {
            pieces.push(Piece::Bytes(self.part, run));
        }
        pieces
    }

    /// Whatever is held at the end of the stream is output of the current part.
    fn finish(&mut self) -> Vec<Piece> {
        self.in_marker = false;
        let rest = std::mem::take(&mut self.held);
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Bytes(self.part, rest)]
        }
    }
}

fn parse_end(tail: &[u8]) -> Option<(usize, i32)> {
    let text = std::str::from_utf8(tail).ok()?;
    let (n, code) = text.split_once(' ')?;
    Some((n.parse().ok()?, code.parse().ok()?))
}

/// One part while the shared exec runs.
pub(super) struct PartRun {
    tx: mpsc::UnboundedSender<PartMsg>,
    out: Utf8Stream,
    err: Utf8Stream,
    out_end: Option<i32>,
    err_end: Option<i32>,
    done: bool,
}

impl PartRun {
    fn send(&self, stream: OutputStream, data: String) {
        if !data.is_empty() {
            let _ = self
                .tx
                .send(PartMsg::Event(ExecEvent::Output { stream, data }));
        }
    }

    fn flush(&mut self) {
        let out = self.out.finish();
        self.send(OutputStream::Stdout, out);
        let err = self.err.finish();
        self.send(OutputStream::Stderr, err);
    }
}

/// The sink of a shared exec: cuts both streams per part and sends each part its own output
/// and, once both of its markers are in, its exit code.
pub(super) struct Demux {
    parts: Vec<PartRun>,
    out: Cutter,
    err: Cutter,
    /// Keep the last result back until [`Demux::release`]: a persistent shell must be free
    /// again before its last caller can send the next read (which would find it busy).
    hold_last: bool,
    held: Option<(mpsc::UnboundedSender<PartMsg>, ExecOutcome)>,
}

impl Demux {
    pub(super) fn new(
        nonce: &str,
        base: usize,
        hold_last: bool,
        txs: Vec<mpsc::UnboundedSender<PartMsg>>,
    ) -> Self {
        Demux {
            parts: txs
                .into_iter()
                .map(|tx| PartRun {
                    tx,
                    out: Utf8Stream::default(),
                    err: Utf8Stream::default(),
                    out_end: None,
                    err_end: None,
                    done: false,
                })
                .collect(),
            out: Cutter::new(nonce, base),
            err: Cutter::new(nonce, base),
            hold_last,
            held: None,
        }
    }

    /// Every part has both of its end markers (or another result).
    pub(super) fn complete(&self) -> bool {
        self.parts.iter().all(|p| p.done)
    }

    /// The callers back, for a batch that never ran (to run it another way).
    pub(super) fn into_senders(self) -> Vec<mpsc::UnboundedSender<PartMsg>> {
        self.parts.into_iter().map(|p| p.tx).collect()
    }

    fn apply(&mut self, stream: OutputStream, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Bytes(i, bytes) => {
                    // Bytes after the last part's marker cannot come from a part; drop them.
                    let Some(p) = self.parts.get_mut(i) else {
                        continue;
                    };
                    let text = match stream {
                        OutputStream::Stdout => p.out.push(&bytes),
                        OutputStream::Stderr => p.err.push(&bytes),
                    };
                    p.send(stream, text);
                }
                Piece::End(i, code) => {
                    let Some(p) = self.parts.get_mut(i) else {
                        continue;
                    };
                    match stream {
                        OutputStream::Stdout => {
                            let text = p.out.finish();
                            p.send(stream, text);
                            p.out_end = Some(code);
                        }
                        OutputStream::Stderr => {
                            let text = p.err.finish();
                            p.send(stream, text);
                            p.err_end = Some(code);
                        }
                    }
                    if let (Some(code), Some(_), false) = (p.out_end, p.err_end, p.done) {
                        p.done = true;
                        let outcome = ExecOutcome {
                            end: End::Exited,
                            exit_code: Some(code),
                            exit_signal: None,
                            failed_step: None,
                            killed: false,
                        };
                        let tx = p.tx.clone();
                        if self.hold_last && self.parts.iter().all(|p| p.done) {
                            self.held = Some((tx, outcome));
                        } else {
                            let _ = tx.send(PartMsg::Done(Ok(outcome)));
                        }
                    }
                }
            }
        }
    }

    /// Answers every part that has no result yet from how the exec ended.
    /// Sends the result held back by `hold_last`.
    pub(super) fn release(&mut self) {
        if let Some((tx, outcome)) = self.held.take() {
            let _ = tx.send(PartMsg::Done(Ok(outcome)));
        }
    }

    pub(super) fn conclude(mut self, result: Result<Ran, ExecError>, target: &Target) {
        self.release();
        self.finish();
        let mut first = true;
        for p in self.parts.iter_mut().filter(|p| !p.done) {
            let r = match &result {
                Err(e) => Err(copy(e)),
                // The shell ended inside this part (it killed the shell, or was killed): the
                // exec's status is this part's.
                Ok(ran) if ran.end == End::Exited && first => Ok(ExecOutcome {
                    end: End::Exited,
                    exit_code: ran.exit_code,
                    exit_signal: ran.exit_signal.clone(),
                    failed_step: None,
                    killed: false,
                }),
                Ok(ran) if ran.end == End::Exited => Err(ExecError::Session {
                    addr: target.addr(),
                    reason: "the shared exec ended before this command ran (a command before it ended the remote shell)".into(),
                }),
                Ok(ran) => Ok(ExecOutcome {
                    end: ran.end,
                    exit_code: None,
                    exit_signal: None,
                    failed_step: None,
                    killed: ran.killed,
                }),
            };
            first = false;
            p.done = true;
            let _ = p.tx.send(PartMsg::Done(r));
        }
    }
}

impl Sink for Demux {
    fn stdout(&mut self, bytes: &[u8]) {
        let pieces = self.out.push(bytes);
        self.apply(OutputStream::Stdout, pieces);
    }

    fn stderr(&mut self, bytes: &[u8]) {
        let pieces = self.err.push(bytes);
        self.apply(OutputStream::Stderr, pieces);
    }

    /// Parts are plain commands; a batch control line (which needs the nonce) means nothing here.
    fn control(&mut self, _control: Control) {}

    fn finish(&mut self) {
        let out = self.out.finish();
        self.apply(OutputStream::Stdout, out);
        let err = self.err.finish();
        self.apply(OutputStream::Stderr, err);
        for p in self.parts.iter_mut().filter(|p| !p.done) {
            p.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(nonce: &str, input: &[u8], chunk: usize) -> Vec<(usize, Vec<u8>, Option<i32>)> {
        let mut c = Cutter::new(nonce, 0);
        let mut pieces = Vec::new();
        for piece in input.chunks(chunk) {
            pieces.extend(c.push(piece));
        }
        pieces.extend(c.finish());
        // Merge into per-part (bytes, exit code).
        let mut parts: Vec<(usize, Vec<u8>, Option<i32>)> = Vec::new();
        for p in pieces {
            let (i, bytes, code) = match p {
                Piece::Bytes(i, b) => (i, b, None),
                Piece::End(i, code) => (i, Vec::new(), Some(code)),
            };
            while parts.len() <= i {
                parts.push((parts.len(), Vec::new(), None));
            }
            parts[i].1.extend(bytes);
            if code.is_some() {
                parts[i].2 = code;
            }
        }
        parts
    }

    #[test]
    fn streams_are_cut_at_markers_in_any_chunking() {
        let m = |n: u32, c: i32| format!("\n\x1eFLEETBUS-N1:END {n} {c}\n");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(
            format!("one\n{}no newline{}{}", m(1, 0), m(2, 3), m(3, 0)).as_bytes(),
        );
        bytes.extend_from_slice(
            b"\n\n\x1eFLEETBUS-N2:END 4 0\n\x1eFLEETBUS-N1:END 9 0\n\x01\x02\xff",
        );
        bytes.extend_from_slice(m(4, 1).as_bytes());
        bytes.extend_from_slice(b"\xfe");
        for chunk in [1, 2, 3, 7, 1000] {
            let parts = cut("N1", &bytes, chunk);
            assert_eq!(parts.len(), 5, "chunk {chunk}: {parts:?}");
            assert_eq!(parts[0], (0, b"one\n".to_vec(), Some(0)));
            assert_eq!(parts[1], (1, b"no newline".to_vec(), Some(3)));
            // An empty part.
            assert_eq!(parts[2], (2, Vec::new(), Some(0)));
            // A forged marker (other nonce) and one out of order (right nonce, wrong number)
            // stay output.
            assert_eq!(
                parts[3],
                (
                    3,
                    b"\n\n\x1eFLEETBUS-N2:END 4 0\n\x1eFLEETBUS-N1:END 9 0\n\x01\x02\xff".to_vec(),
                    Some(1)
                ),
                "chunk {chunk}"
            );
            // Trailing bytes after the last marker are kept as the next (nonexistent) part's.
            assert_eq!(parts[4], (4, b"\xfe".to_vec(), None));
        }
    }

    #[test]
    fn a_marker_for_a_later_part_is_output_and_the_real_one_still_cuts() {
        let input = b"x\n\x1eFLEETBUS-N:END 2 0\n\x1eFLEETBUS-N:END 1 5\n";
        let parts = cut("N", input, 1);
        assert_eq!(
            parts,
            vec![(0, b"x\n\x1eFLEETBUS-N:END 2 0".to_vec(), Some(5))]
        );
        // A marker prefix followed by a long line is output.
        let long = format!("\n\x1eFLEETBUS-N:END {}\n", "9".repeat(100));
        let parts = cut("N", long.as_bytes(), 5);
        assert_eq!(parts, vec![(0, long.into_bytes(), None)]);
    }

    #[test]
    fn the_script_quotes_every_line_reads_dev_null_and_refuses_nul() {
        // The parts of a persistent shell's later batch are numbered on from `base`.
        let s = script(
            &[
                "echo 'a b'",
                "$(touch /tmp/pwned)",
                "sudo -n /usr/bin/sv status /srv/h/sv/web",
            ],
            4,
        )
        .unwrap();
        assert!(
            s.starts_with("(unset fb_tag; eval 'echo '\\''a b'\\''') </dev/null\n"),
            "{s}"
        );
        assert!(
            s.contains("\n(unset fb_tag; eval '$(touch /tmp/pwned)') </dev/null\n"),
            "{s}"
        );
        assert!(
            s.contains("\neval 'sudo -n /usr/bin/sv status /srv/h/sv/web' </dev/null\n"),
            "{s}"
        );
        assert!(s.contains("END 5 %s") && s.contains("END 7 %s"), "{s}");
        assert!(!s.contains("END 4 ") && !s.contains("END 8 "), "{s}");
        assert!(script(&["a\0b"], 0).is_err());
    }

    #[test]
    fn only_plain_external_commands_skip_the_subshell() {
        for simple in [
            "sudo -n /usr/bin/sv status /var/lib/fleet/h2/sv/web",
            "/usr/bin/systemctl show --timestamp=unix --property=LoadState,SubState -- a@b.service",
            "/usr/bin/sv status /x",
        ] {
            assert!(is_simple_external(simple), "{simple}");
        }
        for shell in [
            "exit 3",
            "cd /",
            "set -e",
            "sv status /x",
            "A=1 /bin/true",
            "/bin/echo $HOME",
            "/bin/true; exit 3",
            "/bin/true && exit",
            "/bin/echo *",
            "/bin/true >&-",
            "/bin/true\nexit 3",
            "sudo -n /usr/bin/sv status '/x y'",
            "",
            "   ",
        ] {
            assert!(!is_simple_external(shell), "{shell}");
        }
    }
}
