//! The tool-set guard's rule: how a new version's tools differ from the running version's,
//! and whether the difference breaks clients. A removed tool breaks every client that
//! calls it; an input schema breaks a client when a call that was valid before may now be
//! refused. Only the top level of the input schema is compared: required arguments, the
//! arguments accepted, their types and enumerations. Anything else that differs
//! (descriptions, annotations, nested schemas) is a change, but not a breaking one.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::store::{ToolChange, ToolDiff};

/// One tool as a server lists it: its name and the rest of its definition as MCP JSON
/// (`description`, `inputSchema`, `annotations`...).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolShape {
    pub name: String,
    pub definition: Value,
}

/// The difference between the tools of `old` and `new`, each list sorted by name.
pub fn diff(old: &[ToolShape], new: &[ToolShape]) -> ToolDiff {
    let old: BTreeMap<&str, &Value> = old
        .iter()
        .map(|t| (t.name.as_str(), &t.definition))
        .collect();
    let new: BTreeMap<&str, &Value> = new
        .iter()
        .map(|t| (t.name.as_str(), &t.definition))
        .collect();
    let mut diff = ToolDiff::default();
    for (name, before) in &old {
        let Some(after) = new.get(name) else {
            diff.removed.push((*name).to_owned());
            continue;
        };
        if before == after {
            continue;
        }
        let empty = Value::Null;
        let breaks = schema_breaks(
            before.get("inputSchema").unwrap_or(&empty),
            after.get("inputSchema").unwrap_or(&empty),
        );
        let why = if breaks.is_empty() {
            let mut why: Vec<String> = ["description", "title", "annotations", "outputSchema"]
                .into_iter()
                .filter(|f| before.get(f) != after.get(f))
                .map(|f| format!("{f} changed"))
                .collect();
            if before.get("inputSchema") != after.get("inputSchema") {
                why.push("input schema changed; calls valid before stay valid".to_owned());
            }
            if why.is_empty() {
                why.push("definition changed".to_owned());
            }
            why
        } else {
            breaks.clone()
        };
        diff.changed.push(ToolChange {
            name: (*name).to_owned(),
            breaking: !breaks.is_empty(),
            why,
        });
    }
    diff.added = new
        .keys()
        .filter(|n| !old.contains_key(*n))
        .map(|n| (*n).to_owned())
        .collect();
    diff
}

/// Why a diff breaks clients, as the gate's failure: `tools_removed` when tools went,
/// else `tools_changed` when a schema refuses calls it accepted; `None` when it does not.
pub fn verdict(diff: &ToolDiff) -> Option<String> {
    if !diff.removed.is_empty() {
        return Some(format!(
            "tools_removed: the new version no longer offers {}",
            quoted(&diff.removed)
        ));
    }
    let breaking: Vec<String> = diff
        .changed
        .iter()
        .filter(|c| c.breaking)
        .map(|c| format!("`{}` ({})", c.name, c.why.join("; ")))
        .collect();
    (!breaking.is_empty()).then(|| {
        format!(
            "tools_changed: calls valid before would be refused by {}",
            breaking.join(", ")
        )
    })
}

/// One line for the rollout's timeline.
pub fn summary(diff: &ToolDiff) -> String {
    if diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty() {
        return "the same tools as the running version".to_owned();
    }
    let mut parts = Vec::new();
    if !diff.added.is_empty() {
        parts.push(format!("added {}", quoted(&diff.added)));
    }
    if !diff.removed.is_empty() {
        parts.push(format!("removed {}", quoted(&diff.removed)));
    }
    if !diff.changed.is_empty() {
        let names: Vec<String> = diff
            .changed
            .iter()
            .map(|c| {
                if c.breaking {
                    format!("{} (breaking)", c.name)
                } else {
                    c.name.clone()
                }
            })
            .collect();
        parts.push(format!("changed {}", quoted(&names)));
    }
    parts.join("; ")
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What in `new` refuses an argument object `old` accepted (top level only).
fn schema_breaks(old: &Value, new: &Value) -> Vec<String> {
    let mut why = Vec::new();
    let required = |s: &Value| -> Vec<String> {
        s.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let was_required = required(old);
    for arg in required(new) {
        if !was_required.contains(&arg) {
            why.push(format!("`{arg}` is now required"));
        }
    }
    let closed = |s: &Value| s.get("additionalProperties") == Some(&Value::Bool(false));
    let empty = serde_json::Map::new();
    let props = |s: &Value| {
        s.get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (before, after) = (props(old), props(new));
    if closed(new) && !closed(old) {
        why.push("arguments it does not name are now refused".to_owned());
    }
    for (arg, was) in &before {
        match after.get(arg) {
            None if closed(new) => why.push(format!("`{arg}` is no longer accepted")),
            None => {}
            Some(now) => why.extend(argument_breaks(arg, was, now)),
        }
    }
    why
}

/// What makes `now` refuse a value `was` accepted: a narrower type or enumeration.
fn argument_breaks(arg: &str, was: &Value, now: &Value) -> Vec<String> {
    let mut why = Vec::new();
    let types = |s: &Value| -> Option<Vec<String>> {
        match s.get("type")? {
            Value::String(t) => Some(vec![t.clone()]),
            Value::Array(ts) => Some(
                ts.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        }
    };
    // "integer" values are numbers too.
    let covers = |allowed: &[String], t: &str| {
        allowed.iter().any(|a| a == t) || (t == "integer" && allowed.iter().any(|a| a == "number"))
    };
    match (types(was), types(now)) {
        (Some(was), Some(now)) if !was.iter().all(|t| covers(&now, t)) => why.push(format!(
            "`{arg}` changed type from {} to {}",
            was.join("|"),
            now.join("|")
        )),
        (None, Some(now)) => why.push(format!("`{arg}` must now be {}", now.join("|"))),
        _ => {}
    }
    match (
        was.get("enum").and_then(Value::as_array),
        now.get("enum").and_then(Value::as_array),
    ) {
        (Some(was), Some(now)) => {
            let gone: Vec<String> = was
                .iter()
                .filter(|v| !now.contains(v))
                .map(Value::to_string)
                .collect();
            if !gone.is_empty() {
                why.push(format!("`{arg}` no longer accepts {}", gone.join(", ")));
            }
        }
        (None, Some(_)) => why.push(format!("`{arg}` now accepts only listed values")),
        _ => {}
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, definition: Value) -> ToolShape {
        ToolShape {
            name: name.to_owned(),
            definition,
        }
    }

    fn echo(schema: Value) -> ToolShape {
        tool(
            "echo",
            json!({ "description": "Echo", "inputSchema": schema }),
        )
    }

    fn text_schema() -> Value {
        json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] })
    }

    #[test]
    fn the_same_tools_make_an_empty_diff_that_breaks_nothing() {
        let tools = [echo(text_schema())];
        let d = diff(&tools, &tools);
        assert_eq!(d, ToolDiff::default());
        assert_eq!(verdict(&d), None);
        assert_eq!(summary(&d), "the same tools as the running version");
    }

    #[test]
    fn a_removed_tool_is_tools_removed_and_an_added_one_breaks_nothing() {
        let old = [echo(text_schema()), tool("sleep", json!({}))];
        let new = [echo(text_schema()), tool("wait", json!({}))];
        let d = diff(&old, &new);
        assert_eq!(d.removed, ["sleep"]);
        assert_eq!(d.added, ["wait"]);
        assert_eq!(
            verdict(&d).unwrap(),
            "tools_removed: the new version no longer offers `sleep`"
        );
        let only_added = diff(&old[..1], &new);
        assert_eq!(verdict(&only_added), None);
        assert_eq!(summary(&only_added), "added `wait`");
    }

    #[test]
    fn a_new_required_argument_is_tools_changed() {
        let mut strict = text_schema();
        strict["properties"]["times"] = json!({ "type": "integer" });
        strict["required"] = json!(["text", "times"]);
        let d = diff(&[echo(text_schema())], &[echo(strict)]);
        assert_eq!(
            d.changed,
            [ToolChange {
                name: "echo".into(),
                breaking: true,
                why: vec!["`times` is now required".into()],
            }]
        );
        assert_eq!(
            verdict(&d).unwrap(),
            "tools_changed: calls valid before would be refused by `echo` (`times` is now required)"
        );
        assert_eq!(summary(&d), "changed `echo (breaking)`");
    }

    #[test]
    fn narrower_types_enums_and_closed_objects_break_wider_ones_do_not() {
        let schema = |arg: Value, closed: bool| {
            let mut s = json!({ "type": "object", "properties": { "n": arg } });
            if closed {
                s["additionalProperties"] = json!(false);
            }
            s
        };
        let breaks = |old: Value, new: Value| schema_breaks(&old, &new);
        assert_eq!(
            breaks(
                schema(json!({"type": "number"}), false),
                schema(json!({"type": "string"}), false)
            ),
            ["`n` changed type from number to string"]
        );
        assert!(
            breaks(
                schema(json!({"type": "integer"}), false),
                schema(json!({"type": ["number", "null"]}), false)
            )
            .is_empty(),
            "a wider type accepts what the narrower did"
        );
        assert_eq!(
            breaks(
                schema(json!({"enum": ["a", "b"]}), false),
                schema(json!({"enum": ["a"]}), false)
            ),
            ["`n` no longer accepts \"b\""]
        );
        assert!(
            breaks(
                schema(json!({"enum": ["a"]}), false),
                schema(json!({"enum": ["a", "b"]}), false)
            )
            .is_empty()
        );
        assert_eq!(
            breaks(schema(json!({}), false), json!({ "type": "object" })),
            Vec::<String>::new(),
            "an argument dropped from an open schema is still accepted"
        );
        assert_eq!(
            breaks(
                schema(json!({}), true),
                json!({ "type": "object", "additionalProperties": false })
            ),
            ["`n` is no longer accepted"]
        );
        assert_eq!(
            breaks(schema(json!({}), false), schema(json!({}), true)),
            ["arguments it does not name are now refused"]
        );
    }

    #[test]
    fn a_compatible_change_is_listed_but_not_breaking() {
        let mut wider = text_schema();
        wider["properties"]["times"] = json!({ "type": "integer" });
        let mut new = echo(wider);
        new.definition["description"] = json!("Echo, maybe twice");
        let d = diff(&[echo(text_schema())], &[new]);
        assert_eq!(d.changed.len(), 1);
        assert!(!d.changed[0].breaking);
        assert_eq!(
            d.changed[0].why,
            [
                "description changed",
                "input schema changed; calls valid before stay valid"
            ]
        );
        assert_eq!(verdict(&d), None);
    }
}
