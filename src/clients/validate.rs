//! `validate_config`'s rules, on values: the seed's codes (an empty configuration, too
//! many entries, a missing command or URL, wrong types), a placeholder the client does not
//! expand, a credential in clear, and a gateway path the applied manifest does not serve.
//! Pure: the caller hands it the configuration, the client and what the gateway serves.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::entry;
use super::registry::{Client, EnvRef, Shape};

/// More entries than this in one configuration is a mistake: clients slow down and models
/// get confused well before it.
pub const MAX_ENTRIES: usize = 50;

/// A problem `validate_config` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigProblem {
    /// `EMPTY_CONFIG`, `TOO_MANY_SERVERS`, `INVALID_NAME`, `INVALID_TYPE`, `MISSING_COMMAND`,
    /// `MISSING_URL`, `URL_NOT_SUPPORTED`, `UNRESOLVED_PLACEHOLDER`, `SECRET_IN_CLEAR`,
    /// `UNKNOWN_TARGET` (a warning: a gateway path the applied manifest does not serve).
    pub code: String,
    /// Where: the entry name and field (`fleet.headers.Authorization`).
    pub path: String,
    pub message: String,
}

/// `validate_config`'s rules, on values: (errors, warnings).
pub fn validate_payload(
    c: &Client,
    payload: &Value,
    gateway: Option<&str>,
    known_target: &dyn Fn(&str) -> bool,
) -> (Vec<ConfigProblem>, Vec<ConfigProblem>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let problem = |code: &str, path: &str, message: String| ConfigProblem {
        code: code.to_owned(),
        path: path.to_owned(),
        message,
    };
    let Some(entries) = payload.as_object() else {
        errors.push(problem(
            "INVALID_TYPE",
            "",
            "a configuration is an object of entries by name".to_owned(),
        ));
        return (errors, warnings);
    };
    if entries.is_empty() {
        errors.push(problem(
            "EMPTY_CONFIG",
            "",
            "the configuration has no entry; add a server or a profile".to_owned(),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        errors.push(problem(
            "TOO_MANY_SERVERS",
            "",
            format!(
                "{} entries, more than {MAX_ENTRIES}: use a profile to group servers behind one entry",
                entries.len()
            ),
        ));
    }
    for (name, entry) in entries {
        if name.is_empty() || name.chars().any(char::is_control) {
            errors.push(problem(
                "INVALID_NAME",
                name,
                format!("{name:?} is not an entry name"),
            ));
        }
        let Some(fields) = entry.as_object() else {
            errors.push(problem(
                "INVALID_TYPE",
                name,
                "an entry is an object".to_owned(),
            ));
            continue;
        };
        let at = |field: &str| format!("{name}.{field}");
        let url_field = match c.shape {
            Shape::Bridge => None,
            Shape::Http { url_field, .. } => Some(url_field),
            Shape::CodexHttp => Some("url"),
        };
        let has = |field: &str| fields.contains_key(field);
        match (c.shape, url_field) {
            (Shape::Bridge, _) => {
                if has("url") || has("serverUrl") || has("httpUrl") {
                    errors.push(problem(
                        "URL_NOT_SUPPORTED",
                        name,
                        format!(
                            "{} takes no URLs in its file: use a stdio entry (`command`, `args`), such as the `mcp-orchestration gateway` bridge",
                            c.display_name
                        ),
                    ));
                } else if !has("command") {
                    errors.push(problem(
                        "MISSING_COMMAND",
                        name,
                        "a stdio entry needs `command`".to_owned(),
                    ));
                }
            }
            (_, Some(url_field)) if !has(url_field) && !has("command") => {
                errors.push(problem(
                    "MISSING_URL",
                    name,
                    format!("{} reads an HTTP server's address from `{url_field}`; a stdio entry needs `command`", c.display_name),
                ));
            }
            _ => {}
        }
        let expect_string = |field: &str, errors: &mut Vec<ConfigProblem>| {
            if let Some(v) = fields.get(field)
                && !v.is_string()
            {
                errors.push(problem(
                    "INVALID_TYPE",
                    &at(field),
                    "must be a string".to_owned(),
                ));
            }
        };
        for field in ["command", "url", "serverUrl", "httpUrl", "type"] {
            expect_string(field, &mut errors);
        }
        if let Some(args) = fields.get("args")
            && !args
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        {
            errors.push(problem(
                "INVALID_TYPE",
                &at("args"),
                "must be a list of strings".to_owned(),
            ));
        }
        for field in ["env", "headers", "http_headers"] {
            if let Some(v) = fields.get(field)
                && !v
                    .as_object()
                    .is_some_and(|o| o.values().all(Value::is_string))
            {
                errors.push(problem(
                    "INVALID_TYPE",
                    &at(field),
                    "must be an object of strings".to_owned(),
                ));
            }
        }
        let mut texts = Vec::new();
        strings_in(entry, name, &mut texts);
        for (path, text) in texts {
            if let Some(placeholder) = unresolved(c.env_ref, text) {
                errors.push(problem(
                    "UNRESOLVED_PLACEHOLDER",
                    &path,
                    format!(
                        "`{placeholder}` is not something {} expands: give a value, or an environment variable as {}",
                        c.display_name,
                        match c.env_ref {
                            EnvRef::Braces | EnvRef::DollarOrBraces => "${NAME}",
                            EnvRef::EnvColon => "${env:NAME}",
                            EnvRef::Unsupported => "nothing (this client expands no variables)",
                        }
                    ),
                ));
            }
        }
        for path in entry::secrets_in_clear(c, entry) {
            errors.push(problem(
                "SECRET_IN_CLEAR",
                &format!("{name}.{path}"),
                "a credential written in clear; name an environment variable instead, which the client reads when it starts".to_owned(),
            ));
        }
        if let (Some(base), Some(url)) = (
            gateway,
            url_field
                .and_then(|f| fields.get(f))
                .and_then(Value::as_str),
        ) && let Some(path) = url.strip_prefix(base)
            && !known_target(path)
        {
            warnings.push(problem(
                "UNKNOWN_TARGET",
                &at(url_field.unwrap_or("url")),
                format!("the gateway serves nothing at `{path}` under the applied manifest"),
            ));
        }
    }
    (errors, warnings)
}

/// Every string in `value`, with its path.
fn strings_in<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path.to_owned(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings_in(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                strings_in(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// The first placeholder in `text` the client does not expand: a `${...}` outside its
/// syntax, or a template word such as `{port}` (which only the agent's manifest expands).
fn unresolved(env_ref: EnvRef, text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let dollar = bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{');
        let brace = bytes[i] == b'{' && (i == 0 || bytes[i - 1] != b'$');
        if dollar || brace {
            let open = if dollar { i + 2 } else { i + 1 };
            let len = text[open..].find('}')?;
            let inner = &text[open..open + len];
            let whole = &text[i..open + len + 1];
            let word = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if dollar {
                let fine = match env_ref {
                    EnvRef::Braces => word(inner.split_once(":-").map_or(inner, |(name, _)| name)),
                    EnvRef::DollarOrBraces => word(inner),
                    EnvRef::EnvColon => inner.strip_prefix("env:").is_some_and(word),
                    EnvRef::Unsupported => false,
                };
                if !fine {
                    return Some(whole.to_owned());
                }
            } else if word(inner) {
                return Some(whole.to_owned());
            }
            i = open + len + 1;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(id: &str) -> &'static Client {
        crate::clients::registry::client(id).unwrap()
    }

    fn codes(problems: &[ConfigProblem]) -> Vec<(&str, &str)> {
        problems
            .iter()
            .map(|p| (p.code.as_str(), p.path.as_str()))
            .collect()
    }

    #[test]
    fn validation_reports_each_seed_code_where_it_is() {
        let known = |path: &str| path == "/mcp";
        let gw = Some("http://127.0.0.1:7071");
        let check = |id: &str, payload: Value| validate_payload(client(id), &payload, gw, &known);

        assert_eq!(codes(&check("cursor", json!({})).0), [("EMPTY_CONFIG", "")]);
        assert_eq!(codes(&check("cursor", json!([])).0), [("INVALID_TYPE", "")]);
        let many: serde_json::Map<String, Value> = (0..=MAX_ENTRIES)
            .map(|i| (format!("s{i}"), json!({ "url": "http://127.0.0.1:1/mcp" })))
            .collect();
        assert_eq!(
            codes(&check("cursor", Value::Object(many)).0),
            [("TOO_MANY_SERVERS", "")]
        );
        assert_eq!(
            codes(&check("claude-desktop", json!({ "a": { "args": [] } })).0),
            [("MISSING_COMMAND", "a")]
        );
        assert_eq!(
            codes(&check("claude-desktop", json!({ "a": { "url": "http://x/mcp" } })).0),
            [("URL_NOT_SUPPORTED", "a")]
        );
        assert_eq!(
            codes(&check("windsurf", json!({ "a": { "url": "http://x/mcp" } })).0),
            [("MISSING_URL", "a")]
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "x", "args": "--port 1" } })
                )
                .0
            ),
            [("INVALID_TYPE", "a.args")]
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "x", "env": { "N": 1 } } })
                )
                .0
            ),
            [("INVALID_TYPE", "a.env")]
        );
        // Cursor expands ${env:NAME}; a manifest template word or another syntax is not.
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "command": "srv", "args": ["--port", "{port}", "${HOME}"] } })
                )
                .0
            ),
            [
                ("UNRESOLVED_PLACEHOLDER", "a.args[1]"),
                ("UNRESOLVED_PLACEHOLDER", "a.args[2]")
            ]
        );
        assert!(
            check(
                "cursor",
                json!({ "a": { "url": "http://127.0.0.1:7071/mcp",
                               "headers": { "Authorization": "Bearer ${env:KEY}" } } })
            )
            .0
            .is_empty()
        );
        assert_eq!(
            codes(
                &check(
                    "cursor",
                    json!({ "a": { "url": "http://127.0.0.1:7071/mcp",
                                   "headers": { "Authorization": "Bearer s3cr3t" } } })
                )
                .0
            ),
            [("SECRET_IN_CLEAR", "a.headers.Authorization")]
        );
        // Claude Code reads ${VAR} and ${VAR:-default}.
        assert!(
            check(
                "claude-code",
                json!({ "a": { "type": "http", "url": "http://127.0.0.1:7071/mcp",
                               "headers": { "Authorization": "Bearer ${KEY:-none}" } } })
            )
            .0
            .is_empty()
        );
        let (errors, warnings) = check(
            "cursor",
            json!({ "a": { "url": "http://127.0.0.1:7071/profiles/gone/mcp" } }),
        );
        assert!(errors.is_empty());
        assert_eq!(codes(&warnings), [("UNKNOWN_TARGET", "a.url")]);
    }
}
