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

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(#[schemars(with = "String")] pub ulid::Ulid);

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
                ulid::Ulid::from_string(s).map(Self).map_err(|_| IdError {
                    what: stringify!($name),
                    value: s.chars().take(80).collect(),
                    reason: "expected a 26-character ULID",
                })
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
}
