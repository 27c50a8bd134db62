//! Reading a JetStream stream in order from a position the caller keeps.
//!
//! A [`StreamReader`] owns one named, ephemeral, ack-less pull consumer that starts at the
//! caller's next sequence. The caller stores how far it got (ingest: in the same redb
//! transaction as the entries) and hands that back on the next start, so nothing depends on
//! a consumer's ack floor: a message delivered to a process that died before committing it is
//! simply read again. The reader checks every delivery against the consumer's own sequence and
//! recreates the consumer from the last message it returned whenever anything is off: a gap
//! (a message the client dropped), a missed heartbeat, a deleted consumer, a server restart.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often an idle server must prove the pull is alive; two misses recreate the consumer.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A pull request's lifetime.
const EXPIRES: Duration = Duration::from_secs(10);
/// How long the server keeps the consumer after its reader went away.
const INACTIVE: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to (re)create the consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a reader is doing, for health reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderStatus {
    /// Not yet consuming.
    Starting,
    /// The consumer exists and the pull is open.
    Consuming,
    /// The consumer is being recreated; the reason is the last error.
    Recovering(String),
}

/// An in-order reader of one stream from a caller-kept sequence (see the module docs).
pub struct StreamReader {
    js: jetstream::Context,
    stream: String,
    name: String,
    batch: usize,
    /// Subjects to read (empty: all of the stream).
    filters: Vec<String>,
    /// Messages left for the consumer when last told (at create, then with each delivery).
    pending: u64,
    /// Stream sequence of the next message to return.
    next_seq: u64,
    /// Consumer sequence the next delivery must carry (1 after each create).
    expected: u64,
    messages: Option<consumer::pull::Stream>,
    status: watch::Sender<ReaderStatus>,
    shutdown: CancellationToken,
}

impl StreamReader {
    /// A reader of `stream` through a consumer called `name` (deleted and recreated at each
    /// start: one reader per name), starting at stream sequence `from_seq` (1: the beginning).
    pub fn new(
        js: jetstream::Context,
        stream: impl Into<String>,
        name: impl Into<String>,
        from_seq: u64,
        shutdown: CancellationToken,
    ) -> Self {
        StreamReader {
            js,
            stream: stream.into(),
            name: name.into(),
            batch: 1000,
            filters: Vec::new(),
            pending: 0,
            next_seq: from_seq.max(1),
            expected: 1,
            messages: None,
            status: watch::channel(ReaderStatus::Starting).0,
            shutdown,
        }
    }

    /// Messages requested per pull (default 1000).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Reads only these subjects (wildcards allowed) instead of the whole stream. The server
    /// filters (nats-server 2.10 and later); the reader also skips anything else it is sent.
    pub fn filter_subjects(
        mut self,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.filters = subjects.into_iter().map(Into::into).collect();
        self
    }

    /// Follows the reader's state.
    pub fn status(&self) -> watch::Receiver<ReaderStatus> {
        self.status.subscribe()
    }

    /// The stream sequence of the next message [`StreamReader::next`] will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next message in stream order; `None` once shutdown is requested.
    pub async fn next(&mut self) -> Option<jetstream::Message> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.messages = Some(self.open().await?);
                continue;
            };
            let next = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                n = messages.next() => n,
            };
            let problem = match next {
                Some(Ok(message)) => match message.info() {
                    Ok(info) if info.consumer_sequence == self.expected => {
                        self.expected += 1;
                        self.pending = info.pending;
                        self.next_seq = info.stream_sequence + 1;
                        // A server before 2.10 ignores several filters and sends everything.
                        if self.wanted(&message.subject) {
                            return Some(message);
                        }
                        continue;
                    }
                    Ok(info) => format!(
                        "delivery {} where {} was due (a message was dropped)",
                        info.consumer_sequence, self.expected
                    ),
                    Err(e) => format!("message without JetStream metadata: {e}"),
                },
                Some(Err(e)) => e.to_string(),
                None => "the pull ended".to_owned(),
            };
            tracing::warn!(stream = %self.stream, consumer = %self.name, next_seq = self.next_seq,
                %problem, "recreating the reader's consumer");
            self.status
                .send_replace(ReaderStatus::Recovering(problem.clone()));
            self.messages = None;
        }
    }

    /// Replays: hands `apply` every message up to the end of the stream as it was when called,
    /// and returns how many there were; `None` once shutdown is requested. Afterwards
    /// [`StreamReader::next`] follows what comes next: the one way to "replay, then follow".
    pub async fn catch_up(&mut self, mut apply: impl FnMut(&jetstream::Message)) -> Option<u64> {
        let until = self.last_sequence().await?;
        let mut replayed = 0;
        loop {
            if self.next_seq > until {
                return Some(replayed);
            }
            if self.messages.is_none() {
                self.messages = Some(self.open().await?);
            }
            // With subject filters the last messages of the stream may not be ours: the
            // consumer's own count says when nothing of ours is left.
            if self.pending == 0 {
                return Some(replayed);
            }
            let message = self.next().await?;
            apply(&message);
            replayed += 1;
        }
    }

    fn wanted(&self, subject: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| subject_matches(f, subject))
    }

    /// The stream's last sequence, retrying until the stream answers or shutdown.
    async fn last_sequence(&mut self) -> Option<u64> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let info = async {
                let mut stream = self
                    .js
                    .get_stream(&self.stream)
                    .await
                    .map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?;
                Ok::<u64, String>(info.state.last_sequence)
            };
            let reason = tokio::select! {
                r = info => match r {
                    Ok(last) => return Some(last),
                    Err(reason) => reason,
                },
                () = self.shutdown.cancelled() => return None,
            };
            tracing::warn!(stream = %self.stream, %reason, "cannot read the stream's state yet; retrying");
            self.status.send_replace(ReaderStatus::Recovering(reason));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Creates the consumer at `next_seq` and opens the pull, retrying until shutdown.
    async fn open(&mut self) -> Option<consumer::pull::Stream> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let shutdown = self.shutdown.clone();
            let attempt = tokio::select! {
                r = self.try_open() => r,
                () = shutdown.cancelled() => return None,
            };
            match attempt {
                Ok(messages) => {
                    tracing::info!(stream = %self.stream, consumer = %self.name,
                        from_seq = self.next_seq, "reading");
                    self.expected = 1;
                    self.status.send_replace(ReaderStatus::Consuming);
                    return Some(messages);
                }
                Err(reason) => {
                    tracing::warn!(stream = %self.stream, consumer = %self.name, %reason,
                        "cannot read the stream yet (run `fleetctl bus apply`?); retrying");
                    self.status.send_replace(ReaderStatus::Recovering(reason));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_open(&mut self) -> Result<consumer::pull::Stream, String> {
        let mut stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))?;
        let state = stream
            .info()
            .await
            .map_err(|e| format!("stream {} info: {e}", self.stream))?
            .state
            .clone();
        if self.next_seq > state.last_sequence.saturating_add(1) {
            // The stream is behind what we already read: it was recreated or its store lost.
            // Read it from its start; the caller deduplicates what it has already seen.
            tracing::error!(stream = %self.stream, next_seq = self.next_seq,
                last_seq = state.last_sequence, "the stream is behind the reader's position; reading it from its start");
            self.next_seq = state.first_sequence.max(1);
        } else if self.next_seq < state.first_sequence {
            tracing::error!(stream = %self.stream, next_seq = self.next_seq,
                first_seq = state.first_sequence, missed = state.first_sequence - self.next_seq,
                "messages the reader never saw have left the stream");
            self.next_seq = state.first_sequence;
        }
        // One reader per name: whatever a previous process left behind goes first.
        // (Usually there is none: not-found is the common answer, and a real failure shows
        // up as the create below refusing the name.)
        if let Err(e) = stream.delete_consumer(&self.name).await {
            tracing::debug!(consumer = %self.name, error = %e, "no previous consumer deleted");
        }
        let created = stream
            .create_consumer(consumer::pull::Config {
                name: Some(self.name.clone()),
                filter_subjects: self.filters.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.next_seq,
                },
                ack_policy: consumer::AckPolicy::None,
                replay_policy: consumer::ReplayPolicy::Instant,
                inactive_threshold: INACTIVE,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create consumer {}: {e}", self.name))?;
        self.pending = created.cached_info().num_pending;
        created
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await
            .map_err(|e| format!("pull {}: {e}", self.name))
    }
}

/// Does `subject` match the NATS subject `pattern` (`*`: one token, `>`: the rest)?
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_nats_wildcards() {
        assert!(subject_matches(
            "fleet.evt.host.>",
            "fleet.evt.host.web-1.registered"
        ));
        assert!(!subject_matches("fleet.evt.host.>", "fleet.evt.host"));
        assert!(subject_matches(
            "fleet.evt.service.*.registered",
            "fleet.evt.service.a:b.registered"
        ));
        assert!(!subject_matches(
            "fleet.evt.service.*.registered",
            "fleet.evt.service.a.b.registered"
        ));
        assert!(!subject_matches(
            "fleet.evt.job.*.task_saved",
            "fleet.evt.job.x.task_saved.y"
        ));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
