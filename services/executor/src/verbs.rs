//! Privileged verbs: a registry of predetermined commands named `VERB-NOUN`, called with
//! JSON-typed arguments (`RESTART-SERVICE {"service":"web"}`), from `fleetctl do` or the bus.
//!
//! Built-in verbs map to service actions, resources and saved tasks; deployments add their own
//! in the executor config as task definitions (their parameters are the verb's arguments).

use std::collections::BTreeMap;

use fleetbus_schemas::events::job::TaskSpec;
use fleetbus_schemas::events::service::ServiceAction;
use fleetbus_schemas::{ServiceName, TaskId};
use serde_json::Value;

use crate::error::Rejection;

/// What a verb resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum VerbPlan {
    /// A service action (allowlist still applies).
    Action {
        /// The service.
        service: ServiceName,
        /// The action.
        action: ServiceAction,
        /// For logs.
        lines: Option<u32>,
    },
    /// Host resources.
    Resources,
    /// A saved task.
    Task {
        /// The task.
        task: TaskId,
        /// Its parameter values.
        params: BTreeMap<String, Value>,
    },
    /// A verb defined in config, run like a task.
    Custom {
        /// Its definition.
        spec: TaskSpec,
        /// Its arguments as parameter values.
        params: BTreeMap<String, Value>,
    },
}

/// The built-in verbs, with their arguments, for help texts.
pub const BUILTIN: &[(&str, &str)] = &[
    ("STATUS-SERVICE", r#"{"service": NAME}"#),
    ("START-SERVICE", r#"{"service": NAME}"#),
    ("STOP-SERVICE", r#"{"service": NAME}"#),
    ("RESTART-SERVICE", r#"{"service": NAME}"#),
    ("RELOAD-SERVICE", r#"{"service": NAME}"#),
    ("ENABLE-SERVICE", r#"{"service": NAME}"#),
    ("DISABLE-SERVICE", r#"{"service": NAME}"#),
    ("TAIL-LOGS", r#"{"service": NAME, "lines"?: 1..500}"#),
    ("SHOW-RESOURCES", "{}"),
    ("RUN-TASK", r#"{"task": TASK, "params"?: {…}}"#),
];

/// Checks the shape of a verb name: `WORD-WORD…` in capitals.
pub fn valid_name(verb: &str) -> bool {
    let parts: Vec<&str> = verb.split('-').collect();
    parts.len() >= 2
        && verb.len() <= 64
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// Parses the text form `VERB-NOUN {json}` (the JSON may be omitted for `{}`).
pub fn parse_line(line: &str) -> Result<(String, Value), Rejection> {
    let line = line.trim();
    let (verb, rest) = match line.find(|c: char| c.is_whitespace()) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    if !valid_name(verb) {
        return Err(Rejection::Invalid(format!(
            "{verb:?} is not a verb (expected VERB-NOUN in capitals, e.g. RESTART-SERVICE)"
        )));
    }
    let args = if rest.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(rest)
            .map_err(|e| Rejection::Invalid(format!("arguments of {verb} are not JSON: {e}")))?
    };
    Ok((verb.to_string(), args))
}

fn object<'a>(
    verb: &str,
    args: &'a Value,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, Rejection> {
    let obj = args
        .as_object()
        .ok_or_else(|| Rejection::Invalid(format!("arguments of {verb} must be a JSON object")))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Rejection::Invalid(format!(
            "{verb} takes no argument {k:?} (it takes: {})",
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(obj)
}

fn service_arg(verb: &str, obj: &serde_json::Map<String, Value>) -> Result<ServiceName, Rejection> {
    let s = obj
        .get("service")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejection::Invalid(format!("{verb} needs \"service\": a service name")))?;
    s.parse()
        .map_err(|e: fleetbus_schemas::IdError| Rejection::Invalid(e.to_string()))
}

/// Resolves a verb and its arguments.
pub fn plan(
    verb: &str,
    args: &Value,
    custom: &BTreeMap<String, TaskSpec>,
) -> Result<VerbPlan, Rejection> {
    let action = match verb {
        "STATUS-SERVICE" => Some(ServiceAction::Status),
        "START-SERVICE" => Some(ServiceAction::Start),
        "STOP-SERVICE" => Some(ServiceAction::Stop),
        "RESTART-SERVICE" => Some(ServiceAction::Restart),
        "RELOAD-SERVICE" => Some(ServiceAction::Reload),
        "ENABLE-SERVICE" => Some(ServiceAction::Enable),
        "DISABLE-SERVICE" => Some(ServiceAction::Disable),
        _ => None,
    };
    if let Some(action) = action {
        let obj = object(verb, args, &["service"])?;
        return Ok(VerbPlan::Action {
            service: service_arg(verb, obj)?,
            action,
            lines: None,
        });
    }
    match verb {
        "TAIL-LOGS" => {
            let obj = object(verb, args, &["service", "lines"])?;
            let lines =
                match obj.get("lines") {
                    None => None,
                    Some(v) => Some(v.as_u64().filter(|n| (1..=500).contains(n)).ok_or_else(
                        || {
                            Rejection::Invalid(
                                "TAIL-LOGS \"lines\" must be an integer in 1..=500".into(),
                            )
                        },
                    )? as u32),
                };
            Ok(VerbPlan::Action {
                service: service_arg(verb, obj)?,
                action: ServiceAction::Logs,
                lines,
            })
        }
        "SHOW-RESOURCES" => {
            object(verb, args, &[])?;
            Ok(VerbPlan::Resources)
        }
        "RUN-TASK" => {
            let obj = object(verb, args, &["task", "params"])?;
            let task: TaskId = obj
                .get("task")
                .and_then(Value::as_str)
                .ok_or_else(|| Rejection::Invalid("RUN-TASK needs \"task\": a task id".into()))?
                .parse()
                .map_err(|e: fleetbus_schemas::IdError| Rejection::Invalid(e.to_string()))?;
            let params = match obj.get("params") {
                None => BTreeMap::new(),
                Some(Value::Object(m)) => m.clone().into_iter().collect(),
                Some(_) => {
                    return Err(Rejection::Invalid(
                        "RUN-TASK \"params\" must be an object".into(),
                    ))
                }
            };
            Ok(VerbPlan::Task { task, params })
        }
        other => match custom.get(other) {
            Some(spec) => {
                let obj = args.as_object().ok_or_else(|| {
                    Rejection::Invalid(format!("arguments of {other} must be a JSON object"))
                })?;
                Ok(VerbPlan::Custom {
                    spec: spec.clone(),
                    params: obj.clone().into_iter().collect(),
                })
            }
            None => Err(Rejection::NotFound(format!(
                "no verb {other} (built-in: {}; configured: {})",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
                if custom.is_empty() {
                    "none".to_string()
                } else {
                    custom.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_form_parses() {
        let (v, a) = parse_line(r#"RESTART-SERVICE {"service":"web"}"#).unwrap();
        assert_eq!(v, "RESTART-SERVICE");
        assert_eq!(a, json!({"service": "web"}));
        assert_eq!(parse_line("SHOW-RESOURCES").unwrap().1, json!({}));
        assert!(parse_line("restart-service {}").is_err());
        assert!(parse_line("RESTART {}").is_err());
        assert!(parse_line("RESTART-SERVICE {nope").is_err());
    }

    #[test]
    fn builtins_resolve_with_typed_arguments() {
        let none = BTreeMap::new();
        assert_eq!(
            plan("RESTART-SERVICE", &json!({"service": "web"}), &none).unwrap(),
            VerbPlan::Action {
                service: "web".parse().unwrap(),
                action: ServiceAction::Restart,
                lines: None
            }
        );
        assert!(matches!(
            plan("RESTART-SERVICE", &json!({"service": "web", "x": 1}), &none),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            plan("RESTART-SERVICE", &json!({"service": "$(id)"}), &none),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            plan("TAIL-LOGS", &json!({"service": "web", "lines": 501}), &none),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            plan("LAUNCH-MISSILES", &json!({}), &none),
            Err(Rejection::NotFound(_))
        ));
        assert_eq!(
            plan("SHOW-RESOURCES", &json!({}), &none).unwrap(),
            VerbPlan::Resources
        );
    }
}
