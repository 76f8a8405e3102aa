//! The managed entry for one gateway profile, in a client's own shape, as a JSON value
//! (Codex's TOML table is converted to and from the same JSON by `edit`). Also finds secrets
//! written in clear in any entry, for validation. This module never writes a secret: a key
//! is always a reference to an environment variable in the client's own syntax, and a
//! client that cannot expand one gets an error, not the key.

use serde_json::{Map, Value, json};

use crate::clients::registry::{Client, EnvRef, Shape};

/// The program a stdio bridge entry runs, unless the caller names another.
pub const DEFAULT_BRIDGE: &str = "mcp-orchestration";

/// The profile whose bridge entry needs no `--profile`.
pub const DEFAULT_PROFILE: &str = "default";

/// What one entry points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The entry's name in the client's file.
    pub name: String,
    /// The gateway URL of the profile, e.g. `http://127.0.0.1:7071/profiles/dev/mcp`.
    pub url: String,
    pub profile: String,
    /// The name of an environment variable holding the gateway key, when one is needed.
    pub key_env: Option<String>,
    /// The program stdio bridges run.
    pub bridge: String,
}

impl Target {
    /// A target with no key and the default bridge program.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        profile: impl Into<String>,
    ) -> Self {
        Target {
            name: name.into(),
            url: url.into(),
            profile: profile.into(),
            key_env: None,
            bridge: DEFAULT_BRIDGE.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error(
        "{client} sends header values verbatim (it cannot read ${key_env}), so the gateway key \
         would have to be written in clear; serve this profile without a key for {client}, or \
         use a client that reads environment variables"
    )]
    NoEnvReference {
        client: &'static str,
        key_env: String,
    },
    #[error(
        "`{name}` is not an environment variable name (letters, digits and _, not starting with a digit)"
    )]
    BadEnvName { name: String },
    #[error("the gateway URL `{url}` is not an http:// or https:// URL")]
    BadUrl { url: String },
    #[error("an entry name must be non-empty and free of control characters, not {name:?}")]
    BadName { name: String },
}

/// The entry `client` gets for `target`.
pub fn render(client: &Client, target: &Target) -> Result<Value, EntryError> {
    check(target)?;
    match client.shape {
        Shape::Bridge => Ok(bridge(target)),
        Shape::Http {
            type_tag,
            url_field,
        } => http(client, target, type_tag, url_field),
        Shape::CodexHttp => Ok(codex(target)),
    }
}

fn check(target: &Target) -> Result<(), EntryError> {
    if target.name.is_empty() || target.name.chars().any(char::is_control) {
        return Err(EntryError::BadName {
            name: target.name.clone(),
        });
    }
    if !(target.url.starts_with("http://") || target.url.starts_with("https://")) {
        return Err(EntryError::BadUrl {
            url: target.url.clone(),
        });
    }
    match &target.key_env {
        Some(name) if !is_env_name(name) => Err(EntryError::BadEnvName { name: name.clone() }),
        _ => Ok(()),
    }
}

/// The bridge gets the whole endpoint URL, so it needs no knowledge of how profiles map to
/// paths; `--profile` names the profile for its messages and its own checks. The key is
/// left out: the bridge reads it from its own environment or the agent's key file.
fn bridge(target: &Target) -> Value {
    let mut args = vec!["gateway".to_owned(), "--url".to_owned(), target.url.clone()];
    if target.profile != DEFAULT_PROFILE {
        args.extend(["--profile".to_owned(), target.profile.clone()]);
    }
    json!({ "command": target.bridge, "args": args })
}

fn http(
    client: &Client,
    target: &Target,
    type_tag: Option<&str>,
    url_field: &str,
) -> Result<Value, EntryError> {
    let mut entry = Map::new();
    if let Some(tag) = type_tag {
        entry.insert("type".to_owned(), json!(tag));
    }
    entry.insert(url_field.to_owned(), json!(target.url));
    if let Some(name) = &target.key_env {
        let reference =
            reference(client.env_ref, name).ok_or_else(|| EntryError::NoEnvReference {
                client: client.id,
                key_env: name.clone(),
            })?;
        entry.insert(
            "headers".to_owned(),
            json!({ "Authorization": format!("Bearer {reference}") }),
        );
    }
    Ok(Value::Object(entry))
}

fn codex(target: &Target) -> Value {
    let mut entry = Map::new();
    entry.insert("url".to_owned(), json!(target.url));
    if let Some(name) = &target.key_env {
        entry.insert("bearer_token_env_var".to_owned(), json!(name));
    }
    Value::Object(entry)
}

/// `name` as the client writes a reference to it, if it can.
fn reference(env_ref: EnvRef, name: &str) -> Option<String> {
    match env_ref {
        EnvRef::Braces | EnvRef::DollarOrBraces => Some(format!("${{{name}}}")),
        EnvRef::EnvColon => Some(format!("${{env:{name}}}")),
        EnvRef::Unsupported => None,
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when `text` is exactly one reference in the client's syntax.
fn is_reference(env_ref: EnvRef, text: &str) -> bool {
    let braced = |prefix: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('}'))
            .is_some_and(is_env_name)
    };
    // Claude Code also reads `${NAME:-default}`.
    let with_default = || {
        text.strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|inner| inner.split_once(":-"))
            .is_some_and(|(name, _)| is_env_name(name))
    };
    match env_ref {
        EnvRef::Braces => braced("${") || with_default(),
        EnvRef::DollarOrBraces => braced("${") || text.strip_prefix('$').is_some_and(is_env_name),
        EnvRef::EnvColon => braced("${env:"),
        EnvRef::Unsupported => false,
    }
}

/// Names that suggest a credential, in headers and environment variables.
fn is_sensitive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "password",
        "cookie",
        "credential",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

/// The credential part of a header value: what follows an auth scheme (`Bearer x` → `x`).
fn credential(value: &str) -> (bool, &str) {
    for scheme in ["bearer ", "basic ", "token "] {
        if value.len() > scheme.len()
            && value.is_char_boundary(scheme.len())
            && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return (true, value[scheme.len()..].trim());
        }
    }
    (false, value.trim())
}

/// Where an entry (ours or the user's) holds a credential in clear rather than as a
/// reference the client expands: `headers.Authorization`, `env.API_KEY`, `args[3]`,
/// `bearer_token`. Empty when there is none.
pub fn secrets_in_clear(client: &Client, entry: &Value) -> Vec<String> {
    let Some(entry) = entry.as_object() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for field in ["headers", "http_headers"] {
        for (name, value) in strings(entry.get(field)) {
            let (has_scheme, secret) = credential(value);
            if (has_scheme || is_sensitive_name(name))
                && !secret.is_empty()
                && !is_reference(client.env_ref, secret)
            {
                found.push(format!("{field}.{name}"));
            }
        }
    }
    for (name, value) in strings(entry.get("env")) {
        if is_sensitive_name(name) && !value.is_empty() && !is_reference(client.env_ref, value) {
            found.push(format!("env.{name}"));
        }
    }
    for field in ["url", "serverUrl", "httpUrl"] {
        if entry
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|url| url_has_secret(client.env_ref, url))
        {
            found.push(field.to_owned());
        }
    }
    found.extend(secret_args(entry.get("args")));
    if entry
        .get("bearer_token")
        .is_some_and(|v| v.as_str() != Some(""))
    {
        found.push("bearer_token".to_owned());
    }
    found
}

/// A password in the URL's user info, or a query parameter with a credential's name,
/// unless it is a reference.
fn url_has_secret(env_ref: EnvRef, url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
        && !is_reference(env_ref, password)
    {
        return true;
    }
    let query = rest
        .split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    query.split('&').any(|pair| {
        pair.split_once('=').is_some_and(|(name, value)| {
            is_sensitive_name(name) && !value.is_empty() && !is_reference(env_ref, value)
        })
    })
}

fn strings(object: Option<&Value>) -> impl Iterator<Item = (&String, &str)> {
    object
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
}

/// A key on a command line is visible to every user in `ps`, so key flags always count; a
/// header passed as an argument (`--header "Authorization: Bearer x"`, as mcp-remote takes
/// it) counts unless it is a reference, in any syntax since the bridge program may expand
/// it itself.
fn secret_args(args: Option<&Value>) -> Vec<String> {
    let Some(args) = args.and_then(Value::as_array) else {
        return Vec::new();
    };
    let any_reference = |text: &str| {
        [EnvRef::DollarOrBraces, EnvRef::EnvColon]
            .into_iter()
            .any(|syntax| is_reference(syntax, text))
    };
    let mut found = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let Some(arg) = arg.as_str() else { continue };
        let flag = ["--api-key", "--token"]
            .iter()
            .any(|f| arg == *f || arg.starts_with(&format!("{f}=")));
        let header = arg.split_once(':').is_some_and(|(name, value)| {
            let (_, secret) = credential(value.trim());
            is_sensitive_name(name.trim()) && !secret.is_empty() && !any_reference(secret)
        });
        if flag || header {
            found.push(format!("args[{i}]"));
        }
    }
    found
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_found_unless_they_are_references() {
        let cursor = crate::clients::registry::client("cursor").unwrap();
        let found = |url: &str| secrets_in_clear(cursor, &serde_json::json!({ "url": url }));
        assert_eq!(found("https://u:pw@mcp.example/mcp"), ["url"]);
        assert_eq!(found("https://mcp.example/mcp?api_key=sk-1&x=1"), ["url"]);
        assert!(found("https://mcp.example/mcp?api_key=${env:KEY}").is_empty());
        assert!(found("https://user@mcp.example/mcp?page=2").is_empty());
        assert!(found("http://127.0.0.1:7071/profiles/dev/mcp").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::registry::{CLIENTS, client};

    fn target(key: Option<&str>) -> Target {
        Target {
            key_env: key.map(str::to_owned),
            ..Target::new(
                "gateway-dev",
                "http://127.0.0.1:7071/profiles/dev/mcp",
                "dev",
            )
        }
    }

    fn render_for(id: &str, key: Option<&str>) -> Result<Value, EntryError> {
        render(client(id).unwrap(), &target(key))
    }

    const URL: &str = "http://127.0.0.1:7071/profiles/dev/mcp";

    #[test]
    fn each_client_gets_its_own_shape_with_a_key_reference() {
        let k = Some("MCP_GATEWAY_KEY");
        assert_eq!(
            render_for("claude-code", k).unwrap(),
            json!({"type": "http", "url": URL,
                   "headers": {"Authorization": "Bearer ${MCP_GATEWAY_KEY}"}})
        );
        assert_eq!(
            render_for("cursor", k).unwrap(),
            json!({"url": URL, "headers": {"Authorization": "Bearer ${env:MCP_GATEWAY_KEY}"}})
        );
        assert_eq!(
            render_for("vscode", k).unwrap(),
            json!({"type": "http", "url": URL,
                   "headers": {"Authorization": "Bearer ${env:MCP_GATEWAY_KEY}"}})
        );
        assert_eq!(
            render_for("windsurf", k).unwrap(),
            json!({"serverUrl": URL,
                   "headers": {"Authorization": "Bearer ${env:MCP_GATEWAY_KEY}"}})
        );
        assert_eq!(
            render_for("gemini-cli", k).unwrap(),
            json!({"type": "http", "url": URL,
                   "headers": {"Authorization": "Bearer ${MCP_GATEWAY_KEY}"}})
        );
        assert_eq!(
            render_for("codex", k).unwrap(),
            json!({"url": URL, "bearer_token_env_var": "MCP_GATEWAY_KEY"})
        );
        assert_eq!(
            render_for("claude-desktop", k).unwrap(),
            json!({"command": "mcp-orchestration",
                   "args": ["gateway", "--url", URL, "--profile", "dev"]})
        );
    }

    #[test]
    fn without_a_key_there_are_no_headers() {
        assert_eq!(render_for("zed", None).unwrap(), json!({"url": URL}));
        assert_eq!(render_for("cursor", None).unwrap(), json!({"url": URL}));
        assert_eq!(render_for("codex", None).unwrap(), json!({"url": URL}));
    }

    #[test]
    fn zed_cannot_reference_a_key_so_rendering_fails_without_the_secret() {
        let err = render_for("zed", Some("MCP_GATEWAY_KEY")).unwrap_err();
        assert_eq!(
            err,
            EntryError::NoEnvReference {
                client: "zed",
                key_env: "MCP_GATEWAY_KEY".into()
            }
        );
        assert!(err.to_string().contains("$MCP_GATEWAY_KEY"), "{err}");
    }

    #[test]
    fn the_default_profile_bridge_has_no_profile_flag_and_a_custom_program() {
        let t = Target {
            bridge: "/opt/mcp/bin/mcp-orchestration".into(),
            ..Target::new("gw", "http://127.0.0.1:7071/mcp", DEFAULT_PROFILE)
        };
        assert_eq!(
            render(client("claude-desktop").unwrap(), &t).unwrap(),
            json!({"command": "/opt/mcp/bin/mcp-orchestration",
                   "args": ["gateway", "--url", "http://127.0.0.1:7071/mcp"]})
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        let c = client("cursor").unwrap();
        let bad_env = render_for("cursor", Some("1BAD-NAME")).unwrap_err();
        assert!(matches!(bad_env, EntryError::BadEnvName { .. }));
        let bad_url = render(c, &Target::new("gw", "ftp://x", "dev")).unwrap_err();
        assert!(matches!(bad_url, EntryError::BadUrl { .. }));
        let bad_name = render(c, &Target::new("", URL, "dev")).unwrap_err();
        assert!(matches!(bad_name, EntryError::BadName { .. }));
    }

    #[test]
    fn rendered_entries_never_hold_a_secret_in_clear() {
        for c in CLIENTS {
            if let Ok(entry) = render(c, &target(Some("MCP_GATEWAY_KEY"))) {
                assert_eq!(
                    secrets_in_clear(c, &entry),
                    Vec::<String>::new(),
                    "{}",
                    c.id
                );
            }
        }
    }

    #[test]
    fn clear_secrets_are_found() {
        let cursor = client("cursor").unwrap();
        let entry = json!({"url": URL, "headers": {
            "Authorization": "Bearer sk-live-123",
            "X-Api-Key": "abc",
            "X-Trace": "on",
            "X-Token": "${env:TOKEN}",
        }});
        assert_eq!(
            secrets_in_clear(cursor, &entry),
            vec!["headers.Authorization", "headers.X-Api-Key"]
        );
        // Claude Code's syntax is not Cursor's: `${env:X}` is a literal there.
        let claude = client("claude-code").unwrap();
        let foreign = json!({"headers": {"Authorization": "Bearer ${env:K}"}});
        assert_eq!(
            secrets_in_clear(claude, &foreign),
            vec!["headers.Authorization"]
        );
        let gemini = client("gemini-cli").unwrap();
        let dollar = json!({"headers": {"Authorization": "Bearer $K"}});
        assert!(secrets_in_clear(gemini, &dollar).is_empty());
        // Zed expands nothing: any credential there is in clear.
        let zed = client("zed").unwrap();
        let zed_entry = json!({"url": URL, "headers": {"Authorization": "Bearer ${K}"}});
        assert_eq!(
            secrets_in_clear(zed, &zed_entry),
            vec!["headers.Authorization"]
        );
    }

    #[test]
    fn clear_secrets_in_codex_env_and_args_are_found() {
        let codex = client("codex").unwrap();
        let entry = json!({"url": URL, "bearer_token": "sk-1",
                           "http_headers": {"Authorization": "Bearer x"},
                           "env_http_headers": {"X-Key": "KEY_VAR"}});
        assert_eq!(
            secrets_in_clear(codex, &entry),
            vec!["http_headers.Authorization", "bearer_token"]
        );
        let desktop = client("claude-desktop").unwrap();
        let entry = json!({"command": "npx",
                           "args": ["mcp-remote", URL, "--header", "Authorization: Bearer abc",
                                    "--api-key=xyz", "--header", "X-Key: ${KEY}"],
                           "env": {"GITHUB_TOKEN": "ghp_1", "DEBUG": "1"}});
        assert_eq!(
            secrets_in_clear(desktop, &entry),
            vec!["env.GITHUB_TOKEN", "args[3]", "args[4]"]
        );
        assert!(secrets_in_clear(desktop, &json!("not an object")).is_empty());
    }
}
