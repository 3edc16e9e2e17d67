//! A service's configuration reference, generated from its config types: the JSON Schema
//! (`--print-schema`, and the files editors read) and the book's reference table (key,
//! type, default, meaning). Defaults come from the config's own `Default`, so the
//! reference cannot disagree with the loader.

use crate::ServiceConfig;
use schemars::JsonSchema;
use serde_json::{Map, Value};

/// The JSON Schema of `C`, as `--print-schema` prints it.
pub fn schema<C: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(C)).expect("a schema is JSON")
}

/// One setting of the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Dotted key, as in the YAML (`kafka.write_timeout`).
    pub key: String,
    pub kind: String,
    /// The default as YAML would write it; empty when there is none.
    pub default: String,
    pub description: String,
}

/// Every leaf setting of `C`, in declaration order, nested sections flattened into dotted
/// keys.
pub fn settings<C: ServiceConfig + JsonSchema>() -> Vec<Setting> {
    let schema = schema::<C>();
    let defaults = serde_json::to_value(C::default()).unwrap_or(Value::Null);
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    walk(&schema, &defs, "", Some(&defaults), &mut out);
    out
}

/// The reference as a Markdown page: a title, `intro`, and one table row per setting.
pub fn markdown<C: ServiceConfig + JsonSchema>(title: &str, intro: &str) -> String {
    let mut s = format!(
        "# {title}\n\n<!-- Generated from the config types by `just gen-docs`; a test fails when \
         this page differs from what the code generates. -->\n\n{intro}\n\n{}",
        table_head(&["key", "type", "default", "meaning"])
    );
    for set in settings::<C>() {
        let default = if set.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", escape(&set.default))
        };
        s.push_str(&table_row(&[
            &format!("`{}`", set.key),
            &set.kind,
            &default,
            &escape(&set.description),
        ]));
    }
    s
}

/// A Markdown table's header row and its rule.
pub(crate) fn table_head(columns: &[&str]) -> String {
    format!(
        "| {} |\n|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    )
}

/// One Markdown table row of cells already formatted.
pub(crate) fn table_row(cells: &[&str]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// Text for a table cell: a `|` would end the cell.
pub(crate) fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

fn resolve<'a>(node: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .map(|d| resolve(d, defs))
            .unwrap_or(node),
        None => node,
    }
}

/// The one non-null branch of an `Option`'s `anyOf`, if that is what `node` is.
fn unwrap_option(node: &Value) -> Option<&Value> {
    let branches = node.get("anyOf")?.as_array()?;
    let non_null: Vec<&Value> = branches
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
        .collect();
    (non_null.len() == 1 && branches.len() == 2).then(|| non_null[0])
}

fn is_section(node: &Value) -> bool {
    node.get("properties").is_some()
}

fn description(node: &Value, target: &Value) -> String {
    let text = node
        .get("description")
        .or_else(|| target.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walk(
    node: &Value,
    defs: &Map<String, Value>,
    prefix: &str,
    defaults: Option<&Value>,
    out: &mut Vec<Setting>,
) {
    let node = resolve(node, defs);
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let key = format!("{prefix}{name}");
        // The config's own default; inside a section that is off by default, the
        // section type's.
        let default = defaults
            .and_then(|d| d.get(name))
            .or_else(|| prop.get("default"));
        let optional = unwrap_option(prop);
        let target = resolve(optional.unwrap_or(prop), defs);
        if is_section(target) {
            if matches!(default, None | Some(Value::Null)) {
                // An optional section: off unless given, then with these keys.
                out.push(Setting {
                    key: key.clone(),
                    kind: "optional section".into(),
                    default: "null".into(),
                    description: description(prop, target),
                });
                walk(target, defs, &format!("{key}."), None, out);
            } else {
                walk(target, defs, &format!("{key}."), default, out);
            }
            continue;
        }
        out.push(Setting {
            kind: kind(prop, defs),
            default: default.map(yaml_of).unwrap_or_default(),
            description: description(prop, target),
            key,
        });
    }
}

/// A short type name: `string`, `duration`, `integer`, `bool`, `list of …`, `map of …`,
/// one of the enum's values, and `optional …` for a nullable one.
fn kind(node: &Value, defs: &Map<String, Value>) -> String {
    if let Some(inner) = unwrap_option(node) {
        let mut merged = inner.clone();
        if let (Some(m), Some(f)) = (merged.as_object_mut(), node.get("format")) {
            m.entry("format").or_insert(f.clone());
        }
        return format!("optional {}", kind(&merged, defs));
    }
    let format = node.get("format").and_then(Value::as_str);
    let node = resolve(node, defs);
    if let Some(values) = enum_values(node) {
        return values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if is_section(node) {
        return "section".into();
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let nullable = types.contains(&"null");
    let base = types.iter().find(|t| **t != "null").copied().unwrap_or("");
    let name = match (base, format) {
        // `format: humantime`: a duration as `500ms`, `10s`, `2m` (not ISO 8601's `duration`).
        ("string", Some("humantime")) => "duration".to_string(),
        ("string", _) => "string".into(),
        ("integer", _) => "integer".into(),
        ("number", _) => "number".into(),
        ("boolean", _) => "bool".into(),
        ("array", _) => {
            let item = node
                .get("items")
                .map(|i| kind(i, defs))
                .unwrap_or_else(|| "value".into());
            format!("list of {item}")
        }
        ("object", _) => {
            let value = node
                .get("additionalProperties")
                .filter(|v| v.is_object())
                .map(|v| kind(v, defs))
                .unwrap_or_else(|| "value".into());
            format!("map of {value}")
        }
        _ => "value".into(),
    };
    if nullable {
        format!("optional {name}")
    } else {
        name
    }
}

/// The values of a string enum (`enum: [...]`, or `oneOf` of `const`s).
fn enum_values(node: &Value) -> Option<Vec<String>> {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return Some(values.iter().map(scalar).collect());
    }
    // Documented variants are a `const` each; undocumented ones share one `enum`.
    let branches = node.get("oneOf")?.as_array()?;
    let mut values = Vec::new();
    for b in branches {
        if let Some(c) = b.get("const") {
            values.push(scalar(c));
        } else {
            values.extend(b.get("enum")?.as_array()?.iter().map(scalar));
        }
    }
    Some(values)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A default as a YAML flow value would show it.
fn yaml_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}
