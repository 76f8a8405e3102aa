//! The trust policy: which images and local commands a pushed commit may make this host run.
//!
//! It belongs to whoever runs the agent (like Argo CD's AppProject), not to whoever can push
//! to the manifest repo. A repo may carry its own `trust-policy.yaml`, which can only narrow
//! the agent's: something runs only when both allow it.

use std::path::{Component, Path};

use crate::manifest::decode::Decoder;
use crate::manifest::{TextFile, yaml};

pub const TRUST_FIELDS: &[&str] = &["allowed_images", "allowed_commands"];

const DEFAULT: &str = include_str!("../../policies/trust-policy.yaml");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Image repository prefixes, matched at `/` boundaries: `ghcr.io/org/` or `ghcr.io/org`.
    pub allowed_images: Vec<String>,
    /// Directories whose programs the local-process runtime may start.
    pub allowed_commands: Vec<String>,
    /// Where the policy came from, for messages.
    pub source: String,
}

impl TrustPolicy {
    /// The shipped default: only `ghcr.io/liminalcommons/` images, no local commands.
    pub fn shipped() -> TrustPolicy {
        let mut d = Decoder::new("built-in default");
        // The shipped file is tested to be valid.
        Self::decode(&mut d, &TextFile::new("built-in default", DEFAULT)).unwrap_or(TrustPolicy {
            allowed_images: Vec::new(),
            allowed_commands: Vec::new(),
            source: "built-in default".to_owned(),
        })
    }

    /// Reads a trust policy file; problems go to `d`.
    pub fn decode(d: &mut Decoder, file: &TextFile) -> Option<TrustPolicy> {
        let root = match yaml::parse(&file.text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                d.error(
                    "",
                    "the trust policy is empty; list `allowed_images` (and `allowed_commands`)",
                );
                return None;
            }
            Err(e) => {
                d.diags
                    .error(e.at, "", format!("invalid YAML: {}", e.message));
                return None;
            }
        };
        let obj = d.object(&root, "", TRUST_FIELDS)?;
        let list = |d: &mut Decoder, f: &str| {
            obj.get(f)
                .and_then(|n| d.string_list(n, f))
                .unwrap_or_default()
        };
        let allowed_images = list(d, "allowed_images");
        let allowed_commands = list(d, "allowed_commands");
        for (i, dir) in allowed_commands.iter().enumerate() {
            if !dir.starts_with('/') || has_parent_dir(dir) {
                d.error(
                    &format!("allowed_commands[{i}]"),
                    format!("`{dir}` must be an absolute directory without `..`"),
                );
            }
        }
        for (i, prefix) in allowed_images.iter().enumerate() {
            if prefix.is_empty() {
                d.error(
                    &format!("allowed_images[{i}]"),
                    "an empty prefix would allow every image; list registries or organisations",
                );
            }
        }
        Some(TrustPolicy {
            allowed_images,
            allowed_commands,
            source: file.path.clone(),
        })
    }

    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_images
            .iter()
            .any(|p| prefix_at_boundary(image, p))
    }

    /// Whether `command` (an absolute path, possibly holding `{version}`/`{port}`) lies in
    /// an allowed directory. Paths with `..` are never allowed: they could climb out.
    pub fn allows_command(&self, command: &str) -> bool {
        command.starts_with('/')
            && !has_parent_dir(command)
            && self
                .allowed_commands
                .iter()
                .any(|dir| prefix_at_boundary(command, dir))
    }
}

fn has_parent_dir(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
}

/// `ghcr.io/org` allows `ghcr.io/org/x` but not `ghcr.io/org-evil/x`.
fn prefix_at_boundary(value: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    if prefix.ends_with('/') {
        return value.starts_with(prefix);
    }
    value == prefix
        || value
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_allows_only_liminalcommons() {
        let t = TrustPolicy::shipped();
        assert!(t.allows_image("ghcr.io/liminalcommons/mcp-server-n8n"));
        assert!(!t.allows_image("ghcr.io/liminalcommons-evil/x"));
        assert!(!t.allows_image("docker.io/library/nginx"));
        assert!(!t.allows_command("/usr/bin/python3"));
        let mut d = Decoder::new("x");
        assert!(TrustPolicy::decode(&mut d, &TextFile::new("x", DEFAULT)).is_some());
        assert!(d.diags.into_vec().is_empty());
    }

    #[test]
    fn prefixes_match_at_path_boundaries() {
        assert!(prefix_at_boundary("ghcr.io/org/x", "ghcr.io/org"));
        assert!(prefix_at_boundary("ghcr.io/org/x", "ghcr.io/org/"));
        assert!(!prefix_at_boundary("ghcr.io/orgx/y", "ghcr.io/org"));
        assert!(prefix_at_boundary(
            "127.0.0.1:5000/example/server",
            "127.0.0.1:5000/"
        ));
    }

    #[test]
    fn commands_cannot_climb_out_of_allowed_directories() {
        let t = TrustPolicy {
            allowed_images: vec![],
            allowed_commands: vec!["/opt/mcp".into()],
            source: "t".into(),
        };
        assert!(t.allows_command("/opt/mcp/lightrag/{version}/bin/server"));
        assert!(!t.allows_command("/opt/mcp/../../bin/sh"));
        assert!(!t.allows_command("/opt/mcpx/server"));
        assert!(!t.allows_command("opt/mcp/server"));
    }
}
