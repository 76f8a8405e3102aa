//! Merge-preserving edits of a client's file, as text in and text out: only the managed
//! entries under the client's servers key are inserted, replaced or removed; every other
//! key, server, comment and byte of formatting stays as it was. Also reads back what the
//! file holds under the managed names, in the renderer's JSON shape, for drift checks.
//! Never touches the filesystem (see `deploy`), and never writes text it could not parse.

mod json;
mod toml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::clients::registry::{Client, Format};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}:{line}:{column}: not valid {format}")]
    Json {
        path: PathBuf,
        format: Format,
        line: usize,
        column: usize,
        #[source]
        source: jsonc_parser::errors::ParseError,
    },
    #[error("{path}:{line}:{column}: not valid TOML")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: Box<::toml_edit::TomlError>,
    },
    #[error("{path}: the document is {found}, not an object of settings")]
    RootNotObject { path: PathBuf, found: &'static str },
    #[error("{path}:{line}:{column}: `{key}` is {found}, not a table of servers")]
    ServersNotObject {
        path: PathBuf,
        key: &'static str,
        found: &'static str,
        line: usize,
        column: usize,
    },
    #[error("{path}: the entry `{name}` has no TOML form: {why}")]
    NotToml {
        path: PathBuf,
        name: String,
        why: &'static str,
    },
}

/// The new text of the file at `path` (named in errors only) whose current text is
/// `existing` (`None` when it does not exist): `managed` written under the client's
/// servers key, and the names in `previously_managed` that are no longer managed removed.
/// Returns `existing` unchanged, byte for byte, when the entries are already as wanted.
pub fn apply(
    client: &Client,
    path: &Path,
    existing: Option<&str>,
    managed: &BTreeMap<String, Value>,
    previously_managed: &BTreeSet<String>,
) -> Result<String, EditError> {
    let stale: BTreeSet<&str> = previously_managed
        .iter()
        .filter(|name| !managed.contains_key(*name))
        .map(String::as_str)
        .collect();
    let text = existing.filter(|t| !t.trim().is_empty());
    match client.format {
        Format::Json | Format::Jsonc => json::apply(client, path, text, managed, &stale),
        Format::Toml => toml::apply(client, path, text, managed, &stale),
    }
}

/// What the file's text holds under `names` in the client's servers key, in the JSON shape
/// `entry::render` produces; names it does not hold are absent from the map.
pub fn read_managed(
    client: &Client,
    path: &Path,
    text: &str,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Value>, EditError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    match client.format {
        Format::Json | Format::Jsonc => json::read(client, path, text, names),
        Format::Toml => toml::read(client, path, text, names),
    }
}

/// The whole file as JSON (TOML converted the same way as entries), for display and for
/// comparing what lies outside the managed entries.
pub fn to_json(client: &Client, path: &Path, text: &str) -> Result<Value, EditError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match client.format {
        Format::Json | Format::Jsonc => json::document(client, path, text),
        Format::Toml => toml::document(client, path, text),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// The order keys are written in: what a reader looks for first, then the rest by name,
/// so output does not depend on serde_json's map ordering.
fn key_rank(key: &str) -> usize {
    const FIRST: &[&str] = &[
        "type",
        "command",
        "args",
        "url",
        "serverUrl",
        "httpUrl",
        "headers",
        "env",
    ];
    FIRST.iter().position(|k| *k == key).unwrap_or(FIRST.len())
}

fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| key_rank(a).cmp(&key_rank(b)).then_with(|| a.cmp(b)));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, text.find('f').unwrap()), (3, 1));
        assert_eq!(line_column(text, "ab\ncdé".len()), (2, 4));
        assert_eq!(line_column(text, 999), (3, 2));
    }

    #[test]
    fn keys_are_ordered_for_readers() {
        let map =
            serde_json::json!({"headers": {}, "zeta": 1, "url": "u", "type": "http", "alpha": 2});
        let keys: Vec<&str> = ordered(map.as_object().unwrap())
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["type", "url", "headers", "alpha", "zeta"]);
    }
}
