//! The manifest standard: schema types for v1.0 and v1.1, decoding with file:line:column
//! diagnostics, semantic validation against policies, and the JSON Schema.
//!
//! Everything here works on text it is given; it never reads files or talks to the network,
//! so a bad manifest can be checked anywhere (CLI, git hooks, the agent) with the same result.

pub mod decode;
pub mod diagnostic;
pub mod parse;
pub mod schema;
pub mod types;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use types::*;
pub use validate::{Checked, CommandCheck, RepoFiles, check, check_with, host_command_check};

/// The manifest's file name inside a manifest repository.
pub const MANIFEST_FILE: &str = "ecosystem-manifest.yaml";
/// A manifest repository's own (narrowing) trust policy.
pub const REPO_TRUST_FILE: &str = "trust-policy.yaml";
/// The folder of a manifest repository's own named update policies.
pub const REPO_POLICY_DIR: &str = "policies";

/// A file's text and the name to show for it in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextFile {
    pub path: String,
    pub text: String,
}

impl TextFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        TextFile {
            path: path.into(),
            text: text.into(),
        }
    }
}
