//! A small JSON Schema (2020-12) checker for the agent's OpenAPI document: the keywords the
//! document uses (`$ref`, `allOf`, `anyOf`, `oneOf`, `type`, `enum`, `const`, `properties`,
//! `required`, `additionalProperties`, `items`, numeric ranges). Annotations (`format`,
//! `description`, `default`) and `pattern` are not checked.

use serde_json::Value;

/// Every way `value` breaks `schema`, each as `at: what`; `root` resolves `$ref`s.
pub fn violations(root: &Value, schema: &Value, value: &Value) -> Vec<String> {
    violations_at(root, schema, value, "$")
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        _ => false,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn check(root: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            out.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .unwrap_or_else(|| panic!("unresolved $ref {r}"));
        check(root, target, value, at, out);
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(root, sub, value, at, out);
        }
    }
    for (keyword, want_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(any) = s.get(keyword).and_then(Value::as_array) {
            let fits: Vec<Vec<String>> = any
                .iter()
                .map(|sub| violations_at(root, sub, value, at))
                .collect();
            let matching = fits.iter().filter(|v| v.is_empty()).count();
            if matching == 0 || (want_one && matching > 1) {
                out.push(format!(
                    "{at}: {matching} of the {keyword} alternatives fit: {:?}",
                    fits
                ));
            }
        }
    }
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(ns) => ns.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.iter().any(|n| type_matches(n, value)) {
            out.push(format!("{at}: {value} is not of type {t}"));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.iter().any(|o| equal(o, value))
    {
        out.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(c) = s.get("const")
        && !equal(c, value)
    {
        out.push(format!("{at}: {value} is not {c}"));
    }
    if let Some(n) = value.as_f64() {
        let bound = |k: &str| s.get(k).and_then(Value::as_f64);
        if bound("minimum").is_some_and(|m| n < m)
            || bound("maximum").is_some_and(|m| n > m)
            || bound("exclusiveMinimum").is_some_and(|m| n <= m)
            || bound("exclusiveMaximum").is_some_and(|m| n >= m)
        {
            out.push(format!("{at}: {n} is out of range"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                out.push(format!("{at}: `{name}` is required"));
            }
        }
        for (name, v) in obj {
            let here = format!("{at}.{name}");
            match props.and_then(|p| p.get(name)) {
                Some(sub) => check(root, sub, v, &here, out),
                None => {
                    if let Some(extra) = s.get("additionalProperties") {
                        check(root, extra, v, &here, out);
                    }
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (s.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(root, items, v, &format!("{at}[{i}]"), out);
        }
    }
}

fn violations_at(root: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(root, schema, value, at, &mut out);
    out
}

#[test]
fn the_checker_finds_what_breaks_a_schema() {
    let root = serde_json::json!({ "components": { "schemas": { "N": { "type": "integer", "minimum": 1 } } } });
    let schema = serde_json::json!({
        "type": "object",
        "required": ["a"],
        "properties": { "a": { "$ref": "#/components/schemas/N" }, "b": { "enum": ["x"] } },
        "additionalProperties": false,
    });
    assert!(violations(&root, &schema, &serde_json::json!({ "a": 2, "b": "x" })).is_empty());
    assert_eq!(
        violations(
            &root,
            &schema,
            &serde_json::json!({ "a": 0, "b": "y", "c": 1 })
        )
        .len(),
        3
    );
    assert_eq!(violations(&root, &schema, &serde_json::json!({})).len(), 1);
}
