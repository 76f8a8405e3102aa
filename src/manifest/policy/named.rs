//! Named update policies: the ones shipped in `policies/` and those a manifest repo adds.

use std::collections::BTreeMap;

use crate::manifest::decode::{Decoder, join};
use crate::manifest::parse::{POLICY_FIELDS, update_policy};
use crate::manifest::types::UpdatePolicy;
use crate::manifest::{TextFile, yaml};

pub const POLICY_FILE_FIELDS: &[&str] = &[
    "name",
    "description",
    "auto_update",
    "version_strategy",
    "constraint",
    "allow",
    "allow_prerelease",
    "rollback_on_failure",
    "notification_channel",
    "progress_deadline_seconds",
    "allow_breaking_tool_changes",
];

/// Shipped with the binary so the agent works without a checkout of this repository.
const SHIPPED: &[(&str, &str)] = &[
    (
        "policies/pinned.yaml",
        include_str!("../../../policies/pinned.yaml"),
    ),
    (
        "policies/standard.yaml",
        include_str!("../../../policies/standard.yaml"),
    ),
    (
        "policies/conservative.yaml",
        include_str!("../../../policies/conservative.yaml"),
    ),
    (
        "policies/latest.yaml",
        include_str!("../../../policies/latest.yaml"),
    ),
];

#[derive(Clone, Debug, PartialEq)]
pub struct NamedPolicy {
    pub policy: UpdatePolicy,
    pub description: Option<String>,
    /// Where it was defined, for messages: `policies/standard.yaml`.
    pub source: String,
    pub shipped: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySet {
    by_name: BTreeMap<String, NamedPolicy>,
}

impl PolicySet {
    /// The policies shipped with the agent.
    pub fn shipped() -> PolicySet {
        let mut set = PolicySet::default();
        for (path, text) in SHIPPED {
            let mut d = Decoder::new(*path);
            // The shipped files are tested to be valid; a broken one would fail that test.
            if let Some((name, p)) = decode_file(&mut d, &TextFile::new(*path, *text)) {
                set.by_name.insert(name, NamedPolicy { shipped: true, ..p });
            }
        }
        set
    }

    /// Adds a repository's own policy files. Returns the decoders holding their diagnostics.
    pub fn add_repo_files(&mut self, files: &[TextFile]) -> Vec<Decoder> {
        let mut decoders = Vec::new();
        for file in files {
            let mut d = Decoder::new(file.path.clone());
            if let Some((name, policy)) = decode_file(&mut d, file) {
                if let Some(existing) = self.by_name.get(&name) {
                    let what = if existing.shipped {
                        "is shipped with the agent".to_owned()
                    } else {
                        format!("is already defined in {}", existing.source)
                    };
                    d.error(
                        "name",
                        format!("policy `{name}` {what}; choose another name"),
                    );
                } else if !d.diags.has_errors() {
                    self.by_name.insert(name, policy);
                }
            }
            decoders.push(d);
        }
        decoders
    }

    pub fn get(&self, name: &str) -> Option<&NamedPolicy> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

fn decode_file(d: &mut Decoder, file: &TextFile) -> Option<(String, NamedPolicy)> {
    let root = match yaml::parse(&file.text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            d.error("", "the policy file is empty");
            return None;
        }
        Err(e) => {
            d.diags
                .error(e.at, "", format!("invalid YAML: {}", e.message));
            return None;
        }
    };
    debug_assert!(POLICY_FIELDS.iter().all(|f| POLICY_FILE_FIELDS.contains(f)));
    let (policy, obj) = update_policy(d, &root, "", POLICY_FILE_FIELDS)?;
    let stem = std::path::Path::new(&file.path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let name = match obj.get("name").and_then(|n| d.string(n, "name")) {
        Some(name) if name != stem => {
            d.error(
                "name",
                format!("policy `{name}` must live in a file named `{name}.yaml`"),
            );
            name
        }
        Some(name) => name,
        None => stem,
    };
    let description = obj
        .get("description")
        .and_then(|n| d.string(n, &join("", "description")));
    Some((
        name,
        NamedPolicy {
            policy,
            description,
            source: file.path.clone(),
            shipped: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{Allow, VersionStrategy};

    #[test]
    fn shipped_policies_are_valid_and_complete() {
        for (path, text) in SHIPPED {
            let mut d = Decoder::new(*path);
            assert!(decode_file(&mut d, &TextFile::new(*path, *text)).is_some());
            assert!(d.diags.into_vec().is_empty(), "{path} has problems");
        }
        let set = PolicySet::shipped();
        let names: Vec<_> = set.names().collect();
        assert_eq!(names, ["conservative", "latest", "pinned", "standard"]);
        let standard = &set.get("standard").unwrap().policy;
        assert_eq!(standard.version_strategy, VersionStrategy::Semantic);
        assert_eq!(standard.allow, Some(Allow::Minor));
        assert!(standard.rollback_on_failure && standard.auto_update);
        assert_eq!(
            set.get("conservative").unwrap().policy.allow,
            Some(Allow::Patch)
        );
        assert!(!set.get("pinned").unwrap().policy.auto_update);
    }

    #[test]
    fn a_repo_cannot_redefine_a_shipped_policy() {
        let mut set = PolicySet::shipped();
        let ds = set.add_repo_files(&[TextFile::new(
            "policies/standard.yaml",
            "version_strategy: latest\n",
        )]);
        let diags = ds.into_iter().next().unwrap().diags.into_vec();
        assert!(
            diags[0].message.contains("shipped with the agent"),
            "{diags:?}"
        );
        assert_eq!(
            set.get("standard").unwrap().policy.allow,
            Some(Allow::Minor)
        );
    }

    #[test]
    fn a_repo_adds_its_own_policies() {
        let mut set = PolicySet::shipped();
        let ds = set.add_repo_files(&[TextFile::new(
            "policies/nightly.yaml",
            "version_strategy: latest\nallow_prerelease: true\n",
        )]);
        assert!(!ds[0].diags.has_errors());
        assert!(set.get("nightly").unwrap().policy.allow_prerelease);
    }
}
