//! Version selection: which version each server of the applied manifest runs now, given
//! the registry's tags, what runs, the failed-version memory and the operators' rollback
//! pins, and so the whole desired state. Pure: the sync loop reads its inputs (one trip to
//! the store, one runtime listing) and hands them here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use semver::Version;

use super::desired::{Desired, DesiredProblem, desired_state};
use crate::manifest::{Checked, Server, VersionStrategy};
use crate::runtime::{Instance, RuntimeKind};
use crate::store::FailedVersion;

/// What one selection reads.
pub struct Inputs<'a> {
    pub checked: &'a Checked,
    /// The commit whose manifest is applied.
    pub commit: &'a str,
    pub runtime: RuntimeKind,
    /// What the runtime lists now.
    pub observed: &'a [Instance],
    /// The failed-version memory (every server's).
    pub failed: &'a [FailedVersion],
    /// Operators' rollback pins: server → version.
    pub pins: &'a BTreeMap<String, String>,
    /// Tags per image repository, as last polled.
    pub tags: &'a HashMap<String, Vec<String>>,
    /// Servers whose registry upgrades an operator's sync window holds now: they are
    /// selected as if the registry had offered nothing new (what runs stays).
    pub registry_held: &'a BTreeSet<String>,
}

/// The desired state and what an operator should know about it.
#[derive(Debug, Default)]
pub struct Selection {
    pub desired: Vec<Desired>,
    /// Servers that cannot run here, and why.
    pub problems: Vec<DesiredProblem>,
    /// Newer versions that policies with `auto_update: false` only report.
    pub update_available: BTreeMap<String, String>,
    /// Servers whose desired spec already failed its health gate exactly as it is now,
    /// with why: left alone until the spec changes or an operator retries.
    pub failed: BTreeMap<String, String>,
    /// The versions a sync window holds back: server → the version its policy would
    /// move it to.
    pub held_upgrades: BTreeMap<String, String>,
}

/// The version `server` runs: an operator's pin, else what its update policy resolves to
/// from the tags, the running version and the versions that failed on it. Also returns a
/// newer version the policy only reports, and a newer version a sync window holds back.
fn version_of(server: &Server, inputs: &Inputs<'_>) -> (Version, Option<Version>, Option<Version>) {
    if let Some(v) = inputs
        .pins
        .get(&server.id)
        .and_then(|v| Version::parse(v).ok())
    {
        return (v, None, None);
    }
    let running = inputs
        .observed
        .iter()
        .filter(|i| i.server_id == server.id && i.is_running())
        .max_by_key(|i| i.started_at)
        .map(|i| i.version.clone());
    let failed: BTreeSet<Version> = inputs
        .failed
        .iter()
        .filter(|f| f.server_id == server.id)
        .filter_map(|f| Version::parse(&f.version).ok())
        .collect();
    let image_tags = server
        .docker
        .as_ref()
        .and_then(|d| inputs.tags.get(&d.image));
    let policy = inputs.checked.update_policy(server);
    let r = crate::manifest::policy::resolve(
        &server.version,
        &policy,
        image_tags.map(Vec::as_slice),
        running.as_ref(),
        &failed,
    );
    if !inputs.registry_held.contains(&server.id) {
        return (r.target, r.update_available, None);
    }
    // Held: what it would run had the registry offered nothing new.
    let kept =
        crate::manifest::policy::resolve(&server.version, &policy, None, running.as_ref(), &failed);
    let held = (r.target > kept.target).then_some(r.target);
    (kept.target, r.update_available, held)
}

/// The desired state under `inputs`, with each server's problems, reported updates and
/// failed specs.
pub fn select(inputs: &Inputs<'_>, secret: &dyn Fn(&str) -> Option<String>) -> Selection {
    let mut update_available = BTreeMap::new();
    let mut held_upgrades = BTreeMap::new();
    for server in &inputs.checked.manifest.servers {
        let (_, newer, held) = version_of(server, inputs);
        if let Some(newer) = newer {
            update_available.insert(server.id.clone(), newer.to_string());
        }
        if let Some(held) = held {
            held_upgrades.insert(server.id.clone(), held.to_string());
        }
    }
    let (desired, problems) = desired_state(
        inputs.checked,
        inputs.runtime,
        inputs.commit,
        &|s| version_of(s, inputs).0,
        secret,
    );
    // A spec that failed exactly as it is now is left alone; a changed one is a new try.
    let failed = desired
        .iter()
        .filter_map(|d| {
            inputs
                .failed
                .iter()
                .find(|f| {
                    f.server_id == d.server_id()
                        && f.version == d.spec.version.to_string()
                        && f.spec_hash == d.spec.spec_hash
                })
                .map(|f| {
                    (
                        f.server_id.clone(),
                        format!("{} failed: {}", f.version, f.reason),
                    )
                })
        })
        .collect();
    Selection {
        desired,
        problems,
        update_available,
        failed,
        held_upgrades,
    }
}

/// The image repositories the registry poller watches: those of servers whose policy can
/// move them to another version.
pub fn watched_images(checked: &Checked) -> BTreeSet<String> {
    checked
        .manifest
        .servers
        .iter()
        .filter(|s| checked.update_policy(s).version_strategy != VersionStrategy::Pinned)
        .filter_map(|s| s.docker.as_ref().map(|d| d.image.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::checked_for_tests as checked;
    use crate::runtime::{Instance, InstanceState};

    const FLEET: &str = "version: \"1.1\"\nservers:\n  - id: web\n    version: \"1.0.0\"\n    docker: { image: registry.local/web, port: 8080 }\n    update_policy: standard\n  - id: db\n    version: \"2.0.0\"\n    docker: { image: registry.local/db, port: 8080 }\n    update_policy: pinned\n  - id: notify\n    version: \"1.0.0\"\n    docker: { image: registry.local/notify, port: 8080 }\n    update_policy: { version_strategy: semantic, allow: minor, auto_update: false }\n";

    fn running(server: &str, version: &str) -> Instance {
        Instance {
            id: format!("{server}-{version}"),
            server_id: server.into(),
            version: Version::parse(version).unwrap(),
            revision: "c0ffee".into(),
            spec_hash: String::new(),
            state: InstanceState::Running,
            host_port: Some(1),
            host: None,
            tasks: Vec::new(),
            started_at: Some(jiff::Timestamp::UNIX_EPOCH),
            image_digest: None,
        }
    }

    fn failed(server: &str, version: &str, spec_hash: &str) -> FailedVersion {
        FailedVersion {
            server_id: server.into(),
            version: version.into(),
            spec_hash: spec_hash.into(),
            reason: "gate".into(),
            rollout_id: None,
            failed_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn tags(list: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        list.iter()
            .map(|(image, tags)| {
                (
                    (*image).to_owned(),
                    tags.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn version(selection: &Selection, server: &str) -> String {
        selection
            .desired
            .iter()
            .find(|d| d.server_id() == server)
            .map(|d| d.spec.version.to_string())
            .unwrap_or_default()
    }

    fn select_with(
        checked: &Checked,
        observed: &[Instance],
        failed: &[FailedVersion],
        pins: &BTreeMap<String, String>,
        tags: &HashMap<String, Vec<String>>,
    ) -> Selection {
        select(
            &Inputs {
                checked,
                commit: "c0ffee",
                runtime: RuntimeKind::Docker,
                observed,
                failed,
                pins,
                tags,
                registry_held: &BTreeSet::new(),
            },
            &|_| None,
        )
    }

    #[test]
    fn policies_move_within_their_strategy_and_pinned_servers_stay() {
        let c = checked(FLEET);
        let t = tags(&[
            ("registry.local/web", &["1.0.0", "1.2.0", "2.0.0"]),
            ("registry.local/db", &["2.0.0", "2.1.0"]),
            ("registry.local/notify", &["1.0.0", "1.1.0"]),
        ]);
        let s = select_with(&c, &[], &[], &BTreeMap::new(), &t);
        assert_eq!(version(&s, "web"), "1.2.0", "standard follows minors");
        assert_eq!(version(&s, "db"), "2.0.0", "pinned stays");
        assert_eq!(
            version(&s, "notify"),
            "1.0.0",
            "auto_update: false only reports"
        );
        assert_eq!(
            s.update_available,
            BTreeMap::from([("notify".to_owned(), "1.1.0".to_owned())])
        );
        assert!(s.problems.is_empty() && s.failed.is_empty());
    }

    #[test]
    fn a_held_registry_upgrade_keeps_what_runs_and_says_what_waits() {
        let c = checked(FLEET);
        let t = tags(&[("registry.local/web", &["1.0.0", "1.2.0"])]);
        let observed = [running("web", "1.0.0")];
        let pins = BTreeMap::new();
        let held = BTreeSet::from(["web".to_owned()]);
        let inputs = Inputs {
            checked: &c,
            commit: "c0ffee",
            runtime: RuntimeKind::Docker,
            observed: &observed,
            failed: &[],
            pins: &pins,
            tags: &t,
            registry_held: &held,
        };
        let s = select(&inputs, &|_| None);
        assert_eq!(version(&s, "web"), "1.0.0");
        assert_eq!(
            s.held_upgrades,
            BTreeMap::from([("web".to_owned(), "1.2.0".to_owned())])
        );
        // An operator's rollback pin is never held.
        let pins = BTreeMap::from([("web".to_owned(), "1.2.0".to_owned())]);
        let s = select(
            &Inputs {
                pins: &pins,
                ..inputs
            },
            &|_| None,
        );
        assert_eq!(version(&s, "web"), "1.2.0");
        assert!(s.held_upgrades.is_empty());
    }

    #[test]
    fn a_failed_version_is_skipped_and_a_pin_wins_over_the_policy() {
        let c = checked(FLEET);
        let t = tags(&[("registry.local/web", &["1.0.0", "1.1.0", "1.2.0"])]);
        let f = [failed("web", "1.2.0", "whatever")];
        let s = select_with(&c, &[running("web", "1.0.0")], &f, &BTreeMap::new(), &t);
        assert_eq!(version(&s, "web"), "1.1.0");

        let pins = BTreeMap::from([("web".to_owned(), "1.0.0".to_owned())]);
        let s = select_with(&c, &[running("web", "1.1.0")], &[], &pins, &t);
        assert_eq!(
            version(&s, "web"),
            "1.0.0",
            "a rollback pin goes below the running version"
        );
    }

    #[test]
    fn never_below_the_running_version_while_the_policy_allows_it() {
        let c = checked(FLEET);
        // The registry lost 1.3.0's tag; the server runs it.
        let t = tags(&[("registry.local/web", &["1.0.0", "1.2.0"])]);
        let s = select_with(&c, &[running("web", "1.3.0")], &[], &BTreeMap::new(), &t);
        assert_eq!(version(&s, "web"), "1.3.0");
    }

    #[test]
    fn a_spec_that_failed_exactly_as_it_is_is_reported_and_a_changed_one_is_not() {
        let c = checked(FLEET);
        let first = select_with(&c, &[], &[], &BTreeMap::new(), &HashMap::new());
        let db = first
            .desired
            .iter()
            .find(|d| d.server_id() == "db")
            .unwrap();
        let same = [failed("db", "2.0.0", &db.spec.spec_hash)];
        let s = select_with(&c, &[], &same, &BTreeMap::new(), &HashMap::new());
        assert_eq!(s.failed["db"], "2.0.0 failed: gate");
        let changed = [failed("db", "2.0.0", "an older spec")];
        let s = select_with(&c, &[], &changed, &BTreeMap::new(), &HashMap::new());
        assert!(s.failed.is_empty(), "{:?}", s.failed);
    }

    #[test]
    fn only_servers_that_can_move_are_watched_in_the_registry() {
        let c = checked(FLEET);
        assert_eq!(
            watched_images(&c),
            BTreeSet::from([
                "registry.local/notify".to_owned(),
                "registry.local/web".to_owned()
            ])
        );
    }
}
