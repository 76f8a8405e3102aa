//! `resolve`: which version a server should run, from its manifest version, its update
//! policy, the tags its registry offers and what the agent remembers. Pure: no network, no
//! clock, so every rule is property-tested.
//!
//! Rules:
//! - `pinned` runs exactly the manifest's version.
//! - `latest` runs the highest stable semver tag; `semantic` the highest tag matching the
//!   constraint (`constraint`, or `allow` relative to the manifest's version, default
//!   `^version`). Tags that are not semver are ignored, pre-releases too unless the policy
//!   allows them, and versions that failed their health gate are skipped.
//! - Never a downgrade: the manifest's version is the floor, and so is the running version
//!   while the policy still allows it (a registry that is down or forgot a tag must not
//!   roll a server back).
//! - `auto_update: false` keeps the floor and only reports the newer version.

use std::collections::BTreeSet;

use semver::Version;

use crate::manifest::{UpdatePolicy, VersionStrategy};

/// What to run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub target: Version,
    /// A newer allowed version the policy does not roll out by itself (`auto_update: false`).
    pub update_available: Option<Version>,
}

/// Parses a tag as a version: `1.2.3` or `v1.2.3`.
pub fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Resolves the version a server runs. `tags` is `None` while the registry has not been
/// read; `running` is the version running now (if any); `failed` the versions that failed
/// their health gate on this server.
pub fn resolve(
    manifest_version: &Version,
    policy: &UpdatePolicy,
    tags: Option<&[String]>,
    running: Option<&Version>,
    failed: &BTreeSet<Version>,
) -> Resolution {
    let pinned = Resolution {
        target: manifest_version.clone(),
        update_available: None,
    };
    let constraint = policy.effective_constraint(manifest_version);
    let allowed = |v: &Version| -> bool {
        if v < manifest_version || failed.contains(v) {
            return false;
        }
        if !v.pre.is_empty() && !policy.allow_prerelease {
            return false;
        }
        match policy.version_strategy {
            VersionStrategy::Pinned => false,
            VersionStrategy::Latest => true,
            VersionStrategy::Semantic => constraint.as_ref().is_none_or(|c| c.matches(v)),
        }
    };
    if policy.version_strategy == VersionStrategy::Pinned {
        return pinned;
    }
    let best_tag = tags
        .unwrap_or_default()
        .iter()
        .filter_map(|t| tag_version(t))
        .filter(|v| allowed(v))
        .max();
    // The running version stays a candidate, so a registry outage never means a rollback.
    let floor = match running.filter(|v| allowed(v)) {
        Some(r) if r > manifest_version => r.clone(),
        _ => manifest_version.clone(),
    };
    match best_tag {
        Some(best) if best > floor => {
            if policy.auto_update {
                Resolution {
                    target: best,
                    update_available: None,
                }
            } else {
                Resolution {
                    target: floor,
                    update_available: Some(best),
                }
            }
        }
        _ => Resolution {
            target: floor,
            update_available: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::manifest::Allow;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn policy(strategy: VersionStrategy, allow: Option<Allow>) -> UpdatePolicy {
        UpdatePolicy {
            auto_update: true,
            version_strategy: strategy,
            allow,
            ..UpdatePolicy::pinned()
        }
    }

    const REGISTRY: &[&str] = &[
        "1.0.0",
        "1.1.0",
        "1.1.1",
        "2.0.0",
        "2.1.0-rc.1",
        "latest",
        "main",
        "v1.2.0",
    ];

    #[test]
    fn semantic_minor_stays_in_the_major() {
        let p = policy(VersionStrategy::Semantic, Some(Allow::Minor));
        let r = resolve(
            &v("1.0.0"),
            &p,
            Some(&tags(REGISTRY)),
            None,
            &BTreeSet::new(),
        );
        assert_eq!(
            r.target,
            v("1.2.0"),
            "v-prefixed tags count, 2.0.0 does not"
        );
    }

    #[test]
    fn semantic_patch_stays_in_the_minor() {
        let p = policy(VersionStrategy::Semantic, Some(Allow::Patch));
        let r = resolve(
            &v("1.1.0"),
            &p,
            Some(&tags(REGISTRY)),
            None,
            &BTreeSet::new(),
        );
        assert_eq!(r.target, v("1.1.1"));
    }

    #[test]
    fn latest_takes_the_highest_stable_tag() {
        let p = policy(VersionStrategy::Latest, None);
        assert_eq!(
            resolve(
                &v("1.0.0"),
                &p,
                Some(&tags(REGISTRY)),
                None,
                &BTreeSet::new()
            )
            .target,
            v("2.0.0")
        );
        let pre = UpdatePolicy {
            allow_prerelease: true,
            ..p
        };
        assert_eq!(
            resolve(
                &v("1.0.0"),
                &pre,
                Some(&tags(REGISTRY)),
                None,
                &BTreeSet::new()
            )
            .target,
            v("2.1.0-rc.1")
        );
    }

    #[test]
    fn pinned_never_moves() {
        let p = UpdatePolicy::pinned();
        assert_eq!(
            resolve(
                &v("1.0.0"),
                &p,
                Some(&tags(REGISTRY)),
                Some(&v("1.1.0")),
                &BTreeSet::new()
            )
            .target,
            v("1.0.0")
        );
    }

    #[test]
    fn failed_versions_are_skipped_and_a_newer_one_is_taken() {
        let p = policy(VersionStrategy::Semantic, Some(Allow::Minor));
        let failed = BTreeSet::from([v("1.2.0")]);
        let r = resolve(
            &v("1.0.0"),
            &p,
            Some(&tags(REGISTRY)),
            Some(&v("1.1.1")),
            &failed,
        );
        assert_eq!(r.target, v("1.1.1"));
        let mut newer = tags(REGISTRY);
        newer.push("1.3.0".into());
        assert_eq!(
            resolve(&v("1.0.0"), &p, Some(&newer), Some(&v("1.1.1")), &failed).target,
            v("1.3.0")
        );
    }

    #[test]
    fn an_unreadable_registry_keeps_the_running_version() {
        let p = policy(VersionStrategy::Semantic, Some(Allow::Minor));
        let r = resolve(&v("1.0.0"), &p, None, Some(&v("1.1.0")), &BTreeSet::new());
        assert_eq!(r.target, v("1.1.0"));
    }

    #[test]
    fn without_auto_update_the_newer_version_is_only_reported() {
        let p = UpdatePolicy {
            auto_update: false,
            ..policy(VersionStrategy::Semantic, Some(Allow::Minor))
        };
        let r = resolve(
            &v("1.0.0"),
            &p,
            Some(&tags(REGISTRY)),
            None,
            &BTreeSet::new(),
        );
        assert_eq!(r.target, v("1.0.0"));
        assert_eq!(r.update_available, Some(v("1.2.0")));
    }

    #[test]
    fn a_manifest_that_lowers_its_version_lowers_the_target() {
        // Running 1.1.0 under ^1; the manifest now pins 0.9.0 semantic (^0.9): 1.1.0 is out.
        let p = policy(VersionStrategy::Semantic, None);
        let r = resolve(
            &v("0.9.0"),
            &p,
            Some(&tags(&["0.9.0", "0.9.4", "1.1.0"])),
            Some(&v("1.1.0")),
            &BTreeSet::new(),
        );
        assert_eq!(r.target, v("0.9.4"));
    }

    fn version() -> impl Strategy<Value = Version> {
        (0u64..4, 0u64..4, 0u64..4, prop::option::of(0u64..3)).prop_map(|(a, b, c, pre)| {
            let mut v = Version::new(a, b, c);
            if let Some(n) = pre {
                v.pre = semver::Prerelease::new(&format!("rc.{n}")).unwrap();
            }
            v
        })
    }

    fn any_policy() -> impl Strategy<Value = UpdatePolicy> {
        (
            prop_oneof![
                Just(VersionStrategy::Pinned),
                Just(VersionStrategy::Latest),
                Just(VersionStrategy::Semantic)
            ],
            prop::option::of(prop_oneof![
                Just(Allow::Patch),
                Just(Allow::Minor),
                Just(Allow::Major)
            ]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(strategy, allow, auto_update, allow_prerelease)| UpdatePolicy {
                    auto_update,
                    allow_prerelease,
                    allow: if strategy == VersionStrategy::Semantic {
                        allow
                    } else {
                        None
                    },
                    ..policy(strategy, None)
                },
            )
    }

    fn tag_text() -> impl Strategy<Value = String> {
        prop_oneof![
            version().prop_map(|v| v.to_string()),
            version().prop_map(|v| format!("v{v}")),
            Just("latest".to_owned()),
            "[a-z0-9.-]{1,8}",
        ]
    }

    proptest! {
        #[test]
        fn resolution_obeys_the_policy(
            manifest in version().prop_filter("stable floor", |v| v.pre.is_empty()),
            policy in any_policy(),
            registry in prop::option::of(prop::collection::vec(tag_text(), 0..12)),
            running in prop::option::of(version()),
            failed in prop::collection::btree_set(version(), 0..3),
        ) {
            let r = resolve(&manifest, &policy, registry.as_deref(), running.as_ref(), &failed);
            // Never a downgrade below the manifest's version.
            prop_assert!(r.target >= manifest);
            if policy.version_strategy == VersionStrategy::Pinned {
                prop_assert_eq!(&r.target, &manifest);
            }
            if r.target != manifest {
                // Anything but the floor is allowed by the policy and offered (or running).
                prop_assert!(policy.auto_update || running.as_ref() == Some(&r.target));
                prop_assert!(!failed.contains(&r.target));
                prop_assert!(r.target.pre.is_empty() || policy.allow_prerelease);
                if let Some(c) = policy.effective_constraint(&manifest) {
                    prop_assert!(c.matches(&r.target), "{} outside {}", r.target, c);
                }
                let offered = registry.iter().flatten().any(|t| tag_version(t).as_ref() == Some(&r.target));
                prop_assert!(offered || running.as_ref() == Some(&r.target));
            }
            // The running version is kept while allowed: no rollback without a reason.
            if let Some(run) = &running
                && policy.version_strategy != VersionStrategy::Pinned
                && *run >= manifest
                && !failed.contains(run)
                && (run.pre.is_empty() || policy.allow_prerelease)
                && policy.effective_constraint(&manifest).is_none_or(|c| c.matches(run))
            {
                prop_assert!(r.target >= *run, "{} < running {}", r.target, run);
            }
            if let Some(newer) = &r.update_available {
                prop_assert!(!policy.auto_update && newer > &r.target);
            }
        }
    }
}
