//! A plan as operators read it: per server the action, the versions it moves between and
//! the manifest fields that changed. Built from a [`Plan`] and the manifests before and
//! after (pure); `mcp-orchestration plan` shows one before a push, and each run keeps the
//! one it applied.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use super::desired::DesiredProblem;
use super::plan::{Action, Plan};
use crate::manifest::Checked;
use crate::runtime::Instance;
pub use crate::store::{PlannedAction, PlannedServer};

/// The plan's lines, one per server of the manifest or of what runs, in server-id order.
pub fn planned_servers(
    plan: &Plan,
    problems: &[DesiredProblem],
    before: Option<&Checked>,
    after: &Checked,
    observed: &[Instance],
) -> Vec<PlannedServer> {
    let mut lines: Vec<PlannedServer> = plan
        .actions
        .iter()
        .map(|(id, action)| line(id, action, before, after))
        .collect();
    for p in problems {
        let running = versions(observed.iter().filter(|i| i.server_id == p.server_id));
        lines.push(PlannedServer {
            server_id: p.server_id.clone(),
            action: PlannedAction::CannotRun,
            from_version: running,
            to_version: None,
            changed_fields: changed_fields(before, after, &p.server_id),
            reason: Some(p.reason.clone()),
            changes: false,
        });
    }
    lines.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    lines
}

/// The servers of `after` whose manifest entry differs from `before`'s (new ones included):
/// a commit that changes a server forgets the versions that failed on it.
pub fn servers_changed(before: &Checked, after: &Checked) -> Vec<String> {
    after
        .manifest
        .servers
        .iter()
        .filter(|server| before.manifest.server(&server.id) != Some(*server))
        .map(|server| server.id.clone())
        .collect()
}

/// `deploy a, update b, remove c` or `no changes`, from the lines.
pub fn summary(lines: &[PlannedServer]) -> String {
    let parts: Vec<String> = lines
        .iter()
        .filter(|l| l.changes)
        .map(|l| format!("{} {}", l.action.as_str(), l.server_id))
        .collect();
    if parts.is_empty() {
        "no changes".to_owned()
    } else {
        parts.join(", ")
    }
}

fn line(id: &str, action: &Action, before: Option<&Checked>, after: &Checked) -> PlannedServer {
    let mut l = PlannedServer {
        server_id: id.to_owned(),
        action: PlannedAction::Keep,
        from_version: None,
        to_version: None,
        changed_fields: Vec::new(),
        reason: None,
        changes: action.is_change(),
    };
    match action {
        Action::Deploy { desired } => {
            l.action = PlannedAction::Deploy;
            l.to_version = Some(desired.spec.version.to_string());
            l.changed_fields = changed_fields(before, after, id);
        }
        Action::Update { desired, from } => {
            l.action = PlannedAction::Update;
            l.from_version = versions(from.iter());
            l.to_version = Some(desired.spec.version.to_string());
            l.changed_fields = changed_fields(before, after, id);
            let version_moved = from.iter().any(|i| i.version != desired.spec.version);
            if version_moved && !l.changed_fields.iter().any(|f| f == "version") {
                // The policy moved it (a newer tag, a pin) though the manifest did not.
                l.changed_fields.push("version".to_owned());
            }
            if l.changed_fields.is_empty() {
                l.reason = Some(
                    "what runs was started from another spec (the agent's settings or a secret changed)"
                        .to_owned(),
                );
            }
        }
        Action::Remove { instances } => {
            l.action = PlannedAction::Remove;
            l.from_version = versions(instances.iter());
        }
        Action::Keep {
            desired,
            instance,
            cleanup,
        } => {
            l.from_version = Some(instance.version.to_string());
            l.to_version = Some(desired.spec.version.to_string());
            l.changed_fields = changed_fields(before, after, id);
            if !cleanup.is_empty() {
                l.reason = Some(format!("{} leftover instance(s) removed", cleanup.len()));
            }
        }
        Action::LeaveAlone { desired, reason } => {
            l.action = PlannedAction::LeaveAlone;
            l.to_version = Some(desired.spec.version.to_string());
            l.changed_fields = changed_fields(before, after, id);
            l.reason = Some(reason.clone());
        }
    }
    l
}

/// The distinct versions of `instances`, oldest first.
fn versions<'a>(instances: impl Iterator<Item = &'a Instance>) -> Option<String> {
    let set: BTreeSet<&semver::Version> = instances.map(|i| &i.version).collect();
    (!set.is_empty()).then(|| {
        set.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// The fields of server `id` that differ between the two manifests; none for a server the
/// first does not have (it is new) or when there is no first.
pub fn changed_fields(before: Option<&Checked>, after: &Checked, id: &str) -> Vec<String> {
    let (Some(before), Some(new)) = (before, after.manifest.server(id)) else {
        return Vec::new();
    };
    let Some(old) = before.manifest.server(id) else {
        return Vec::new();
    };
    let mut fields = BTreeSet::new();
    let (a, b) = (to_value(old), to_value(new));
    diff_paths("", &a, &b, &mut fields);
    // A named policy is compared by what it says, not by its name alone.
    if !fields.iter().any(|f| f.starts_with("update_policy"))
        && before.update_policy(old) != after.update_policy(new)
    {
        fields.insert("update_policy".to_owned());
    }
    fields.into_iter().collect()
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Dotted paths of the leaves (objects descended, arrays compared whole) that differ.
fn diff_paths(at: &str, a: &Value, b: &Value, out: &mut BTreeSet<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                diff_paths(
                    &path,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => {
            out.insert(at.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::checked_for_tests as checked;

    const BEFORE: &str = r#"
version: "1.1"
servers:
  - id: a
    version: "1.0.0"
    docker: { image: registry.local/a, port: 8080 }
    health_check: { interval_seconds: 10 }
    update_policy: standard
  - id: b
    version: "1.0.0"
    docker: { image: registry.local/b, port: 8080 }
"#;

    #[test]
    fn changed_fields_name_the_leaves_that_differ() {
        let before = checked(BEFORE);
        let after = checked(
            &BEFORE
                .replacen("interval_seconds: 10", "interval_seconds: 20", 1)
                .replacen("version: \"1.0.0\"", "version: \"1.1.0\"", 1),
        );
        assert_eq!(
            changed_fields(Some(&before), &after, "a"),
            vec!["health_check.interval_seconds", "version"]
        );
        assert!(changed_fields(Some(&before), &after, "b").is_empty());
        assert!(changed_fields(None, &after, "a").is_empty());
    }

    #[test]
    fn an_unchanged_manifest_has_no_changed_fields_and_a_plain_summary() {
        let before = checked(BEFORE);
        assert!(changed_fields(Some(&before), &before, "a").is_empty());
        assert_eq!(summary(&[]), "no changes");
        let line = PlannedServer {
            server_id: "a".into(),
            action: PlannedAction::Update,
            from_version: Some("1.0.0".into()),
            to_version: Some("1.1.0".into()),
            changed_fields: vec!["version".into()],
            reason: None,
            changes: true,
        };
        let kept = PlannedServer {
            server_id: "b".into(),
            action: PlannedAction::Keep,
            changes: false,
            ..line.clone()
        };
        assert_eq!(summary(&[line, kept]), "update a");
    }

    #[test]
    fn a_version_the_policy_moved_is_a_changed_version_though_the_manifest_is_the_same() {
        use std::collections::{BTreeMap, HashMap};

        use crate::reconcile::{Inputs, decide};
        use crate::runtime::{InstanceState, RuntimeKind};

        let c = checked(BEFORE);
        let running = |server: &str| Instance {
            id: format!("{server}-1"),
            server_id: server.into(),
            version: semver::Version::new(1, 0, 0),
            revision: "c0ffee".into(),
            spec_hash: String::new(),
            state: InstanceState::Running,
            host_port: Some(1),
            host: None,
            tasks: Vec::new(),
            started_at: Some(jiff::Timestamp::UNIX_EPOCH),
            image_digest: None,
        };
        let observed = [running("a"), running("gone")];
        let tags: HashMap<String, Vec<String>> = [(
            "registry.local/a".to_owned(),
            vec!["1.0.0".to_owned(), "1.1.0".to_owned()],
        )]
        .into();
        let decision = decide(
            &Inputs {
                checked: &c,
                commit: "c0ffee",
                runtime: RuntimeKind::Docker,
                observed: &observed,
                failed: &[],
                pins: &BTreeMap::new(),
                tags: &tags,
                registry_held: &Default::default(),
            },
            &["b".to_owned()],
            &|_| None,
        );
        let lines = planned_servers(&decision.plan, &decision.problems, Some(&c), &c, &observed);
        let a = &lines[0];
        assert_eq!(
            (a.server_id.as_str(), a.action),
            ("a", PlannedAction::Update)
        );
        assert_eq!(a.from_version.as_deref(), Some("1.0.0"));
        assert_eq!(a.to_version.as_deref(), Some("1.1.0"));
        assert_eq!(a.changed_fields, vec!["version"]);
        assert_eq!(lines[1].action, PlannedAction::LeaveAlone, "{lines:?}");
        assert_eq!(lines[1].reason.as_deref(), Some("stopped by an operator"));
        assert_eq!(
            (lines[2].server_id.as_str(), lines[2].action),
            ("gone", PlannedAction::Remove)
        );
        assert_eq!(summary(&lines), "update a, remove gone");
    }
}
