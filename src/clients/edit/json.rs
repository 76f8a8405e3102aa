//! JSON and JSON-with-comments files, edited through jsonc-parser's concrete syntax tree so
//! that comments, trailing commas, indentation and line endings outside the managed entries
//! survive byte for byte. Never reformats what it does not own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstNode, CstObject, CstObjectProp, CstRootNode};
use serde_json::Value;

use super::{EditError, line_column, ordered};
use crate::clients::registry::{Client, Format};

/// What a new file starts as.
const EMPTY: &str = "{}\n";

pub(super) fn apply(
    client: &Client,
    path: &Path,
    existing: Option<&str>,
    managed: &BTreeMap<String, Value>,
    stale: &BTreeSet<&str>,
) -> Result<String, EditError> {
    let text = existing.unwrap_or(EMPTY);
    let root = parse(client.format, path, text)?;
    let object = root_object(&root, path)?;
    let servers = servers(client, &object, path, text)?;
    if let Some(servers) = &servers {
        for name in stale {
            named(servers, name)
                .into_iter()
                .for_each(CstObjectProp::remove);
        }
    }
    if !managed.is_empty() {
        let servers = match servers {
            Some(servers) => servers,
            None => object.object_value_or_set(client.servers_key),
        };
        for (name, value) in managed {
            write_entry(&servers, name, value);
        }
    }
    Ok(root.to_string())
}

pub(super) fn read(
    client: &Client,
    path: &Path,
    text: &str,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Value>, EditError> {
    let root = parse(client.format, path, text)?;
    let object = root_object(&root, path)?;
    let Some(servers) = servers(client, &object, path, text)? else {
        return Ok(BTreeMap::new());
    };
    Ok(names
        .iter()
        .filter_map(|name| {
            let prop = named(&servers, name).into_iter().next()?;
            Some((name.clone(), prop.value()?.to_serde_value()?))
        })
        .collect())
}

pub(super) fn document(client: &Client, path: &Path, text: &str) -> Result<Value, EditError> {
    let root = parse(client.format, path, text)?;
    let object = root_object(&root, path)?;
    Ok(object
        .to_serde_value()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new())))
}

/// Replaces the first property called `name` unless it already holds `value` (so an
/// unchanged entry keeps its own formatting), and drops any later duplicates, which
/// JavaScript parsers would let win.
fn write_entry(servers: &CstObject, name: &str, value: &Value) {
    let mut props = named(servers, name).into_iter();
    match props.next() {
        Some(first) => {
            if first.value().and_then(|v| v.to_serde_value()).as_ref() != Some(value) {
                first.set_value(input(value));
            }
        }
        None => {
            servers.append(name, input(value));
        }
    }
    props.for_each(CstObjectProp::remove);
}

fn parse(format: Format, path: &Path, text: &str) -> Result<CstRootNode, EditError> {
    let lenient = format == Format::Jsonc;
    let options = ParseOptions {
        allow_comments: lenient,
        allow_trailing_commas: lenient,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let error = |source: jsonc_parser::errors::ParseError| EditError::Json {
        path: path.to_path_buf(),
        format,
        line: source.line_display(),
        column: source.column_display(),
        source,
    };
    // The CST builder keeps comments as tokens and so accepts them whatever the options
    // say (jsonc-parser 0.34): strict JSON is checked by a plain parse first.
    if !lenient {
        jsonc_parser::parse_to_ast(text, &jsonc_parser::CollectOptions::default(), &options)
            .map_err(error)?;
    }
    CstRootNode::parse(text, &options).map_err(error)
}

fn root_object(root: &CstRootNode, path: &Path) -> Result<CstObject, EditError> {
    match root.value() {
        Some(value) => value.as_object().ok_or_else(|| EditError::RootNotObject {
            path: path.to_path_buf(),
            found: kind(&value),
        }),
        None => Ok(root.object_value_or_set()),
    }
}

/// The servers object, `None` when the key is absent.
fn servers(
    client: &Client,
    object: &CstObject,
    path: &Path,
    text: &str,
) -> Result<Option<CstObject>, EditError> {
    let Some(value) = object.get(client.servers_key).and_then(|p| p.value()) else {
        return Ok(None);
    };
    match value.as_object() {
        Some(servers) => Ok(Some(servers)),
        None => {
            let (line, column) = line_column(text, offset(&value));
            Err(EditError::ServersNotObject {
                path: path.to_path_buf(),
                key: client.servers_key,
                found: kind(&value),
                line,
                column,
            })
        }
    }
}

fn named(object: &CstObject, name: &str) -> Vec<CstObjectProp> {
    object
        .properties()
        .into_iter()
        .filter(|p| p.decoded_name().as_deref() == Some(name))
        .collect()
}

/// The node's byte offset in the text: the tree is lossless, so it is the length of
/// everything before it.
fn offset(node: &CstNode) -> usize {
    let mut total = 0;
    let mut current = node.clone();
    loop {
        total += current
            .previous_siblings()
            .map(|s| s.to_string().len())
            .sum::<usize>();
        match current.parent() {
            Some(parent) => current = CstNode::Container(parent),
            None => return total,
        }
    }
}

fn kind(node: &CstNode) -> &'static str {
    if node.as_array().is_some() {
        "an array"
    } else if node.as_string_lit().is_some() {
        "a string"
    } else if node.as_number_lit().is_some() {
        "a number"
    } else if node.as_boolean_lit().is_some() {
        "a boolean"
    } else if node.as_null_keyword().is_some() {
        "null"
    } else if node.as_object().is_some() {
        "an object"
    } else {
        "not a JSON value"
    }
}

fn input(value: &Value) -> CstInputValue {
    match value {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(input).collect()),
        Value::Object(map) => CstInputValue::Object(
            ordered(map)
                .into_iter()
                .map(|(k, v)| (k.clone(), input(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, read_managed};
    use super::*;
    use crate::clients::registry::client;
    use serde_json::json;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn one(name: &str, value: Value) -> BTreeMap<String, Value> {
        BTreeMap::from([(name.to_owned(), value)])
    }

    const PATH: &str = "/home/u/.cursor/mcp.json";

    #[test]
    fn a_missing_file_starts_as_a_minimal_document() {
        let c = client("cursor").unwrap();
        let out = apply(
            c,
            Path::new(PATH),
            None,
            &one("gw", json!({"url": "http://h/mcp"})),
            &set(&[]),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\n  \"mcpServers\": {\n    \"gw\": {\n      \"url\": \"http://h/mcp\"\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn an_unchanged_entry_keeps_its_own_formatting() {
        let c = client("cursor").unwrap();
        let text = "{\"mcpServers\": {\"gw\": {  \"url\" :\"http://h/mcp\"}}}";
        let out = apply(
            c,
            Path::new(PATH),
            Some(text),
            &one("gw", json!({"url": "http://h/mcp"})),
            &set(&["gw"]),
        )
        .unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn nothing_to_write_leaves_a_file_without_servers_alone() {
        let c = client("cursor").unwrap();
        let text = "{ \"other\": 1 }";
        let out = apply(
            c,
            Path::new(PATH),
            Some(text),
            &BTreeMap::new(),
            &set(&["gw"]),
        )
        .unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn duplicates_of_a_managed_name_collapse_to_one() {
        let c = client("cursor").unwrap();
        let text = "{\n  \"mcpServers\": {\n    \"gw\": {\"url\": \"a\"},\n    \"gw\": {\"url\": \"b\"}\n  }\n}\n";
        let want = json!({"url": "http://h/mcp"});
        let out = apply(
            c,
            Path::new(PATH),
            Some(text),
            &one("gw", want.clone()),
            &set(&[]),
        )
        .unwrap();
        let read = read_managed(c, Path::new(PATH), &out, &set(&["gw"])).unwrap();
        assert_eq!(read, one("gw", want));
        assert_eq!(out.matches("\"gw\"").count(), 1, "{out}");
    }

    #[test]
    fn strict_json_refuses_comments_with_the_position() {
        let c = client("claude-code").unwrap();
        let text = "{\n  // no\n  \"a\": 1\n}";
        let err = apply(
            c,
            Path::new("/h/.claude.json"),
            Some(text),
            &BTreeMap::new(),
            &set(&[]),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                EditError::Json {
                    line: 2,
                    column: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("/h/.claude.json:2:3: not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn a_root_that_is_not_an_object_is_refused() {
        let c = client("cursor").unwrap();
        let err = apply(c, Path::new(PATH), Some("[1]"), &BTreeMap::new(), &set(&[])).unwrap_err();
        assert!(
            matches!(
                err,
                EditError::RootNotObject {
                    found: "an array",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn servers_of_the_wrong_type_are_refused_with_their_position() {
        let c = client("vscode").unwrap();
        let text = "{\n  // x\n  \"servers\": [\"a\"],\n}";
        let err = read_managed(c, Path::new("/p/mcp.json"), text, &set(&["gw"])).unwrap_err();
        assert!(
            matches!(
                err,
                EditError::ServersNotObject {
                    line: 3,
                    column: 14,
                    found: "an array",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "/p/mcp.json:3:14: `servers` is an array, not a table of servers"
        );
    }
}
