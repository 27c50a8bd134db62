//! One entry: its stored layout `prev_hash[32] | hash[32] | subject_len u16 BE | subject |
//! envelope` and its hash (see the crate docs).

use fleetbus_schemas::Envelope;
use sha2::{Digest, Sha256};

use crate::{Hash, LogError, GENESIS_HASH, HASH_LEN};

/// One stored log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence (1-based, gapless).
    pub seq: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The envelope bytes exactly as published (MessagePack).
    pub envelope: Vec<u8>,
    /// The previous entry's hash.
    pub prev_hash: Hash,
    /// This entry's hash.
    pub hash: Hash,
}

/// The hash of an entry: `SHA-256(prev_hash || seq BE || subject_len u16 BE || subject || envelope)`.
pub fn entry_hash(prev_hash: &Hash, seq: u64, subject: &str, envelope: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    // Subjects are capped at u16::MAX on append; the cast cannot truncate for stored entries.
    h.update((subject.len() as u16).to_be_bytes());
    h.update(subject.as_bytes());
    h.update(envelope);
    h.finalize().into()
}

pub(crate) const ENTRY_HEADER: usize = HASH_LEN * 2 + 2;

impl Entry {
    /// The stored value: `prev_hash | hash | subject_len u16 BE | subject | envelope`.
    pub fn encode(&self) -> Vec<u8> {
        encode_entry(&self.prev_hash, &self.hash, &self.subject, &self.envelope)
    }

    /// Parses a stored value.
    pub fn decode(seq: u64, value: &[u8]) -> Result<Entry, LogError> {
        let (subject, envelope) = split_entry(seq, value)?;
        let mut prev_hash = GENESIS_HASH;
        prev_hash.copy_from_slice(&value[..HASH_LEN]);
        let mut hash = GENESIS_HASH;
        hash.copy_from_slice(&value[HASH_LEN..HASH_LEN * 2]);
        Ok(Entry {
            seq,
            subject: subject.to_owned(),
            envelope: envelope.to_vec(),
            prev_hash,
            hash,
        })
    }

    /// The hash this entry should have, recomputed from its contents.
    pub fn computed_hash(&self) -> Hash {
        entry_hash(&self.prev_hash, self.seq, &self.subject, &self.envelope)
    }

    /// Decodes the envelope.
    pub fn envelope(&self) -> Result<Envelope, LogError> {
        decode_envelope(self.seq, &self.envelope)
    }
}

/// Splits a stored value into its subject and envelope bytes without copying them.
pub(crate) fn split_entry(seq: u64, value: &[u8]) -> Result<(&str, &[u8]), LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        seq,
        reason: reason.to_owned(),
    };
    if value.len() < ENTRY_HEADER {
        return Err(corrupt("shorter than the 66-byte header"));
    }
    let subject_len = u16::from_be_bytes([value[HASH_LEN * 2], value[HASH_LEN * 2 + 1]]) as usize;
    let rest = &value[ENTRY_HEADER..];
    if rest.len() < subject_len {
        return Err(corrupt("subject length runs past the end of the entry"));
    }
    let subject =
        std::str::from_utf8(&rest[..subject_len]).map_err(|_| corrupt("subject is not UTF-8"))?;
    Ok((subject, &rest[subject_len..]))
}

/// Decodes the envelope of a stored value in place (the refold path: no copy of the entry).
pub(crate) fn stored_envelope(seq: u64, value: &[u8]) -> Result<Envelope, LogError> {
    let (_, envelope) = split_entry(seq, value)?;
    decode_envelope(seq, envelope)
}

pub(crate) fn decode_envelope(seq: u64, bytes: &[u8]) -> Result<Envelope, LogError> {
    fleetbus_schemas::decode(bytes).map_err(|e| LogError::Corrupt {
        seq,
        reason: format!("envelope does not decode: {e}"),
    })
}

pub(crate) fn encode_entry(
    prev_hash: &Hash,
    hash: &Hash,
    subject: &str,
    envelope: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + subject.len() + envelope.len());
    v.extend_from_slice(prev_hash);
    v.extend_from_slice(hash);
    v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
    v.extend_from_slice(subject.as_bytes());
    v.extend_from_slice(envelope);
    v
}
