//! `diff_config`'s comparison, on values: a configuration (what a file holds, or a given
//! payload) against the latest published one and the older ones, as a status and a
//! field-by-field list of changes in a stable order.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One difference, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldChange {
    /// `entry.field.subfield`.
    pub path: String,
    /// `added` (in the published configuration, not in what was compared), `removed`, or
    /// `changed`.
    pub change: String,
    /// What the compared configuration has.
    pub deployed: Option<Value>,
    /// What the published configuration has.
    pub published: Option<Value>,
}

/// `diff_config`'s status of `subject` against `published` and the older artifacts
/// (newest first), with the id of the older one it matches.
pub fn diff_status(
    subject: &Value,
    published: &Value,
    older: &[(String, Value)],
) -> (&'static str, Option<String>) {
    if subject.as_object().is_none_or(|o| o.is_empty()) {
        return ("not_deployed", None);
    }
    if subject == published {
        return ("up_to_date", None);
    }
    match older.iter().find(|(_, payload)| payload == subject) {
        Some((id, _)) => ("outdated", Some(id.clone())),
        None => ("diverged", None),
    }
}

/// Field-level differences between `deployed` and `published`, sorted by path.
pub fn field_diff(deployed: &Value, published: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    walk("", Some(deployed), Some(published), &mut changes);
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn walk(
    path: &str,
    deployed: Option<&Value>,
    published: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    match (deployed, published) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&sub, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_owned(),
            change: match (a, b) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                _ => "changed",
            }
            .to_owned(),
            deployed: a.cloned(),
            published: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_statuses_and_fields() {
        let v1 = json!({ "fleet": { "url": "http://a/mcp" } });
        let v2 = json!({ "fleet": { "url": "http://b/mcp", "headers": { "X": "${env:K}" } } });
        let older = vec![("sha256:v1".to_owned(), v1.clone())];
        assert_eq!(diff_status(&json!({}), &v2, &older), ("not_deployed", None));
        assert_eq!(diff_status(&v2, &v2, &older), ("up_to_date", None));
        assert_eq!(
            diff_status(&v1, &v2, &older),
            ("outdated", Some("sha256:v1".to_owned()))
        );
        let edited = json!({ "fleet": { "url": "http://c/mcp" } });
        assert_eq!(diff_status(&edited, &v2, &older), ("diverged", None));
        let changes = field_diff(&v1, &v2);
        assert_eq!(
            changes,
            vec![
                FieldChange {
                    path: "fleet.headers".into(),
                    change: "added".into(),
                    deployed: None,
                    published: Some(json!({ "X": "${env:K}" })),
                },
                FieldChange {
                    path: "fleet.url".into(),
                    change: "changed".into(),
                    deployed: Some(json!("http://a/mcp")),
                    published: Some(json!("http://b/mcp")),
                },
            ]
        );
        // The same inputs in another key order give the same list.
        let reordered: Value =
            serde_json::from_str(r#"{"fleet":{"headers":{"X":"${env:K}"},"url":"http://b/mcp"}}"#)
                .unwrap();
        assert_eq!(field_diff(&v1, &reordered), changes);
    }
}
