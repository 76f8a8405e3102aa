//! TOML files (Codex's `config.toml`), edited through toml_edit's `DocumentMut` so that
//! comments, other tables and the formatting around them survive. Entries are converted
//! to and from the renderer's JSON shape here, and nowhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value as Json;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

use super::{EditError, line_column, ordered};
use crate::clients::registry::Client;

pub(super) fn apply(
    client: &Client,
    path: &Path,
    existing: Option<&str>,
    managed: &BTreeMap<String, Json>,
    stale: &BTreeSet<&str>,
) -> Result<String, EditError> {
    let text = existing.unwrap_or("");
    let mut doc = parse(client, path, text)?;
    let key = client.servers_key;
    if let Some(servers) = doc.get_mut(key).and_then(Item::as_table_like_mut) {
        for name in stale {
            servers.remove(name);
        }
    }
    if !managed.is_empty() {
        if !doc.contains_key(key) {
            // Implicit: only the `[mcp_servers.NAME]` headers appear, as Codex's docs write them.
            let mut table = Table::new();
            table.set_implicit(true);
            doc.insert(key, Item::Table(table));
        }
        for (name, value) in managed {
            write_entry(&mut doc[key], path, name, value)?;
        }
    }
    Ok(doc.to_string())
}

pub(super) fn read(
    client: &Client,
    path: &Path,
    text: &str,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Json>, EditError> {
    let doc = parse(client, path, text)?;
    let Some(servers) = doc.get(client.servers_key).and_then(Item::as_table_like) else {
        return Ok(BTreeMap::new());
    };
    Ok(names
        .iter()
        .filter_map(|name| Some((name.clone(), item_to_json(servers.get(name)?)?)))
        .collect())
}

pub(super) fn document(client: &Client, path: &Path, text: &str) -> Result<Json, EditError> {
    let doc = parse(client, path, text)?;
    Ok(item_to_json(doc.as_item()).unwrap_or_else(|| Json::Object(serde_json::Map::new())))
}

/// Parses with spans (to place errors), then checks the servers key is a table.
fn parse(client: &Client, path: &Path, text: &str) -> Result<DocumentMut, EditError> {
    let doc = toml_edit::Document::parse(text.to_owned()).map_err(|source| {
        let (line, column) = line_column(text, source.span().map_or(0, |s| s.start));
        EditError::Toml {
            path: path.to_path_buf(),
            line,
            column,
            source: Box::new(source),
        }
    })?;
    if let Some(item) = doc.get(client.servers_key)
        && !item.is_table_like()
    {
        let (line, column) = line_column(text, item.span().map_or(0, |s| s.start));
        return Err(EditError::ServersNotObject {
            path: path.to_path_buf(),
            key: client.servers_key,
            found: item.type_name(),
            line,
            column,
        });
    }
    Ok(doc.into_mut())
}

/// Replaces `name` unless it already holds `value`; a replaced `[table]` keeps its place
/// in the file and the comments above it.
fn write_entry(servers: &mut Item, path: &Path, name: &str, value: &Json) -> Result<(), EditError> {
    let not_toml = |why| EditError::NotToml {
        path: path.to_path_buf(),
        name: name.to_owned(),
        why,
    };
    let Some(map) = value.as_object() else {
        return Err(not_toml("an entry must be an object"));
    };
    let current = servers.get(name).and_then(item_to_json);
    if current.as_ref() == Some(value) {
        return Ok(());
    }
    let inline = inline_table(map).map_err(not_toml)?;
    match servers {
        Item::Table(table) => {
            let mut entry = inline.into_table();
            if let Some(Item::Table(old)) = table.get(name) {
                entry.set_position(old.position());
                *entry.decor_mut() = old.decor().clone();
            }
            table.insert(name, Item::Table(entry));
        }
        Item::Value(Value::InlineTable(table)) => {
            table.insert(name, Value::InlineTable(inline));
        }
        _ => return Err(not_toml("the servers key is not a table")),
    }
    Ok(())
}

fn inline_table(map: &serde_json::Map<String, Json>) -> Result<InlineTable, &'static str> {
    let mut table = InlineTable::new();
    for (key, value) in ordered(map) {
        table.insert(key, to_toml(value)?);
    }
    Ok(table)
}

fn to_toml(value: &Json) -> Result<Value, &'static str> {
    Ok(match value {
        Json::Null => return Err("TOML has no null"),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) if n.is_f64() => Value::from(f),
            _ => return Err("a number beyond TOML's 64-bit integers"),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(to_toml(item)?);
            }
            Value::Array(array)
        }
        Json::Object(map) => Value::InlineTable(inline_table(map)?),
    })
}

fn item_to_json(item: &Item) -> Option<Json> {
    match item {
        Item::None => None,
        Item::Value(value) => Some(value_to_json(value)),
        Item::Table(table) => Some(Json::Object(
            table
                .iter()
                .filter_map(|(k, v)| Some((k.to_owned(), item_to_json(v)?)))
                .collect(),
        )),
        Item::ArrayOfTables(tables) => Some(Json::Array(
            tables
                .iter()
                .filter_map(|t| item_to_json(&Item::Table(t.clone())))
                .collect(),
        )),
    }
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::String(s) => Json::from(s.value().as_str()),
        Value::Integer(i) => Json::from(*i.value()),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f.value()).map_or(Json::Null, Json::Number)
        }
        Value::Boolean(b) => Json::from(*b.value()),
        Value::Datetime(d) => Json::from(d.value().to_string()),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::InlineTable(table) => Json::Object(
            table
                .iter()
                .map(|(k, v)| (k.to_owned(), value_to_json(v)))
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

    const PATH: &str = "/home/u/.codex/config.toml";

    fn codex() -> &'static Client {
        client("codex").unwrap()
    }

    #[test]
    fn a_missing_file_gets_only_the_entry_table() {
        let managed = BTreeMap::from([(
            "gw".to_owned(),
            json!({"url": "http://h/mcp", "bearer_token_env_var": "K"}),
        )]);
        let out = apply(codex(), Path::new(PATH), None, &managed, &set(&[])).unwrap();
        assert_eq!(
            out,
            "[mcp_servers.gw]\nurl = \"http://h/mcp\"\nbearer_token_env_var = \"K\"\n"
        );
        assert_eq!(
            read_managed(codex(), Path::new(PATH), &out, &set(&["gw"])).unwrap(),
            managed
        );
    }

    #[test]
    fn a_replaced_table_keeps_its_place_and_comment() {
        let text = "# ours\n[mcp_servers.gw]\nurl = \"http://old/mcp\"\n\n[tui]\nx = 1\n";
        let managed = BTreeMap::from([("gw".to_owned(), json!({"url": "http://new/mcp"}))]);
        let out = apply(
            codex(),
            Path::new(PATH),
            Some(text),
            &managed,
            &set(&["gw"]),
        )
        .unwrap();
        assert_eq!(
            out,
            "# ours\n[mcp_servers.gw]\nurl = \"http://new/mcp\"\n\n[tui]\nx = 1\n"
        );
    }

    #[test]
    fn inline_servers_tables_are_edited_inline() {
        let text = "mcp_servers = { other = { url = \"http://o\" } }\n";
        let managed = BTreeMap::from([("gw".to_owned(), json!({"url": "http://h/mcp"}))]);
        let out = apply(codex(), Path::new(PATH), Some(text), &managed, &set(&[])).unwrap();
        let read = read_managed(codex(), Path::new(PATH), &out, &set(&["gw", "other"])).unwrap();
        assert_eq!(read["gw"], json!({"url": "http://h/mcp"}));
        assert_eq!(read["other"], json!({"url": "http://o"}));
    }

    #[test]
    fn nested_values_round_trip() {
        let value = json!({"url": "http://h", "http_headers": {"X-A": "1"}, "n": 3, "f": 1.5,
                           "on": true, "tools": ["a", "b"]});
        let managed = BTreeMap::from([("gw".to_owned(), value.clone())]);
        let out = apply(codex(), Path::new(PATH), None, &managed, &set(&[])).unwrap();
        let read = read_managed(codex(), Path::new(PATH), &out, &set(&["gw"])).unwrap();
        assert_eq!(read["gw"], value);
        let null = BTreeMap::from([("gw".to_owned(), json!({"url": null}))]);
        let err = apply(codex(), Path::new(PATH), None, &null, &set(&[])).unwrap_err();
        assert!(matches!(err, EditError::NotToml { .. }), "{err:?}");
    }

    #[test]
    fn invalid_toml_names_path_line_and_column() {
        let text = "model = \"o3\"\n[profiles\nx = 1\n";
        let err = apply(
            codex(),
            Path::new(PATH),
            Some(text),
            &BTreeMap::new(),
            &set(&[]),
        )
        .unwrap_err();
        let EditError::Toml { line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, 2);
        assert!(err.to_string().starts_with(&format!("{PATH}:2:")), "{err}");
    }

    #[test]
    fn servers_of_the_wrong_type_are_refused() {
        for (text, found) in [
            ("model = 1\nmcp_servers = \"x\"\n", "string"),
            ("[[mcp_servers]]\nname = \"a\"\n", "array of tables"),
        ] {
            let err = read_managed(codex(), Path::new(PATH), text, &set(&["gw"])).unwrap_err();
            let EditError::ServersNotObject { found: f, line, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*f, found);
            assert_eq!(*line, if found == "string" { 2 } else { 1 });
        }
    }
}
