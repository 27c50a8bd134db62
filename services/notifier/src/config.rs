//! The notifier's TOML config and its separate secrets file.
//!
//! Channels, recipients, rules and mutes may be declared here (the static baseline); the
//! `fleet.cmd.notify.*` commands add, replace and delete them at run time, and those changes are
//! facts in the log. Secret values live only in the secrets file (mode 0600, `name = "value"`),
//! referenced by name from channel specs, and are never logged or published.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use fleetbus_runtime::nats::NatsConfig;
use fleetbus_schemas::commands::notify::{ChannelSpec, MuteSpec, RecipientSpec, RuleSpec};
use serde::Deserialize;

use crate::NotifierError;

/// The config file's current version.
pub(crate) const CONFIG_VERSION: u32 = 1;

/// The notifier's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Config format version (1).
    pub version: u32,
    /// How to reach the bus (user `notifier`).
    pub nats: NatsConfig,
    /// The secrets file (TOML `name = "value"`, mode 0600). None = no secrets.
    pub secrets_file: Option<PathBuf>,
    /// Alert transitions older than this when the notifier first sees them (it was down) are
    /// recorded as suppressed (`stale`) instead of being sent late.
    pub catch_up_max_age_s: u64,
    /// How often escalations and digests are checked, in milliseconds.
    pub tick_ms: u64,
    /// Deliveries running at once.
    pub max_in_flight: usize,
    /// Retry backoff.
    pub retry: RetryConfig,
    /// Burst grouping.
    pub digest: DigestConfig,
    /// Static channels.
    pub channels: Vec<ChannelSpec>,
    /// Static recipients.
    pub recipients: Vec<RecipientSpec>,
    /// Static rules.
    pub rules: Vec<RuleSpec>,
    /// Static mutes and maintenance windows.
    pub mutes: Vec<MuteSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            nats: NatsConfig::for_role("notifier"),
            secrets_file: None,
            catch_up_max_age_s: 3600,
            tick_ms: 250,
            max_in_flight: 64,
            retry: RetryConfig::default(),
            digest: DigestConfig::default(),
            channels: Vec::new(),
            recipients: Vec::new(),
            rules: Vec::new(),
            mutes: Vec::new(),
        }
    }
}

/// Exponential backoff with full jitter between delivery attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff in milliseconds.
    pub base_ms: u64,
    /// Largest backoff in milliseconds.
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base_ms: 500,
            max_ms: 30_000,
        }
    }
}

/// Burst grouping: once `threshold` notifications went to one (recipient, channel) within
/// `window_ms`, further ones in that window are held and sent as one digest when it ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Individual notifications per window before grouping starts; 0 disables grouping.
    pub threshold: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            threshold: 10,
            window_ms: 60_000,
        }
    }
}

impl Config {
    /// Loads the config file (if any) with `FLEETBUS_NOTIFIER__*` overrides and checks it.
    pub fn load(path: Option<&Path>) -> Result<Config, NotifierError> {
        let config: Config = fleetbus_runtime::config::load(path, "notifier")
            .map_err(|e| NotifierError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the version and every static spec.
    pub fn validate(&self) -> Result<(), NotifierError> {
        if self.version != CONFIG_VERSION {
            return Err(NotifierError::Config(format!(
                "key 'version': found {}, expected {CONFIG_VERSION}",
                self.version
            )));
        }
        let bad = |key: &str, e: String| NotifierError::Config(format!("key '{key}': {e}"));
        for (i, c) in self.channels.iter().enumerate() {
            c.validate()
                .map_err(|e| bad(&format!("channels[{i}]"), e))?;
        }
        for (i, r) in self.recipients.iter().enumerate() {
            r.validate()
                .and_then(|()| crate::engine::check_time_zones_recipient(r))
                .map_err(|e| bad(&format!("recipients[{i}]"), e))?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            r.validate().map_err(|e| bad(&format!("rules[{i}]"), e))?;
        }
        for (i, m) in self.mutes.iter().enumerate() {
            m.validate()
                .and_then(|()| crate::engine::check_time_zones_mute(m))
                .map_err(|e| bad(&format!("mutes[{i}]"), e))?;
        }
        if self.tick_ms == 0 || self.max_in_flight == 0 {
            return Err(NotifierError::Config(
                "keys 'tick_ms' and 'max_in_flight' must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that needs it (a header, a login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Secret values by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    /// No secrets.
    pub fn empty() -> Self {
        Self::default()
    }

    /// From pairs (tests, benches).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Secrets(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Secret::new(v)))
                .collect(),
        )
    }

    /// Reads a secrets file: TOML with string values, readable by its owner only.
    pub fn load(path: &Path) -> Result<Secrets, NotifierError> {
        let err = |reason: String| NotifierError::Secrets {
            path: path.to_owned(),
            reason,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "mode is {mode:o}, expected 600 (chmod 600 {})",
                    path.display()
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        // The parser's message could quote a value: report only the position.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err(format!(
                "not valid TOML (at byte {:?})",
                e.span().map(|s| s.start)
            ))
        })?;
        let mut out = BTreeMap::new();
        for (name, value) in table {
            match value {
                toml::Value::String(s) => {
                    out.insert(name, Secret::new(s));
                }
                other => {
                    return Err(err(format!(
                        "secret {name:?} is a {}, expected a string",
                        other.type_str()
                    )))
                }
            }
        }
        Ok(Secrets(out))
    }

    /// The secret with this name.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn secrets_file_must_be_private_and_values_never_print() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "ops-hmac = \"s3cr3t-value\"").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Secrets::load(f.path()).unwrap_err().to_string();
            assert!(e.contains("expected 600"), "{e}");
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let s = Secrets::load(f.path()).unwrap();
        assert_eq!(s.get("ops-hmac").unwrap().expose(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn config_file_specs_are_checked_with_key_and_reason() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "version = 1\n[[channels]]\nchannel = \"hook\"\ntimeout_ms = 1000\n[channels.kind]\nkind = \"webhook\"\nurl = \"ftp://nope\""
        )
        .unwrap();
        let e = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(e.contains("channels[0]") && e.contains("http://"), "{e}");
    }
}
