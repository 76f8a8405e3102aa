//! The names the gateway gives a backend's tools and prompts: `{server_id}_{name}`.
//!
//! Server ids cannot contain `_` (the manifest refuses them), so everything before the
//! first `_` is the server. Clients accept names matching `^[a-zA-Z0-9_-]{1,64}$` at the
//! strictest, so a name that would not fit is shortened by a rule that depends only on the
//! server id and the backend's own name, the same on every version of the server:
//!
//! - `{server_id}_{name}` when it fits;
//! - otherwise `{server_id}_{kept}-{hash}`: `hash` is the first 8 hex digits of SHA-256
//!   of the backend's name, and `kept` is the backend's name with every character outside
//!   `[a-zA-Z0-9_-]` replaced by `-`, cut so that the whole is 64 characters long.
//!
//! Resources and resource templates keep their URIs, prefixed so that a read finds its
//! server: `mcp-orchestration://{server_id}/{uri}` (RFC 6570 keeps every character of
//! that prefix literal, so a template stays a template).
//!
//! Two of one server's names can still meet (a backend may name a tool exactly like
//! another tool's shortened name): [`Names`] keeps the first in the backend's order and
//! reports the other, which the catalog leaves out with a warning rather than serving two
//! tools under one name.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The longest name the strictest clients accept.
pub const MAX_NAME: usize = 64;
/// How many hex digits of the hash a shortened name ends with.
const HASH_DIGITS: usize = 8;

/// Whether `name` is one every client accepts.
pub fn fits(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The gateway's name for `server`'s `name` (see the module doc).
pub fn qualified(server: &str, name: &str) -> String {
    let plain = format!("{server}_{name}");
    if fits(&plain) {
        return plain;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash = &hex::encode(digest)[..HASH_DIGITS];
    let room = MAX_NAME.saturating_sub(server.len() + 1 + 1 + HASH_DIGITS);
    let kept: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    format!("{server}_{kept}-{hash}")
}

/// The server a gateway name belongs to, if it has the shape of one.
pub fn server_of(qualified: &str) -> Option<&str> {
    qualified
        .split_once('_')
        .map(|(server, _)| server)
        .filter(|s| !s.is_empty())
}

/// The scheme and authority marker of the gateway's resource URIs.
const URI_PREFIX: &str = "mcp-orchestration://";

/// The gateway's URI (or URI template) for `server`'s resource `uri`.
pub fn resource_uri(server: &str, uri: &str) -> String {
    format!("{URI_PREFIX}{server}/{uri}")
}

/// The server and the backend's own URI of a gateway resource URI.
pub fn split_resource_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix(URI_PREFIX)?
        .split_once('/')
        .filter(|(server, _)| !server.is_empty())
}

/// One server's names, gateway name → backend name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names {
    to_backend: HashMap<String, String>,
}

impl Names {
    /// Names `server`'s `backend_names` in their order. Returns the names and the
    /// backend names left out because an earlier one took their gateway name.
    pub fn of<'a>(
        server: &str,
        backend_names: impl IntoIterator<Item = &'a str>,
    ) -> (Names, Vec<String>) {
        let mut names = Names::default();
        let mut clashes = Vec::new();
        for name in backend_names {
            let q = qualified(server, name);
            match names.to_backend.get(&q) {
                Some(first) if first != name => clashes.push(name.to_owned()),
                Some(_) => {}
                None => {
                    names.to_backend.insert(q, name.to_owned());
                }
            }
        }
        (names, clashes)
    }

    /// The backend's name for a gateway name.
    pub fn backend(&self, qualified: &str) -> Option<&str> {
        self.to_backend.get(qualified).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_fits_is_the_server_and_the_name() {
        assert_eq!(qualified("github", "create_issue"), "github_create_issue");
        assert_eq!(server_of("github_create_issue"), Some("github"));
        assert!(fits("github_create_issue"));
    }

    #[test]
    fn a_long_or_foreign_name_is_shortened_the_same_way_every_time() {
        let long = "a".repeat(80);
        let q = qualified("files", &long);
        assert_eq!(q.len(), MAX_NAME);
        assert!(fits(&q), "{q}");
        assert!(q.starts_with("files_aaaa"));
        assert_eq!(q, qualified("files", &long), "stable");
        // Same prefix, another name: another hash.
        let other = format!("{}b", "a".repeat(79));
        assert_ne!(qualified("files", &other), q);

        let dotted = qualified("files", "read.file");
        assert!(fits(&dotted), "{dotted}");
        assert!(dotted.starts_with("files_read-file-"), "{dotted}");
        assert_ne!(dotted, qualified("files", "read-file"));
        assert_eq!(server_of(&dotted), Some("files"));
    }

    #[test]
    fn a_resource_uri_names_its_server_and_keeps_the_backends_uri() {
        let uri = resource_uri("files", "file:///etc/hosts");
        assert_eq!(uri, "mcp-orchestration://files/file:///etc/hosts");
        assert_eq!(
            split_resource_uri(&uri),
            Some(("files", "file:///etc/hosts"))
        );
        let template = resource_uri("ex", "example://echo/{text}");
        assert_eq!(
            split_resource_uri(&template),
            Some(("ex", "example://echo/{text}"))
        );
        assert_eq!(split_resource_uri("file:///etc/hosts"), None);
        assert_eq!(split_resource_uri("mcp-orchestration:///x"), None);
    }

    #[test]
    fn a_clash_keeps_the_first_name_and_reports_the_other() {
        let dotted = "read.file";
        let shortened = qualified("files", dotted);
        let literal = shortened.strip_prefix("files_").unwrap().to_owned();
        let (names, clashes) = Names::of("files", [dotted, literal.as_str(), "list"]);
        assert_eq!(clashes, vec![literal]);
        assert_eq!(names.backend(&shortened), Some(dotted));
        assert_eq!(names.backend("files_list"), Some("list"));
        assert_eq!(names.backend("files_nothing"), None);
    }
}
