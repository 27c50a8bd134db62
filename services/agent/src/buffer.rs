//! The on-disk buffer of reports that could not be delivered yet.
//!
//! One file per report, named `<sequence>-<event id>.json`: the zero-padded sequence gives the
//! queue order (ULIDs made in the same millisecond do not sort by creation), and a crash at any
//! point leaves only whole files (each is written to a temp name, synced, then renamed). The buffer is bounded in bytes; when a new
//! report does not fit, the oldest are dropped first and counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use fleetbus_schemas::EventId;

use crate::wire::ReportPush;
use crate::AgentError;

/// A bounded, ordered, crash-safe queue of reports on disk.
#[derive(Debug)]
pub struct Buffer {
    dir: PathBuf,
    max_bytes: u64,
    /// (sequence, id, size), oldest first.
    entries: VecDeque<(u64, EventId, u64)>,
    next_seq: u64,
    bytes: u64,
    dropped: u64,
}

/// `<seq>-<id>.json` → (seq, id).
fn parse_name(name: &str) -> Option<(u64, EventId)> {
    let (seq, id) = name.strip_suffix(".json")?.split_once('-')?;
    Some((seq.parse().ok()?, id.parse().ok()?))
}

fn io(path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Buffer {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Buffer {
    /// Opens (creating) the buffer directory and indexes what an earlier run left there.
    pub async fn open(dir: &Path, max_bytes: u64) -> Result<Buffer, AgentError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io(dir, e))?;
        let mut found = Vec::new();
        let mut rd = tokio::fs::read_dir(dir).await.map_err(|e| io(dir, e))?;
        while let Some(entry) = rd.next_entry().await.map_err(|e| io(dir, e))? {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((seq, id)) = parse_name(&name) {
                let size = entry.metadata().await.map_err(|e| io(&path, e))?.len();
                found.push((seq, id, size));
            } else if name.ends_with(".tmp") {
                // A write interrupted by a crash; the report it held was never acknowledged
                // as buffered.
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        found.sort_by_key(|(seq, _, _)| *seq);
        let bytes = found.iter().map(|(_, _, s)| s).sum();
        let next_seq = found.last().map_or(0, |(seq, _, _)| seq + 1);
        let mut buffer = Buffer {
            dir: dir.to_owned(),
            max_bytes,
            entries: found.into(),
            next_seq,
            bytes,
            dropped: 0,
        };
        // The bound may have shrunk since the last run.
        buffer.make_room(0).await?;
        Ok(buffer)
    }

    fn path_of(&self, seq: u64, id: EventId) -> PathBuf {
        self.dir.join(format!("{seq:020}-{id}.json"))
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reports dropped to respect the bound since the buffer was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    async fn drop_oldest(&mut self) -> Result<(), AgentError> {
        if let Some((seq, id, size)) = self.entries.pop_front() {
            let path = self.path_of(seq, id);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
            self.bytes = self.bytes.saturating_sub(size);
            self.dropped += 1;
            tracing::warn!(report_id = %id, dropped_total = self.dropped, buffer_bytes = self.bytes,
                max_bytes = self.max_bytes, "buffer full, dropped the oldest report");
        }
        Ok(())
    }

    async fn make_room(&mut self, incoming: u64) -> Result<(), AgentError> {
        while !self.entries.is_empty() && self.bytes + incoming > self.max_bytes {
            self.drop_oldest().await?;
        }
        Ok(())
    }

    /// Appends a report, dropping the oldest ones if it does not fit. A report larger than the
    /// whole bound is itself dropped (and counted).
    pub async fn push(&mut self, item: &ReportPush) -> Result<(), AgentError> {
        let text = serde_json::to_vec(item).map_err(|e| AgentError::Buffer {
            path: self.dir.clone(),
            reason: format!("cannot encode report: {e}"),
        })?;
        let size = text.len() as u64;
        if size > self.max_bytes {
            self.dropped += 1;
            tracing::warn!(report_id = %item.id, size, max_bytes = self.max_bytes,
                dropped_total = self.dropped, "report larger than the whole buffer, dropped");
            return Ok(());
        }
        self.make_room(size).await?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.path_of(seq, item.id);
        let tmp = self.dir.join(format!("{seq:020}-{}.tmp", item.id));
        write_synced(&tmp, &text).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io(&path, e))?;
        sync_dir(&self.dir).await?;
        self.entries.push_back((seq, item.id, size));
        self.bytes += size;
        Ok(())
    }

    /// The oldest `n` reports, in order. A file that cannot be read back (disk corruption,
    /// someone editing it) is removed and counted as dropped rather than blocking the queue.
    pub async fn peek(&mut self, n: usize) -> Result<Vec<ReportPush>, AgentError> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for &(seq, id, _) in self.entries.iter().take(n) {
            let path = self.path_of(seq, id);
            let parsed = match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    serde_json::from_slice::<ReportPush>(&bytes).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(item) => out.push(item),
                Err(reason) => {
                    tracing::error!(path = %path.display(), %reason, "unreadable buffered report, dropping it");
                    bad.push(id);
                }
            }
        }
        if !bad.is_empty() {
            self.dropped += bad.len() as u64;
            self.remove(&bad).await?;
        }
        Ok(out)
    }

    /// Removes delivered (or rejected) reports.
    pub async fn remove(&mut self, ids: &[EventId]) -> Result<(), AgentError> {
        for id in ids {
            let Some(pos) = self.entries.iter().position(|(_, e, _)| e == id) else {
                continue;
            };
            let (seq, _, size) = self.entries[pos];
            let path = self.path_of(seq, *id);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
            self.entries.remove(pos);
            self.bytes = self.bytes.saturating_sub(size);
        }
        Ok(())
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| io(path, e))?;
    f.write_all(bytes).await.map_err(|e| io(path, e))?;
    f.sync_all().await.map_err(|e| io(path, e))
}

async fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    let d = tokio::fs::File::open(dir).await.map_err(|e| io(dir, e))?;
    d.sync_all().await.map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::events::agent::{AgentReport, Resources};

    fn report(n: u32) -> ReportPush {
        ReportPush {
            id: EventId::new(),
            time: chrono::Utc::now(),
            report: AgentReport {
                agent: "a1".parse().unwrap(),
                host: "h1".parse().unwrap(),
                agent_version: format!("v{n}"),
                resources: Resources::default(),
                services: vec![],
                config_version: None,
                config_hash: None,
            },
        }
    }

    fn size_of(r: &ReportPush) -> u64 {
        serde_json::to_vec(r).unwrap().len() as u64
    }

    #[tokio::test]
    async fn keeps_order_across_reopen_and_removes_what_was_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<ReportPush> = (0..5).map(report).collect();
        let mut b = Buffer::open(dir.path(), 1 << 20).await.unwrap();
        for r in &items {
            b.push(r).await.unwrap();
        }
        assert_eq!(b.len(), 5);
        drop(b);
        let mut b = Buffer::open(dir.path(), 1 << 20).await.unwrap();
        let got = b.peek(3).await.unwrap();
        assert_eq!(got, items[..3].to_vec());
        let ids: Vec<EventId> = got.iter().map(|r| r.id).collect();
        b.remove(&ids).await.unwrap();
        assert_eq!(b.peek(10).await.unwrap(), items[3..].to_vec());
        assert_eq!(b.bytes(), items[3..].iter().map(size_of).sum::<u64>());
        assert_eq!(b.dropped(), 0);
    }

    #[tokio::test]
    async fn bound_drops_oldest_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<ReportPush> = (0..10).map(report).collect();
        let one = size_of(&items[0]);
        // Room for exactly three reports.
        let mut b = Buffer::open(dir.path(), one * 3 + one / 2).await.unwrap();
        for r in &items {
            b.push(r).await.unwrap();
            assert!(b.bytes() <= one * 3 + one / 2);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 7);
        assert_eq!(b.peek(10).await.unwrap(), items[7..].to_vec());
        // Only the three files remain on disk.
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3);
        // Reopening with a smaller bound trims again, oldest first.
        drop(b);
        let mut b = Buffer::open(dir.path(), one + one / 2).await.unwrap();
        assert_eq!(b.peek(10).await.unwrap(), items[9..].to_vec());
    }

    #[tokio::test]
    async fn corrupt_files_and_leftover_temp_files_do_not_block_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let good = report(1);
        let bad_id = EventId::new();
        let bad_name = format!("{:020}-{bad_id}.json", 7);
        std::fs::write(dir.path().join(bad_name), b"{not json").unwrap();
        std::fs::write(dir.path().join("01ABC.tmp"), b"half").unwrap();
        let mut b = Buffer::open(dir.path(), 1 << 20).await.unwrap();
        b.push(&good).await.unwrap();
        assert!(!dir.path().join("01ABC.tmp").exists());
        // The new report goes after the one left from before, whatever their ids say.
        assert!(dir
            .path()
            .join(format!("{:020}-{}.json", 8, good.id))
            .exists());
        assert_eq!(b.peek(10).await.unwrap(), vec![good]);
        assert_eq!(b.dropped(), 1);
        assert_eq!(b.len(), 1);
    }
}
