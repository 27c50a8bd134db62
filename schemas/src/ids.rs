//! Typed identifiers.
//!
//! Name-like ids (hosts, agents, services, …) are validated once, here, so that anything holding
//! one can put it in a NATS subject token, a file name or a URL path segment without escaping:
//! 1–63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter or digit.
//! Generated ids are ULIDs: unique, sortable by creation time, 26 characters on the wire.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    /// Which kind of id was expected.
    pub what: &'static str,
    /// The rejected input (truncated to 80 characters).
    pub value: String,
    /// What was wrong and what is expected.
    pub reason: &'static str,
}

/// The longest name-like id.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a name-like id: 1–63 of `[a-z0-9_-]`, first character `[a-z0-9]`.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), IdError> {
    let err = |reason| IdError {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(err("must be at most 63 characters"));
    }
    let first = value.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(err("must start with a lowercase letter or a digit"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(err("may contain only a-z, 0-9, '-' and '_'"));
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schemars(with = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_name($what, &value)?;
                Ok(Self(value))
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_id!(
    /// A managed host, e.g. `web-1`.
    HostId, "host id"
);
name_id!(
    /// An agent, usually named like its host.
    AgentId, "agent id"
);
name_id!(
    /// A service on a host, e.g. `nginx`.
    ServiceName, "service name"
);
name_id!(
    /// A saved task.
    TaskId, "task id"
);
name_id!(
    /// A schedule.
    ScheduleId, "schedule id"
);
name_id!(
    /// A heartbeat or deadline check.
    CheckId, "check id"
);
name_id!(
    /// A notification rule.
    RuleId, "rule id"
);
name_id!(
    /// A notification recipient.
    RecipientId, "recipient id"
);
name_id!(
    /// A notification channel.
    ChannelId, "channel id"
);
name_id!(
    /// A dashboard user's login name.
    UserName, "user name"
);

/// ULIDs from one process-wide generator: ids made in the same millisecond still increase.
fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a random one rather than fail.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

/// The Crockford base32 alphabet ULIDs are written in (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Parses the canonical text of a ULID: exactly 26 characters of uppercase Crockford base32,
/// the first one `0`–`7`.
///
/// Stricter than `ulid::Ulid::from_string`, on purpose: that decoder silently drops the bits a
/// first character above `7` would add beyond 128 (so `81M9…` decoded to the same id as
/// `01M9…`), and accepts lowercase. Ids are compared as text at the edges (JetStream's
/// `Nats-Msg-Id`, other languages' tools), so every id has exactly one spelling: the one
/// `Display` prints.
pub fn parse_ulid(what: &'static str, value: &str) -> Result<ulid::Ulid, IdError> {
    let err = |reason| IdError {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.len() != ulid::ULID_LEN {
        return Err(err("expected a 26-character ULID"));
    }
    let mut n: u128 = 0;
    for (i, b) in value.bytes().enumerate() {
        let digit = match CROCKFORD.iter().position(|&c| c == b) {
            Some(d) => d as u128,
            None if b.is_ascii_lowercase() => {
                return Err(err("ULIDs are written in uppercase (canonical form)"))
            }
            None => {
                return Err(err(
                    "a ULID uses only 0-9 and A-Z without I, L, O and U (Crockford base32)",
                ))
            }
        };
        if i == 0 && digit > 7 {
            return Err(err(
                "the first character of a ULID must be 0-7 (larger values overflow 128 bits)",
            ));
        }
        n = (n << 5) | digit;
    }
    Ok(ulid::Ulid(n))
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Text form: a canonical ULID, 26 characters of uppercase Crockford base32 whose first
        /// is 0-7; any other spelling is refused (JSON and MessagePack alike).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(
            #[schemars(with = "String", regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
            pub ulid::Ulid,
        );

        impl $name {
            /// A fresh id, sortable by time and strictly increasing within the process.
            pub fn new() -> Self {
                Self(monotonic_ulid())
            }
            /// The id as 16 bytes, for compact keys.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_bytes()
            }
            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(self) -> u64 {
                self.0.timestamp_ms()
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_ulid(stringify!($name), s).map(Self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

ulid_id!(
    /// Identifies one event; the `Nats-Msg-Id` of its publish and the log's dedup key.
    EventId
);
ulid_id!(
    /// Identifies one command; events it causes carry it as their causation id.
    CommandId
);
ulid_id!(
    /// Identifies one job run by the executor.
    JobId
);
ulid_id!(
    /// Identifies one alert incident (the id of the event that opened it).
    AlertId
);

/// A service on a host. On the wire and in URLs it is `host:service`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct ServiceKey {
    /// The host the service runs on.
    pub host: HostId,
    /// The service's name on that host.
    pub service: ServiceName,
}

impl ServiceKey {
    /// Joins a host and a service.
    pub fn new(host: HostId, service: ServiceName) -> Self {
        Self { host, service }
    }
}

impl FromStr for ServiceKey {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (host, service) = s.split_once(':').ok_or_else(|| IdError {
            what: "service key",
            value: s.chars().take(80).collect(),
            reason: "expected HOST:SERVICE",
        })?;
        Ok(Self {
            host: host.parse()?,
            service: service.parse()?,
        })
    }
}

impl TryFrom<String> for ServiceKey {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        value.parse()
    }
}

impl From<ServiceKey> for String {
    fn from(key: ServiceKey) -> String {
        key.to_string()
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_subject_safe_tokens_only() {
        assert!(HostId::new("web-1").is_ok());
        assert!(HostId::new("db_2").is_ok());
        for bad in [
            "", "Web", "-x", "a.b", "a*", "a>", "a b", "ä", "a/b", "a:b", "$(x)",
        ] {
            let err = HostId::new(bad).unwrap_err();
            assert_eq!(err.what, "host id", "{bad}");
        }
        assert!(HostId::new("a".repeat(63)).is_ok());
        assert!(HostId::new("a".repeat(64)).is_err());
    }

    #[test]
    fn service_key_round_trips_through_its_string_form() {
        let key: ServiceKey = "web-1:nginx".parse().unwrap();
        assert_eq!(key.host.as_str(), "web-1");
        assert_eq!(key.to_string(), "web-1:nginx");
        assert!("web-1".parse::<ServiceKey>().is_err());
        assert!("web-1:ng.inx".parse::<ServiceKey>().is_err());
    }

    #[test]
    fn ids_made_in_a_burst_strictly_increase() {
        let ids: Vec<EventId> = (0..10_000).map(|_| EventId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ulid_ids_parse_and_reject_garbage() {
        let id = EventId::new();
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert!("not-a-ulid".parse::<EventId>().is_err());
    }

    #[test]
    fn only_the_canonical_spelling_of_a_ulid_is_accepted() {
        let max = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ";
        assert_eq!(max.parse::<EventId>().unwrap().0, ulid::Ulid(u128::MAX));
        let id: EventId = "01M9ZQXW8E6GQ8T3VJ4N5R2Y7K".parse().unwrap();
        assert_eq!(id.to_string(), "01M9ZQXW8E6GQ8T3VJ4N5R2Y7K");
        // Each of these is accepted by `ulid::Ulid::from_string`; the first decodes to `id`.
        for (bad, reason) in [
            ("81M9ZQXW8E6GQ8T3VJ4N5R2Y7K", "0-7"),
            ("Z1M9ZQXW8E6GQ8T3VJ4N5R2Y7K", "0-7"),
            ("01m9zqxw8e6gq8t3vj4n5r2y7k", "uppercase"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2Y7k", "uppercase"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2YIK", "Crockford"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2YLK", "Crockford"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2YOK", "Crockford"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2YUK", "Crockford"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2Y7KX", "26"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2Y7", "26"),
            ("", "26"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2Y\u{e9}", "Crockford"),
            ("01M9ZQXW8E6GQ8T3VJ4N5R2Y-K", "Crockford"),
        ] {
            let err = bad.parse::<EventId>().expect_err(bad);
            assert!(err.reason.contains(reason), "{bad}: {err}");
            assert_eq!(err.what, "EventId");
        }
    }

    #[test]
    fn deserializing_refuses_non_canonical_ulids_in_json_and_msgpack() {
        let canonical = "01M9ZQXW8E6GQ8T3VJ4N5R2Y7K";
        let overflowed = "81M9ZQXW8E6GQ8T3VJ4N5R2Y7K";
        let id: EventId = serde_json::from_str(&format!("\"{canonical}\"")).unwrap();
        assert_eq!(id.to_string(), canonical);
        let err = serde_json::from_str::<EventId>(&format!("\"{overflowed}\"")).unwrap_err();
        assert!(err.to_string().contains("0-7"), "{err}");

        let packed = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(rmp_serde::from_slice::<EventId>(&packed).unwrap(), id);
        let hostile = rmp_serde::to_vec(overflowed).unwrap();
        let err = rmp_serde::from_slice::<EventId>(&hostile).unwrap_err();
        assert!(err.to_string().contains("0-7"), "{err}");
        let lower = rmp_serde::to_vec(&canonical.to_ascii_lowercase()).unwrap();
        assert!(rmp_serde::from_slice::<CommandId>(&lower).is_err());
    }
}
