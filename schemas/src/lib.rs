//! The fleetbus wire contract.
//!
//! Everything that crosses the bus is defined here once: typed ids, the event and command
//! envelopes, the events (facts, past tense) and commands (requests, imperative) of every domain,
//! the NATS subject names, read-model queries and the MessagePack codec. This crate does no I/O.
//!
//! Wire format: MessagePack with named fields (`rmp_serde::to_vec_named`), so any language's
//! msgpack library reads a message as a map. Enums are adjacently tagged:
//! an event is `{"domain": "agent", "body": {"type": "reported", "data": {...}}}`.
//! Golden fixtures under `fixtures/v<SCHEMA_VERSION>/` and JSON Schemas under `json/` pin it.

pub mod codec;
pub mod commands;
pub mod envelope;
pub mod events;
pub mod http;
pub mod ids;
pub mod queries;
pub mod subjects;
pub mod time;

pub use codec::{decode, encode, CodecError, MAX_MESSAGE_BYTES};
pub use commands::{Command, CommandEnvelope};
pub use envelope::{Actor, ActorKind, Envelope, UserRole, SCHEMA_VERSION};
pub use events::{Event, Severity};
pub use ids::*;
