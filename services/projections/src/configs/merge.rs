//! Pure TOML operations of managed configs: parse, deep merge (template + overrides), the
//! smallest overlay that turns a template into a given config, and value-based drift.

pub use fleetbus_schemas::queries::config::{DiffKind, Difference};
use toml::{Table, Value};

/// Largest config text accepted anywhere (template, overrides, live, desired).
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Parses TOML text into a table, with a message naming the line when it is not TOML.
pub fn parse(what: &str, text: &str) -> Result<Table, String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{what} is {} bytes, at most {MAX_CONFIG_BYTES} are allowed",
            text.len()
        ));
    }
    text.parse::<Table>()
        .map_err(|e| format!("{what} is not valid TOML: {}", e.to_string().trim()))
}

/// Renders a table as TOML (keys sorted: the same table always renders to the same text).
pub fn render(table: &Table) -> Result<String, String> {
    toml::to_string(table).map_err(|e| format!("cannot render config as TOML: {e}"))
}

/// `over` deep-merged onto `base`: tables merge key by key, recursively; any other value in
/// `over` (scalars, arrays, arrays of tables) replaces the base value, also when its type differs.
pub fn deep_merge(base: &Table, over: &Table) -> Table {
    let mut out = base.clone();
    for (key, value) in over {
        let merged = match (out.get(key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => Value::Table(deep_merge(b, o)),
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

/// The smallest overlay `o` with `deep_merge(base, o) == target` as far as overlays can go:
/// keys of `target` that differ from `base`. Keys `base` has and `target` lacks cannot be
/// expressed; the caller checks the merge result.
pub fn overlay(base: &Table, target: &Table) -> Table {
    let mut out = Table::new();
    for (key, value) in target {
        match (base.get(key), value) {
            (Some(Value::Table(b)), Value::Table(t)) => {
                let inner = overlay(b, t);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Table(inner));
                }
            }
            (Some(b), t) if values_equal(b, t) => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// Value-based differences between `desired` and `live`, in key order. Key order and formatting
/// never count; paths matched by a `volatile` pattern (a dotted path where `*` stands for one
/// segment; a pattern also covers everything below it) are left out.
pub fn drift(desired: &Table, live: &Table, volatile: &[String]) -> Vec<Difference> {
    let patterns: Vec<Vec<&str>> = volatile.iter().map(|p| p.split('.').collect()).collect();
    let mut out = Vec::new();
    let mut path = Vec::new();
    diff_tables(desired, live, &patterns, &mut path, &mut out);
    out
}

fn is_volatile(path: &[String], patterns: &[Vec<&str>]) -> bool {
    patterns.iter().any(|p| {
        p.len() <= path.len()
            && p.iter()
                .zip(path)
                .all(|(seg, key)| *seg == "*" || seg == key)
    })
}

fn diff_tables(
    desired: &Table,
    live: &Table,
    patterns: &[Vec<&str>],
    path: &mut Vec<String>,
    out: &mut Vec<Difference>,
) {
    let mut keys: Vec<&String> = desired.keys().chain(live.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        path.push(key.clone());
        diff_values(desired.get(key), live.get(key), patterns, path, out);
        path.pop();
    }
}

fn diff_values(
    desired: Option<&Value>,
    live: Option<&Value>,
    patterns: &[Vec<&str>],
    path: &mut Vec<String>,
    out: &mut Vec<Difference>,
) {
    if is_volatile(path, patterns) {
        return;
    }
    let kind = match (desired, live) {
        (None, None) => return,
        (Some(Value::Table(d)), Some(Value::Table(l))) => {
            return diff_tables(d, l, patterns, path, out);
        }
        (Some(Value::Array(d)), Some(Value::Array(l)))
            if is_table_array(d) && is_table_array(l) =>
        {
            for i in 0..d.len().max(l.len()) {
                path.push(i.to_string());
                diff_values(d.get(i), l.get(i), patterns, path, out);
                path.pop();
            }
            return;
        }
        (Some(d), Some(l)) if values_equal(d, l) => return,
        (Some(_), Some(_)) => DiffKind::Changed,
        (Some(_), None) => DiffKind::Missing,
        (None, Some(_)) => DiffKind::Unexpected,
    };
    out.push(Difference {
        path: path.join("."),
        kind,
        desired: desired.map(to_json),
        live: live.map(to_json),
    });
}

fn is_table_array(values: &[Value]) -> bool {
    !values.is_empty() && values.iter().all(Value::is_table)
}

/// Value equality where table key order never matters and a NaN equals a NaN.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Table(x), Value::Table(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A TOML value as JSON (dates become their TOML text).
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(f.to_string())),
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Table {
        parse("test", text).unwrap()
    }

    #[test]
    fn merge_recurses_into_nested_tables_and_replaces_everything_else() {
        let base = t(r#"
            interval = 30
            tags = ["a", "b"]
            [nginx]
            workers = 4
            [nginx.limits]
            conn = 100
            rate = 5
            [[upstream]]
            host = "a"
        "#);
        let over = t(r#"
            tags = ["c"]
            [nginx.limits]
            rate = 9
            [[upstream]]
            host = "b"
        "#);
        let merged = deep_merge(&base, &over);
        assert_eq!(
            merged,
            t(r#"
            interval = 30
            tags = ["c"]
            [nginx]
            workers = 4
            [nginx.limits]
            conn = 100
            rate = 9
            [[upstream]]
            host = "b"
        "#)
        );
    }

    #[test]
    fn merge_lets_overrides_change_types_both_ways() {
        let base = t("a = 1\n[b]\nx = 1\n");
        let over = t("a = { nested = true }\nb = \"flat\"\n");
        let merged = deep_merge(&base, &over);
        assert_eq!(merged, t("b = \"flat\"\n[a]\nnested = true\n"));
    }

    #[test]
    fn identical_configs_in_another_key_order_have_no_drift() {
        let a = t("x = 1\ny = [1, 2]\n[s]\np = \"q\"\nr = 2.5\n");
        let b = t("[s]\nr = 2.5\np = \"q\"\n\n\n");
        let b = deep_merge(&b, &t("y = [1, 2]\nx = 1"));
        assert!(drift(&a, &b, &[]).is_empty());
    }

    #[test]
    fn drift_names_each_changed_missing_and_unexpected_key_with_its_path() {
        let desired = t(r#"
            a = 1
            gone = "x"
            list = [1, 2, 3]
            [n.m]
            k = true
            [[srv]]
            port = 80
            [[srv]]
            port = 81
        "#);
        let live = t(r#"
            a = "1"
            extra = 5
            list = [1, 2]
            [n.m]
            k = false
            [[srv]]
            port = 80
            [[srv]]
            port = 82
            [[srv]]
            port = 83
        "#);
        let d = drift(&desired, &live, &[]);
        let got: Vec<(&str, DiffKind)> = d.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("a", DiffKind::Changed),
                ("extra", DiffKind::Unexpected),
                ("gone", DiffKind::Missing),
                ("list", DiffKind::Changed),
                ("n.m.k", DiffKind::Changed),
                ("srv.1.port", DiffKind::Changed),
                ("srv.2", DiffKind::Unexpected),
            ]
        );
        assert_eq!(d[0].desired, Some(serde_json::json!(1)));
        assert_eq!(d[0].live, Some(serde_json::json!("1")));
        assert_eq!(d[2].live, None);
        assert_eq!(d[6].live, Some(serde_json::json!({"port": 83})));
    }

    #[test]
    fn drift_reports_a_table_replaced_by_a_scalar_as_one_change() {
        let d = drift(&t("[a]\nb = 1\n"), &t("a = 3\n"), &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "a");
        assert_eq!(d[0].kind, DiffKind::Changed);
        assert_eq!(d[0].desired, Some(serde_json::json!({"b": 1})));
    }

    #[test]
    fn volatile_patterns_hide_keys_subtrees_and_wildcard_segments() {
        let desired = t("pid = 1\n[state]\nlast = 1\n[[srv]]\nport = 1\nseen = 1\n[x]\ny = 1\n");
        let live =
            t("pid = 2\n[state]\nlast = 2\nnew = 1\n[[srv]]\nport = 1\nseen = 9\n[x]\ny = 2\n");
        let all = drift(&desired, &live, &[]);
        assert_eq!(all.len(), 5);
        let volatile = ["pid".to_string(), "state".into(), "srv.*.seen".into()];
        let d = drift(&desired, &live, &volatile);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "x.y");
        // A pattern longer than the path does not hide the parent.
        let d = drift(&desired, &live, &["x.y.z".to_string()]);
        assert!(d.iter().any(|d| d.path == "x.y"));
    }

    #[test]
    fn integer_and_float_of_the_same_number_are_a_type_change() {
        let d = drift(&t("a = 1\n"), &t("a = 1.0\n"), &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DiffKind::Changed);
        assert!(drift(&t("a = nan\n"), &t("a = nan\n"), &[]).is_empty());
    }

    #[test]
    fn overlay_merged_over_its_base_gives_the_target() {
        let base = t("a = 1\nb = 2\n[n]\nx = 1\ny = 2\n");
        let target = t("a = 1\nb = 3\nc = 4\n[n]\nx = 1\ny = 5\n");
        let o = overlay(&base, &target);
        assert_eq!(o, t("b = 3\nc = 4\n[n]\ny = 5\n"));
        assert_eq!(deep_merge(&base, &o), target);
        // A key the target lacks cannot be expressed; the merge shows it.
        let target = t("a = 1\n[n]\nx = 1\ny = 2\n");
        assert_ne!(deep_merge(&base, &overlay(&base, &target)), target);
    }

    #[test]
    fn malformed_and_oversize_configs_are_rejected_with_the_reason() {
        let e = parse("overrides", "a = [1,\n").unwrap_err();
        assert!(e.starts_with("overrides is not valid TOML"), "{e}");
        let big = format!("a = \"{}\"\n", "x".repeat(MAX_CONFIG_BYTES));
        let e = parse("template", &big).unwrap_err();
        assert!(e.contains("at most 65536"), "{e}");
    }

    #[test]
    fn render_is_deterministic_whatever_the_input_order() {
        let a = render(&t("b = 1\na = 2\n[z]\nq = 1\n")).unwrap();
        let b = render(&t("[z]\nq = 1\n[x]\n")).unwrap();
        assert_eq!(a, render(&t("a = 2\nb = 1\n[z]\nq = 1\n")).unwrap());
        assert!(b.contains("[x]"));
    }
}
