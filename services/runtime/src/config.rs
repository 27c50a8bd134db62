//! Service config: an optional TOML file, then `FLEETBUS_<SERVICE>__<KEY>[__<SUBKEY>…]`
//! environment overrides, then deserialization into the service's own type (which uses
//! `#[serde(deny_unknown_fields)]` and a `version` field).
//!
//! Every error names where the value came from (the file or the environment variable), the key
//! and the reason, because it is printed to the operator as is.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Config files larger than this are rejected before parsing.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{}: config file is {size} bytes, larger than the {max} byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not valid TOML.
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// An environment override is unusable.
    #[error("{var}: {reason}")]
    Env {
        /// The variable name.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A value does not fit the service's config type (unknown key, wrong type, missing key).
    #[error("{origin}: {}{reason}", key_prefix(key))]
    Invalid {
        /// The file, the environment variable, or `<service> defaults`.
        origin: String,
        /// Dotted key path (`nats.url`), empty for the top level.
        key: String,
        /// What is wrong and what was expected.
        reason: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key '{key}': ")
    }
}

/// The environment prefix for a service: `FLEETBUS_<SERVICE>__`.
pub fn env_prefix(service: &str) -> String {
    format!(
        "FLEETBUS_{}__",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

struct Override {
    var: String,
    path: Vec<String>,
}

/// Load `service`'s config from `path` (if given) and the process environment.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, service: &str) -> Result<T, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with(&env_prefix(service))
                .then(|| (k, v.into_string().map_err(|_| ())))
        })
        .map(|(k, v)| match v {
            Ok(v) => Ok((k, v)),
            Err(()) => Err(ConfigError::Env {
                var: k,
                reason: "value is not valid UTF-8".into(),
            }),
        })
        .collect::<Result<_, _>>()?;
    load_with_env(path, service, &env)
}

/// [`load`] with an explicit environment (for tests and tools).
pub fn load_with_env<T: DeserializeOwned>(
    path: Option<&Path>,
    service: &str,
    env: &[(String, String)],
) -> Result<T, ConfigError> {
    let (mut table, file_origin) = match path {
        Some(p) => (read_table(p)?, display_name(p)),
        None => (toml::Table::new(), format!("{service} config (no file)")),
    };

    let prefix = env_prefix(service);
    let mut overrides = Vec::new();
    let mut sorted: Vec<&(String, String)> = env.iter().collect();
    sorted.sort();
    for (var, value) in sorted {
        let Some(rest) = var.strip_prefix(&prefix) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var: var.clone(),
                reason: format!("expected {prefix}<KEY>[__<SUBKEY>…] with non-empty keys"),
            });
        }
        set_path(&mut table, &keys, parse_scalar(value)).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
        overrides.push(Override {
            var: var.clone(),
            path: keys,
        });
    }

    // A service's bus role is its name: `[nats]` with only a url (or FLEETBUS_<SVC>__NATS__URL
    // alone) keeps the default user instead of failing on a missing field.
    if let Some(toml::Value::Table(nats)) = table.get_mut("nats") {
        nats.entry("user")
            .or_insert_with(|| toml::Value::String(service.to_owned()));
    }
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|err| {
        let key = path_string(err.path());
        let reason = clean_reason(&err.inner().to_string());
        // Blame the environment variable if the failing key came from one (or is its parent
        // or child: `X__A__B=1` on a scalar `a` fails at `a`).
        let origin = overrides
            .iter()
            .find(|o| {
                let dotted = o.path.join(".");
                key == dotted
                    || key.starts_with(&format!("{dotted}."))
                    || dotted.starts_with(&format!("{key}."))
            })
            .map(|o| o.var.clone())
            .unwrap_or_else(|| file_origin.clone());
        ConfigError::Invalid {
            origin,
            key,
            reason,
        }
    })
}

fn display_name(p: &Path) -> String {
    p.display().to_string()
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    // The file may have grown between stat and read.
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            max: MAX_CONFIG_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
}

/// Parse an environment value as a TOML scalar/array/inline table; anything that does not
/// parse is taken as a plain string (so `FLEETBUS_X__URL=nats://h:4222` needs no quotes).
fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Err("empty key".into());
    };
    let mut cur = table;
    for (i, k) in parents.iter().enumerate() {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(format!(
                    "'{}' holds a value of type {}, not a table, so it has no key '{}'",
                    keys[..=i].join("."),
                    other.type_str(),
                    keys[i + 1]
                ))
            }
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde quotes names with backticks; operators read them better in single quotes. toml
/// appends an `in 'key'` line that repeats the key we already name.
fn clean_reason(reason: &str) -> String {
    reason
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .replace('`', "'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::NatsConfig;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        version: u32,
        http_addr: String,
        workers: u16,
        nats: NatsConfig,
        limits: Limits,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        max_body: u64,
        enabled: bool,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits {
                max_body: 1024,
                enabled: true,
            }
        }
    }

    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                version: 1,
                http_addr: "127.0.0.1:8080".into(),
                workers: 4,
                nats: NatsConfig::for_role("ingest"),
                limits: Limits::default(),
            }
        }
    }

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix("-ingest.toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text).expect("write");
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_gives_defaults() {
        let c: Cfg = load_with_env(None, "ingest", &[]).expect("defaults");
        assert_eq!(c, Cfg::default());
    }

    #[test]
    fn file_then_env_overrides_with_types() {
        let f = file(b"version = 1\nworkers = 2\n[nats]\nurl = \"nats://10.0.0.1:4222\"\nuser = \"ingest\"\n");
        let c: Cfg = load_with_env(
            Some(f.path()),
            "ingest",
            &env(&[
                ("FLEETBUS_INGEST__WORKERS", "9"),
                ("FLEETBUS_INGEST__NATS__URL", "nats://127.0.0.1:5222"),
                ("FLEETBUS_INGEST__LIMITS__ENABLED", "false"),
                ("FLEETBUS_INGEST__LIMITS__MAX_BODY", "65536"),
                ("FLEETBUS_WEB__WORKERS", "77"),
            ]),
        )
        .expect("load");
        assert_eq!(c.workers, 9);
        assert_eq!(c.nats.url, "nats://127.0.0.1:5222");
        assert_eq!(c.nats.user, "ingest");
        assert!(!c.limits.enabled);
        assert_eq!(c.limits.max_body, 65536);
    }

    #[test]
    fn nats_url_alone_keeps_the_services_user() {
        let c: Cfg = load_with_env(
            None,
            "ingest",
            &env(&[("FLEETBUS_INGEST__NATS__URL", "nats://127.0.0.1:5222")]),
        )
        .expect("url alone");
        assert_eq!(c.nats.url, "nats://127.0.0.1:5222");
        assert_eq!(c.nats.user, "ingest");
        let f = file(b"[nats]\nurl = \"nats://127.0.0.1:6222\"\n");
        let c: Cfg = load_with_env(Some(f.path()), "ingest", &[]).expect("file url alone");
        assert_eq!(c.nats.url, "nats://127.0.0.1:6222");
        assert_eq!(c.nats.user, "ingest");
        let f = file(b"nats = 3\n");
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("not a table");
        assert!(err.to_string().contains("nats"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_key_and_expected() {
        let f = file(b"version = 1\nhtp_addr = \"0.0.0.0:1\"\n");
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("-ingest.toml"), "{text}");
        assert!(text.contains("unknown field 'htp_addr'"), "{text}");
        assert!(text.contains("expected one of"), "{text}");
        assert!(text.contains("'http_addr'"), "{text}");
    }

    #[test]
    fn nested_unknown_key_names_the_table() {
        let f = file(b"[nats]\nuser = \"ingest\"\nseed = \"x\"\n");
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("key 'nats.seed'"), "{text}");
        assert!(text.contains("unknown field 'seed'"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let f = file(b"workers = \"many\"\n");
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("type");
        let text = err.to_string();
        assert!(text.contains("key 'workers'"), "{text}");
        assert!(text.contains("invalid type: string \"many\""), "{text}");
        assert!(text.contains("u16"), "{text}");
    }

    #[test]
    fn bad_env_value_blames_the_variable() {
        let err = load_with_env::<Cfg>(
            None,
            "ingest",
            &env(&[("FLEETBUS_INGEST__WORKERS", "70000")]),
        )
        .expect_err("out of range");
        let text = err.to_string();
        assert!(
            text.starts_with("FLEETBUS_INGEST__WORKERS: key 'workers'"),
            "{text}"
        );

        let err = load_with_env::<Cfg>(None, "ingest", &env(&[("FLEETBUS_INGEST__WROKERS", "1")]))
            .expect_err("unknown env key");
        assert!(
            err.to_string().starts_with("FLEETBUS_INGEST__WROKERS"),
            "{err}"
        );

        let err = load_with_env::<Cfg>(
            None,
            "ingest",
            &env(&[("FLEETBUS_INGEST__WORKERS__X", "1")]),
        )
        .expect_err("u16 is not a table");
        let text = err.to_string();
        assert!(
            text.starts_with("FLEETBUS_INGEST__WORKERS__X: key 'workers'"),
            "{text}"
        );

        let f = file(b"workers = 2\n");
        let err = load_with_env::<Cfg>(
            Some(f.path()),
            "ingest",
            &env(&[("FLEETBUS_INGEST__WORKERS__X", "1")]),
        )
        .expect_err("scalar in file is not a table");
        assert!(
            err.to_string()
                .contains("'workers' holds a value of type integer, not a table"),
            "{err}"
        );
    }

    #[test]
    fn garbage_file_is_a_syntax_error_with_position() {
        let f = file(b"version = 1\nthis is not toml ][\n");
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("garbage");
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let f = file(&[0xff, 0xfe, 0x00, 0x41]);
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("binary");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn oversize_file_is_rejected_before_parsing() {
        let mut text = b"version = 1\n".to_vec();
        text.extend(std::iter::repeat_n(b'#', (MAX_CONFIG_BYTES + 1) as usize));
        let f = file(&text);
        let err = load_with_env::<Cfg>(Some(f.path()), "ingest", &[]).expect_err("too big");
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("larger than the 1048576 byte limit"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_with_env::<Cfg>(Some(Path::new("/nonexistent/ingest.toml")), "ingest", &[])
            .expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/ingest.toml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn env_prefix_uppercases_and_replaces_dashes() {
        assert_eq!(env_prefix("my-svc"), "FLEETBUS_MY_SVC__");
    }
}
