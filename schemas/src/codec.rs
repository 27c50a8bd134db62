//! The MessagePack codec used for every bus payload.

use serde::{de::DeserializeOwned, Serialize};

/// The largest message fleetbus accepts on the bus (and the nats-server `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message is {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The payload is not valid MessagePack for the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The value could not be serialised (a bug, not bad input).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes a value as MessagePack with named fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a MessagePack payload, refusing payloads over [`MAX_MESSAGE_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}
