//! Saved tasks: templates with typed parameters. Values are validated against their type, then
//! shell-quoted into the template — the template author decides the shape of the command, the
//! caller only fills typed holes.

use std::collections::BTreeMap;

use fleetbus_schemas::events::job::{ParamType, TaskSpec};
use regex::Regex;

use crate::quote::quote;
use crate::templates::with_priority;
use crate::RemoteError;

/// Characters a `sudo` task's template may not contain outside placeholders: sudo applies to one
/// simple command, so anything that makes a compound command would escape it.
const SUDO_FORBIDDEN: &[char] = &[
    ';', '|', '&', '<', '>', '$', '`', '(', ')', '\n', '\\', '"', '\'', '*', '?', '~', '#',
];

enum Piece {
    Text(String),
    Param(String),
}

fn parse_template(template: &str) -> Result<Vec<Piece>, RemoteError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' => {
                            name.push(ch)
                        }
                        _ => {
                            return Err(RemoteError::Invalid(format!(
                                "template placeholder {{{name}… is not closed or has characters other than [A-Za-z0-9_-]"
                            )))
                        }
                    }
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Param(name));
            }
            '}' => {
                return Err(RemoteError::Invalid(
                    "template has a lone '}' (write '}}' for a literal brace)".into(),
                ))
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn anchored(pattern: &str) -> Result<Regex, RemoteError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        RemoteError::Invalid(format!(
            "parameter pattern {pattern:?} is not a valid regex: {e}"
        ))
    })
}

/// Checks a task definition: placeholders match declared params, patterns compile, ranges are
/// sane, defaults are valid, and `sudo` templates are one simple command.
pub fn validate(spec: &TaskSpec) -> Result<(), RemoteError> {
    let pieces = parse_template(&spec.template)?;
    if spec.template.trim().is_empty() {
        return Err(RemoteError::Invalid("task template is empty".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &spec.params {
        if !seen.insert(p.name.as_str()) {
            return Err(RemoteError::Invalid(format!(
                "parameter {} is declared twice",
                p.name
            )));
        }
        match &p.ty {
            ParamType::String { pattern } => {
                anchored(pattern)?;
            }
            ParamType::Integer { min, max } if min > max => {
                return Err(RemoteError::Invalid(format!(
                    "parameter {}: min {min} is greater than max {max}",
                    p.name
                )))
            }
            ParamType::Enum { values } if values.is_empty() => {
                return Err(RemoteError::Invalid(format!(
                    "parameter {}: enum has no values",
                    p.name
                )))
            }
            _ => {}
        }
        if let Some(d) = &p.default {
            render_value(&p.name, &p.ty, d)?;
        }
    }
    for piece in &pieces {
        match piece {
            Piece::Param(name) if !seen.contains(name.as_str()) => {
                return Err(RemoteError::Invalid(format!(
                    "template uses {{{name}}} but no parameter {name} is declared"
                )))
            }
            Piece::Text(t) if spec.sudo && t.contains(SUDO_FORBIDDEN) => {
                return Err(RemoteError::Invalid(format!(
                    "a sudo task must be one simple command; the template text {t:?} contains shell syntax"
                )))
            }
            _ => {}
        }
    }
    if spec.sudo && !spec.template.trim_start().starts_with('/') {
        return Err(RemoteError::Invalid(
            "a sudo task must start with the absolute path of its program (sudoers matches exact paths)".into(),
        ));
    }
    if let Some(n) = spec.nice {
        if !(-20..=19).contains(&n) {
            return Err(RemoteError::Invalid(format!("nice {n} is outside -20..19")));
        }
    }
    if let Some(c) = spec.ionice_class {
        if !(1..=3).contains(&c) {
            return Err(RemoteError::Invalid(format!(
                "ionice class {c} is outside 1..3"
            )));
        }
    }
    Ok(())
}

/// The text a valid value stands for (before quoting).
fn render_value(name: &str, ty: &ParamType, v: &serde_json::Value) -> Result<String, RemoteError> {
    let bad = |expected: String| {
        RemoteError::Invalid(format!(
            "parameter {name}: {} is not {expected}",
            truncate(&v.to_string())
        ))
    };
    match ty {
        ParamType::String { pattern } => {
            let s = v.as_str().ok_or_else(|| bad("a string".into()))?;
            if anchored(pattern)?.is_match(s) {
                Ok(s.to_string())
            } else {
                Err(bad(format!("a string matching {pattern:?}")))
            }
        }
        ParamType::Integer { min, max } => {
            let n = v.as_i64().ok_or_else(|| bad("an integer".into()))?;
            if (*min..=*max).contains(&n) {
                Ok(n.to_string())
            } else {
                Err(bad(format!("an integer in {min}..={max}")))
            }
        }
        ParamType::Enum { values } => {
            let s = v.as_str().ok_or_else(|| bad("a string".into()))?;
            if values.iter().any(|x| x == s) {
                Ok(s.to_string())
            } else {
                Err(bad(format!("one of {}", values.join(", "))))
            }
        }
        ParamType::Boolean => v
            .as_bool()
            .map(|b| b.to_string())
            .ok_or_else(|| bad("true or false".into())),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The rendered task: the full line, and the exact privileged command when `sudo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedTask {
    /// What the remote shell runs.
    pub line: String,
    /// The command under `sudo -n`, if any.
    pub privileged: Option<String>,
}

/// Validates `values` and fills the template.
pub fn render(
    spec: &TaskSpec,
    values: &BTreeMap<String, serde_json::Value>,
) -> Result<RenderedTask, RemoteError> {
    validate(spec)?;
    for k in values.keys() {
        if !spec.params.iter().any(|p| &p.name == k) {
            return Err(RemoteError::Invalid(format!(
                "task {} has no parameter {k} (it takes: {})",
                spec.task,
                spec.params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut resolved = BTreeMap::new();
    for p in &spec.params {
        let v = values
            .get(&p.name)
            .or(p.default.as_ref())
            .ok_or_else(|| RemoteError::Invalid(format!("parameter {} is required", p.name)))?;
        resolved.insert(p.name.as_str(), quote(&render_value(&p.name, &p.ty, v)?)?);
    }
    let mut cmd = String::new();
    for piece in parse_template(&spec.template)? {
        match piece {
            Piece::Text(t) => cmd.push_str(&t),
            Piece::Param(name) => cmd.push_str(
                resolved
                    .get(name.as_str())
                    .map(String::as_str)
                    .unwrap_or_default(),
            ),
        }
    }
    let (line, privileged) = if spec.sudo {
        (format!("sudo -n {cmd}"), Some(cmd))
    } else {
        (cmd, None)
    };
    Ok(RenderedTask {
        line: with_priority(&line, spec.nice, spec.ionice_class)?,
        privileged,
    })
}

/// Every exact privileged command a sudo task can produce, when its parameters are all enums or
/// booleans with at most `limit` combinations; `None` when it cannot be enumerated exactly.
pub fn privileged_variants(spec: &TaskSpec, limit: usize) -> Option<Vec<String>> {
    if !spec.sudo {
        return Some(Vec::new());
    }
    let mut combos: Vec<BTreeMap<String, serde_json::Value>> = vec![BTreeMap::new()];
    for p in &spec.params {
        let options: Vec<serde_json::Value> = match &p.ty {
            ParamType::Enum { values } => values.iter().map(|v| serde_json::json!(v)).collect(),
            ParamType::Boolean => vec![serde_json::json!(false), serde_json::json!(true)],
            ParamType::Integer { min, max } if max - min < limit as i64 => {
                (*min..=*max).map(|n| serde_json::json!(n)).collect()
            }
            _ => return None,
        };
        let mut next = Vec::new();
        for c in &combos {
            for o in &options {
                let mut c = c.clone();
                c.insert(p.name.clone(), o.clone());
                next.push(c);
                if next.len() > limit {
                    return None;
                }
            }
        }
        combos = next;
    }
    combos
        .iter()
        .map(|c| render(spec, c).ok().and_then(|r| r.privileged))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::events::job::ParamSpec;
    use serde_json::json;

    fn task(template: &str, params: Vec<ParamSpec>, sudo: bool) -> TaskSpec {
        TaskSpec {
            task: "t".parse().unwrap(),
            description: "test".into(),
            template: template.into(),
            params,
            sudo,
            idempotent: false,
            nice: None,
            ionice_class: None,
        }
    }

    fn p(name: &str, ty: ParamType) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty,
            default: None,
        }
    }

    #[test]
    fn typed_values_are_checked_and_quoted() {
        let t = task(
            "echo {msg} {n} {mode} {flag}",
            vec![
                p(
                    "msg",
                    ParamType::String {
                        pattern: ".*".into(),
                    },
                ),
                p("n", ParamType::Integer { min: 1, max: 10 }),
                p(
                    "mode",
                    ParamType::Enum {
                        values: vec!["fast".into(), "slow".into()],
                    },
                ),
                p("flag", ParamType::Boolean),
            ],
            false,
        );
        let v = BTreeMap::from([
            ("msg".to_string(), json!("$(touch /tmp/pwned); it's")),
            ("n".to_string(), json!(3)),
            ("mode".to_string(), json!("fast")),
            ("flag".to_string(), json!(true)),
        ]);
        assert_eq!(
            render(&t, &v).unwrap().line,
            "echo '$(touch /tmp/pwned); it'\\''s' 3 fast true"
        );
        for (k, bad) in [
            ("n", json!(11)),
            ("n", json!("3")),
            ("mode", json!("medium")),
            ("flag", json!("yes")),
        ] {
            let mut v2 = v.clone();
            v2.insert(k.into(), bad);
            assert!(render(&t, &v2).is_err(), "{k}");
        }
        let mut v3 = v.clone();
        v3.insert("extra".into(), json!(1));
        assert!(render(&t, &v3).is_err());
        let mut v4 = v;
        v4.remove("n");
        assert!(render(&t, &v4)
            .unwrap_err()
            .to_string()
            .contains("required"));
    }

    #[test]
    fn string_patterns_are_anchored() {
        let t = task(
            "ls {dir}",
            vec![p(
                "dir",
                ParamType::String {
                    pattern: "[a-z]+".into(),
                },
            )],
            false,
        );
        assert!(render(&t, &BTreeMap::from([("dir".into(), json!("abc"))])).is_ok());
        assert!(render(
            &t,
            &BTreeMap::from([("dir".into(), json!("abc; rm -rf /"))])
        )
        .is_err());
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(validate(&task("echo {x}", vec![], false)).is_err());
        assert!(validate(&task("echo {x", vec![], false)).is_err());
        assert!(validate(&task("echo }", vec![], false)).is_err());
        assert!(validate(&task("/usr/bin/sv up x; reboot", vec![], true)).is_err());
        assert!(validate(&task("sv up x", vec![], true)).is_err());
        assert!(validate(&task("echo {{literal}}", vec![], false)).is_ok());
        assert!(validate(&task(
            "x {a}",
            vec![p(
                "a",
                ParamType::String {
                    pattern: "(".into()
                }
            )],
            false
        ))
        .is_err());
    }

    #[test]
    fn sudo_tasks_render_exact_privileged_commands() {
        let t = task(
            "/usr/bin/sv {verb} /srv/sv/web",
            vec![p(
                "verb",
                ParamType::Enum {
                    values: vec!["up".into(), "down".into()],
                },
            )],
            true,
        );
        let r = render(&t, &BTreeMap::from([("verb".into(), json!("up"))])).unwrap();
        assert_eq!(r.line, "sudo -n /usr/bin/sv up /srv/sv/web");
        assert_eq!(
            privileged_variants(&t, 64).unwrap(),
            vec!["/usr/bin/sv up /srv/sv/web", "/usr/bin/sv down /srv/sv/web"]
        );
        let free = task(
            "/usr/bin/echo {s}",
            vec![p(
                "s",
                ParamType::String {
                    pattern: ".*".into(),
                },
            )],
            true,
        );
        assert!(privileged_variants(&free, 64).is_none());
    }
}
