//! The manifest standard: schema types for v1.0 and v1.1, decoding with file:line:column
//! diagnostics, semantic validation against policies, and the JSON Schema.
//!
//! Everything here works on text it is given; it never reads files or talks to the network,
//! so a bad manifest can be checked anywhere (CLI, git hooks, the agent) with the same result.

pub mod decode;
pub mod diagnostic;
pub mod order;
pub mod parse;
pub mod policy;
pub mod schema;
pub mod types;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use types::*;
pub use validate::{
    Checked, CommandCheck, Host, MAX_FILE_BYTES, RepoFiles, TargetRuntime, check, check_with,
    host_command_check,
};

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
    /// When the file's bytes were not UTF-8: where the first bad byte is. `text` is then
    /// only the valid part before it, and checking the file reports this instead of
    /// parsing it, since a file that is not text is a bad file, not a missing one.
    pub not_utf8: Option<NotUtf8>,
    /// The file's size in bytes as stored; `text` is empty when a file over the size
    /// `check` reads was left unread (see [`TextFile::too_large`]).
    pub size: u64,
}

/// The first byte of a file that is not UTF-8, located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUtf8 {
    /// Counted from 0, as `cmp` and `xxd` show it.
    pub offset: usize,
    pub byte: u8,
    pub at: diagnostic::Position,
}

impl TextFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        TextFile {
            path: path.into(),
            size: text.len() as u64,
            text,
            not_utf8: None,
        }
    }

    /// A file too large to be read at all: only its size is kept, and `check` reports it.
    pub fn too_large(path: impl Into<String>, size: u64) -> Self {
        TextFile {
            path: path.into(),
            text: String::new(),
            not_utf8: None,
            size,
        }
    }

    /// A file as read from disk or git: its text, or, when it is not UTF-8, the valid part
    /// and where the first bad byte is.
    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => TextFile::new(path, text),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
                let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
                let at = diagnostic::Position {
                    line: valid.matches('\n').count() + 1,
                    column: valid[line_start..].chars().count() + 1,
                };
                TextFile {
                    path: path.into(),
                    text: valid.to_owned(),
                    size: bytes.len() as u64,
                    not_utf8: Some(NotUtf8 {
                        offset,
                        byte: bytes[offset],
                        at,
                    }),
                }
            }
        }
    }

    /// The error of a file too large to be read (see [`MAX_FILE_BYTES`]), if it is.
    pub fn size_error(&self) -> Option<Diagnostic> {
        let size = self.size.max(self.text.len() as u64);
        (size > MAX_FILE_BYTES as u64).then(|| Diagnostic {
            severity: diagnostic::Severity::Error,
            file: self.path.clone(),
            line: 1,
            column: 1,
            path: String::new(),
            message: format!(
                "the file is {size} bytes; at most {} KiB is read",
                MAX_FILE_BYTES / 1024
            ),
        })
    }

    /// The error that a file that is not UTF-8 gets instead of being parsed.
    pub fn encoding_error(&self) -> Option<Diagnostic> {
        let bad = self.not_utf8?;
        let mut d = diagnostic::Diagnostics::new(self.path.clone());
        d.error(
            bad.at,
            "",
            format!(
                "not UTF-8 text: byte 0x{:02x} at offset {} (line {}, column {}) is not valid \
                 UTF-8; save the file as UTF-8",
                bad.byte, bad.offset, bad.at.line, bad.at.column
            ),
        );
        d.into_vec().pop()
    }
}

/// A manifest that must pass [`check`], for unit tests of what comes after it: images
/// under `registry.local/` and programs under `/opt/mcp` are trusted.
#[cfg(test)]
pub(crate) fn checked_for_tests(yaml: &str) -> Checked {
    check_for_tests(yaml).expect("a valid manifest")
}

/// [`check`] of `yaml` alone, trusting what [`checked_for_tests`] trusts.
#[cfg(test)]
pub(crate) fn check_for_tests(yaml: &str) -> Result<Checked, Vec<Diagnostic>> {
    let files = RepoFiles {
        manifest: TextFile::new(MANIFEST_FILE, yaml),
        policies: Vec::new(),
        trust: None,
    };
    let mut trust = policy::TrustPolicy::shipped();
    trust.allowed_images = vec!["registry.local/".into()];
    trust.allowed_commands = vec!["/opt/mcp".into()];
    check(&files, &trust)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let f = TextFile::from_bytes(
            "m.yaml",
            b"version: \"1.1\"\nservers: [] # caf\xc3\xa9 \xff\n".to_vec(),
        );
        let bad = f.not_utf8.unwrap();
        assert_eq!(bad.offset, 35);
        assert_eq!(bad.byte, 0xff);
        // Columns count characters, like every other diagnostic: `é` is one.
        assert_eq!(
            bad.at,
            diagnostic::Position {
                line: 2,
                column: 20
            }
        );
        assert_eq!(f.text, "version: \"1.1\"\nservers: [] # café ");
        let d = f.encoding_error().unwrap();
        assert_eq!(
            d.to_string(),
            "m.yaml:2:20: error: not UTF-8 text: byte 0xff at offset 35 (line 2, column 20) \
             is not valid UTF-8; save the file as UTF-8"
        );
        assert_eq!(TextFile::from_bytes("ok", b"a: 1".to_vec()).not_utf8, None);
    }

    #[test]
    fn policy_and_trust_files_that_are_not_utf8_are_errors_of_the_check() {
        let files = RepoFiles {
            manifest: TextFile::new(MANIFEST_FILE, "version: \"1.1\"\nservers: []\n"),
            policies: vec![TextFile::from_bytes("policies/mine.yaml", b"\xfe".to_vec())],
            trust: Some(TextFile::from_bytes(REPO_TRUST_FILE, b"a: \xc3".to_vec())),
        };
        let errors = check(&files, &crate::manifest::policy::TrustPolicy::shipped()).unwrap_err();
        let located: Vec<(&str, usize, usize)> = errors
            .iter()
            .map(|d| (d.file.as_str(), d.line, d.column))
            .collect();
        assert_eq!(
            located,
            [("policies/mine.yaml", 1, 1), (REPO_TRUST_FILE, 1, 4)]
        );
        assert!(
            errors
                .iter()
                .all(|d| d.message.starts_with("not UTF-8 text"))
        );
    }
    /// What `check` refuses `yaml` for.
    fn errors_of(yaml: String) -> Vec<Diagnostic> {
        check_for_tests(&yaml).unwrap_err()
    }

    const TWO_SERVERS: &str = "servers:
  - id: github
    version: \"1.0.0\"
    docker: { image: registry.local/github, port: 8080 }
  - id: lightrag
    version: \"1.0.0\"
    docker: { image: registry.local/lightrag, port: 8080 }
";

    #[test]
    fn profiles_name_servers_and_optionally_their_tools() {
        let yaml = format!(
            "version: \"1.2\"\n{TWO_SERVERS}profiles:
  - id: dev
    description: Just the code
    servers: [github]
  - id: research
    servers:
      - github
      - id: lightrag
        tools: [query]
"
        );
        let checked = checked_for_tests(&yaml);
        let profiles = &checked.manifest.profiles;
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles[0].description.as_deref(), Some("Just the code"));
        let research = &profiles[1];
        assert!(research.shows_tool("github", "anything"));
        assert!(research.shows_tool("lightrag", "query"));
        assert!(!research.shows_tool("lightrag", "insert"));
        assert!(!profiles[0].shows_server("lightrag"));
        let whole = types::Profile::whole_fleet(&checked.manifest);
        assert_eq!(whole.id, DEFAULT_PROFILE);
        assert!(whole.shows_tool("lightrag", "insert"));
    }

    #[test]
    fn every_profile_mistake_is_located() {
        let yaml = format!(
            "version: \"1.2\"\n{TWO_SERVERS}profiles:
  - id: default
    servers: [github]
  - id: dev
    servers: [githbu, github, github]
  - id: dev
    servers:
      - id: lightrag
        tools: []
  - id: Bad_Id
    servers: []
  - id: tools
    servers:
      - id: lightrag
        tools: [query, query]
        extra: 1
"
        );
        let errors = errors_of(yaml);
        let got: Vec<(usize, String, String)> = errors
            .iter()
            .map(|d| (d.line, d.path.clone(), d.message.clone()))
            .collect();
        let has = |line: usize, path: &str, words: &str| {
            assert!(
                got.iter()
                    .any(|(l, p, m)| *l == line && p == path && m.contains(words)),
                "no error at line {line} `{path}` saying `{words}` in {got:#?}"
            );
        };
        has(10, "profiles[0].id", "cannot be redefined");
        has(13, "profiles[1].servers[0]", "did you mean `github`?");
        has(13, "profiles[1].servers[2]", "listed twice");
        has(14, "profiles[2].id", "duplicate profile id `dev`");
        has(17, "profiles[2].servers[0].tools", "empty tool list");
        has(18, "profiles[3].id", "invalid profile id `Bad_Id`");
        has(19, "profiles[3].servers", "at least one server");
        has(23, "profiles[4].servers[0].tools[1]", "listed twice");
        has(24, "profiles[4].servers[0].extra", "unknown field");
        assert_eq!(errors.len(), 9, "{got:#?}");
    }

    #[test]
    fn profiles_need_schema_1_2() {
        let yaml = format!("version: \"1.1\"\n{TWO_SERVERS}profiles: []\n");
        let errors = errors_of(yaml);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("needs schema version \"1.2\""),
            "{}",
            errors[0]
        );
    }
}
