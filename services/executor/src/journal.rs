//! A small local journal of jobs (JSON lines): what was scheduled, started and finished. It is
//! a cache of the job events this executor published — what it needs after a crash to tell which
//! jobs were cut off (`restarted`) and to re-run idempotent ones.
//!
//! Writes go to a dedicated thread through a channel (no file I/O on the async runtime). They
//! are not fsynced: the journal must survive the executor being killed, not the machine.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use fleetbus_schemas::events::job::{JobRequest, RunType};
use fleetbus_schemas::{Actor, CommandId, HostId, JobId};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::ExecError;

/// What a job is, as scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    /// The job.
    pub job: JobId,
    /// The command that caused it.
    pub causation: CommandId,
    /// Who sent the command.
    pub actor: Actor,
    /// The host.
    pub host: HostId,
    /// What it runs.
    pub request: JobRequest,
    /// The kind of work.
    pub run_type: RunType,
    /// Summary.
    pub summary: String,
    /// Safe to re-run.
    pub idempotent: bool,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Entry {
    /// Queued.
    Scheduled(JobRecord),
    /// Began running.
    Started {
        /// The job.
        job: JobId,
    },
    /// Ended (any way).
    Finished {
        /// The job.
        job: JobId,
    },
}

/// A job the journal says never finished.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unfinished {
    /// What it was.
    pub record: JobRecord,
    /// Whether it had started.
    pub started: bool,
}

/// The journal writer.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    tx: mpsc::Sender<Entry>,
}

/// Reads `path` and returns the unfinished jobs in scheduling order, then rewrites the file with
/// only those (compaction).
pub(crate) fn recover(path: &Path) -> Result<Vec<Unfinished>, ExecError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ExecError::io(format!("reading {}", path.display()))(e)),
    };
    let mut jobs: BTreeMap<JobId, Unfinished> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (killed mid-write) is skipped, not fatal.
        let entry: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                warn!(line = n + 1, error = %e, "skipping unreadable job journal line");
                continue;
            }
        };
        match entry {
            Entry::Scheduled(record) => {
                jobs.insert(
                    record.job,
                    Unfinished {
                        record,
                        started: false,
                    },
                );
            }
            Entry::Started { job } => {
                if let Some(u) = jobs.get_mut(&job) {
                    u.started = true;
                }
            }
            Entry::Finished { job } => {
                jobs.remove(&job);
            }
        }
    }
    let unfinished: Vec<Unfinished> = jobs.into_values().collect();
    let mut compact = String::new();
    for u in &unfinished {
        compact.push_str(&line(&Entry::Scheduled(u.record.clone())));
        if u.started {
            compact.push_str(&line(&Entry::Started { job: u.record.job }));
        }
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, compact).map_err(ExecError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(ExecError::io(format!("renaming {}", path.display())))?;
    Ok(unfinished)
}

fn line(e: &Entry) -> String {
    let mut s = serde_json::to_string(e).unwrap_or_default();
    s.push('\n');
    s
}

impl Journal {
    /// Opens `path` for appending, with a writer thread.
    pub(crate) fn open(path: PathBuf) -> Result<Journal, ExecError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(ExecError::io(format!("opening {}", path.display())))?;
        let (tx, rx) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("job-journal".into())
            .spawn(move || {
                for entry in rx {
                    if let Err(e) = file.write_all(line(&entry).as_bytes()) {
                        warn!(path = %path.display(), error = %e, "cannot write job journal");
                    }
                }
            })
            .map_err(ExecError::io("starting the journal thread"))?;
        Ok(Journal { tx })
    }

    /// Appends an entry (asynchronously, in order).
    pub(crate) fn write(&self, entry: Entry) {
        let _ = self.tx.send(entry);
    }
}
