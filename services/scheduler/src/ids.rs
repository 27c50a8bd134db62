//! Deterministic ids: every scheduler that decides the same thing publishes the same id, so
//! JetStream's duplicate window (`Nats-Msg-Id`) and the log's dedup keep exactly one copy.
//!
//! An id is a ULID whose timestamp is the instant the decision is about (the slot, the
//! deadline, …) and whose 80 random bits are the first 80 bits of SHA-256 over a purpose tag
//! and the decision's key parts (length-prefixed, so `("ab","c")` and `("a","bc")` differ).

use chrono::{DateTime, Utc};
use fleetbus_schemas::{CommandId, EventId};
use sha2::{Digest, Sha256};

fn derive(at: DateTime<Utc>, purpose: &str, parts: &[&str]) -> ulid::Ulid {
    let mut hasher = Sha256::new();
    for part in std::iter::once(purpose).chain(parts.iter().copied()) {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut random = [0u8; 16];
    random[6..16].copy_from_slice(&digest[..10]);
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(random))
}

/// The slot's instant as a stable string (milliseconds since the epoch).
fn slot_key(slot: DateTime<Utc>) -> String {
    slot.timestamp_millis().to_string()
}

/// The id of the command a schedule publishes for a slot. `part` distinguishes several
/// commands of one slot (`host:service` for status polls; empty otherwise).
pub fn slot_command(schedule: &str, slot: DateTime<Utc>, part: &str) -> CommandId {
    CommandId(derive(
        slot,
        "slot-command",
        &[schedule, &slot_key(slot), part],
    ))
}

/// The id of an event about a decision at `at`, identified by `purpose` and `parts`.
pub fn event(at: DateTime<Utc>, purpose: &str, parts: &[&str]) -> EventId {
    EventId(derive(at, purpose, parts))
}

/// The id of an event caused by a command: stable across redeliveries of the command.
pub fn caused_by(command: CommandId, purpose: &str) -> EventId {
    let at = DateTime::from_timestamp_millis(command.timestamp_ms() as i64).unwrap_or_default();
    EventId(derive(at, purpose, &[&command.to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_id_different_inputs_different_id() {
        let slot: DateTime<Utc> = "2026-01-01T00:00:05Z".parse().unwrap();
        let a = slot_command("poll-web", slot, "");
        assert_eq!(a, slot_command("poll-web", slot, ""));
        assert_eq!(a.timestamp_ms(), slot.timestamp_millis() as u64);
        assert_ne!(
            a,
            slot_command("poll-web", slot + chrono::Duration::seconds(1), "")
        );
        assert_ne!(a, slot_command("poll-db", slot, ""));
        assert_ne!(
            slot_command("poll", slot, "web-1:nginx"),
            slot_command("poll", slot, "web-1:sshd")
        );
        assert_ne!(event(slot, "ab", &["c"]), event(slot, "a", &["bc"]));
    }
}
