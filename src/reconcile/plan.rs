//! `plan(desired, observed, held) -> Plan`: what to change so the observed fleet matches the
//! desired one. Pure and total: every server, desired or observed, gets exactly one action.

use std::collections::BTreeMap;

use super::desired::Desired;
use crate::runtime::Instance;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing runs yet: start it.
    Deploy { desired: Desired },
    /// Instances run, but none from the desired spec: start the desired one and retire these.
    Update {
        desired: Desired,
        from: Vec<Instance>,
    },
    /// The server left the manifest: stop and remove all of its instances.
    Remove { instances: Vec<Instance> },
    /// A running instance matches; `cleanup` holds leftovers (duplicates, dead instances).
    Keep {
        desired: Desired,
        // Boxed: an instance is large, and keeping is the common case of a big enum.
        instance: Box<Instance>,
        cleanup: Vec<Instance>,
    },
    /// Leave the server as it is: an operator stopped it, or this exact spec already
    /// failed and must not be retried on every sync. `reason` says which.
    LeaveAlone { desired: Desired, reason: String },
}

impl Action {
    /// What should run, for every action but a removal.
    pub fn desired(&self) -> Option<&Desired> {
        match self {
            Action::Deploy { desired }
            | Action::Update { desired, .. }
            | Action::Keep { desired, .. }
            | Action::LeaveAlone { desired, .. } => Some(desired),
            Action::Remove { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Deploy { .. } => "deploy",
            Action::Update { .. } => "update",
            Action::Remove { .. } => "remove",
            Action::Keep { .. } => "keep",
            Action::LeaveAlone { .. } => "leave_alone",
        }
    }

    /// Whether executing it changes anything.
    pub fn is_change(&self) -> bool {
        match self {
            Action::Keep { cleanup, .. } => !cleanup.is_empty(),
            Action::LeaveAlone { .. } => false,
            _ => true,
        }
    }
}

/// One action per server, in server-id order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: BTreeMap<String, Action>,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = (&String, &Action)> {
        self.actions.iter().filter(|(_, a)| a.is_change())
    }

    pub fn is_noop(&self) -> bool {
        self.changes().next().is_none()
    }

    /// `deploy a, update b, remove c` or `no changes`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .changes()
            .map(|(id, a)| format!("{} {id}", a.name()))
            .collect();
        if parts.is_empty() {
            "no changes".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// `leave_alone` maps server ids to the reason they must not be touched.
pub fn plan(
    desired: &[Desired],
    observed: &[Instance],
    leave_alone: &BTreeMap<String, String>,
) -> Plan {
    let mut by_server: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for i in observed {
        by_server.entry(i.server_id.as_str()).or_default().push(i);
    }
    let mut actions = BTreeMap::new();
    for d in desired {
        let id = d.server_id();
        let instances = by_server.remove(id).unwrap_or_default();
        let action = if let Some(reason) = leave_alone.get(id) {
            Action::LeaveAlone {
                desired: d.clone(),
                reason: reason.clone(),
            }
        } else if instances.is_empty() {
            Action::Deploy { desired: d.clone() }
        } else {
            // The newest running instance of the desired spec wins; everything else goes.
            // One the orchestrator is bringing back (Swarm) is not replaced meanwhile.
            let keep = instances
                .iter()
                .filter(|i| {
                    (i.is_running() || i.being_replaced()) && i.spec_hash == d.spec.spec_hash
                })
                .max_by_key(|i| (i.started_at, i.id.clone()))
                .copied();
            match keep {
                Some(k) => Action::Keep {
                    desired: d.clone(),
                    instance: Box::new(k.clone()),
                    cleanup: instances
                        .iter()
                        .filter(|i| i.id != k.id)
                        .map(|i| (*i).clone())
                        .collect(),
                },
                None => Action::Update {
                    desired: d.clone(),
                    from: instances.into_iter().cloned().collect(),
                },
            }
        };
        actions.insert(id.to_owned(), action);
    }
    for (id, instances) in by_server {
        actions.insert(
            id.to_owned(),
            Action::Remove {
                instances: instances.into_iter().cloned().collect(),
            },
        );
    }
    Plan { actions }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use semver::Version;

    use super::*;
    use crate::manifest::{HealthCheck, ProcessSpec, RestartPolicy, Transport, UpdatePolicy};
    use crate::reconcile::desired::spec_hash;
    use crate::runtime::{InstanceSpec, InstanceState};

    fn desired(id: &str, version: &str) -> Desired {
        let mut spec = InstanceSpec {
            server_id: id.into(),
            version: Version::parse(version).unwrap(),
            revision: "r1".into(),
            spec_hash: String::new(),
            host_port: None,
            env: BTreeMap::new(),
            restart_policy: RestartPolicy::UnlessStopped,
            docker: None,
            process: Some(ProcessSpec {
                command: "/opt/mcp/server".into(),
                args: vec![],
                env: BTreeMap::new(),
            }),
        };
        spec.spec_hash = spec_hash(&spec);
        Desired {
            spec,
            health: HealthCheck::default(),
            recovery: Default::default(),
            policy: UpdatePolicy::pinned(),
            transport: Transport::StreamableHttp,
            mcp_path: "/mcp".into(),
            depends_on: Vec::new(),
        }
    }

    fn instance(d: &Desired, id: &str, state: InstanceState, started: i64) -> Instance {
        Instance {
            id: id.into(),
            server_id: d.spec.server_id.clone(),
            version: d.spec.version.clone(),
            revision: d.spec.revision.clone(),
            spec_hash: d.spec.spec_hash.clone(),
            host_port: Some(10_000),
            host: None,
            tasks: Vec::new(),
            state,
            started_at: Timestamp::from_second(started).ok(),
            image_digest: None,
        }
    }

    fn names(p: &Plan) -> Vec<(String, &'static str)> {
        p.actions
            .iter()
            .map(|(k, a)| (k.clone(), a.name()))
            .collect()
    }

    #[test]
    fn nothing_observed_deploys_everything() {
        let p = plan(
            &[desired("a", "1.0.0"), desired("b", "1.0.0")],
            &[],
            &BTreeMap::new(),
        );
        assert_eq!(names(&p), [("a".into(), "deploy"), ("b".into(), "deploy")]);
        assert_eq!(p.summary(), "deploy a, deploy b");
    }

    #[test]
    fn a_matching_running_instance_is_kept_and_the_plan_is_a_noop() {
        let d = desired("a", "1.0.0");
        let i = instance(&d, "i1", InstanceState::Running, 1);
        let p = plan(&[d], &[i], &BTreeMap::new());
        assert_eq!(names(&p), [("a".into(), "keep")]);
        assert!(p.is_noop());
        assert_eq!(p.summary(), "no changes");
    }

    #[test]
    fn a_new_version_updates_from_every_old_instance() {
        let old = desired("a", "1.0.0");
        let new = desired("a", "1.1.0");
        let observed = [
            instance(&old, "i1", InstanceState::Running, 1),
            instance(&old, "i0", InstanceState::Exited { code: Some(1) }, 0),
        ];
        let p = plan(std::slice::from_ref(&new), &observed, &BTreeMap::new());
        match &p.actions["a"] {
            Action::Update { desired, from } => {
                assert_eq!(desired.spec.version, Version::new(1, 1, 0));
                assert_eq!(from.len(), 2);
            }
            other => panic!("expected update, got {other:?}"),
        }
    }

    #[test]
    fn a_changed_env_is_an_update_even_at_the_same_version() {
        let old = desired("a", "1.0.0");
        let mut new = desired("a", "1.0.0");
        new.spec.env.insert("LOG_LEVEL".into(), "debug".into());
        new.spec.spec_hash = spec_hash(&new.spec);
        let p = plan(
            &[new],
            &[instance(&old, "i1", InstanceState::Running, 1)],
            &BTreeMap::new(),
        );
        assert_eq!(names(&p), [("a".into(), "update")]);
    }

    #[test]
    fn a_new_revision_alone_changes_nothing() {
        let old = desired("a", "1.0.0");
        let mut new = desired("a", "1.0.0");
        new.spec.revision = "r2".into();
        new.spec.spec_hash = spec_hash(&new.spec);
        let p = plan(
            &[new],
            &[instance(&old, "i1", InstanceState::Running, 1)],
            &BTreeMap::new(),
        );
        assert!(p.is_noop(), "{p:?}");
    }

    #[test]
    fn servers_gone_from_the_manifest_are_removed() {
        let d = desired("gone", "1.0.0");
        let p = plan(
            &[],
            &[instance(&d, "i1", InstanceState::Running, 1)],
            &BTreeMap::new(),
        );
        assert_eq!(names(&p), [("gone".into(), "remove")]);
    }

    #[test]
    fn duplicates_keep_the_newest_and_clean_up_the_rest() {
        let d = desired("a", "1.0.0");
        let observed = [
            instance(&d, "old", InstanceState::Running, 1),
            instance(&d, "new", InstanceState::Running, 2),
            instance(&d, "dead", InstanceState::Exited { code: None }, 3),
        ];
        let p = plan(&[d], &observed, &BTreeMap::new());
        match &p.actions["a"] {
            Action::Keep {
                instance, cleanup, ..
            } => {
                assert_eq!(instance.id, "new");
                let mut ids: Vec<_> = cleanup.iter().map(|i| i.id.as_str()).collect();
                ids.sort();
                assert_eq!(ids, ["dead", "old"]);
            }
            other => panic!("expected keep, got {other:?}"),
        }
        assert!(!p.is_noop());
    }

    #[test]
    fn a_crashed_instance_of_the_desired_spec_is_replaced() {
        let d = desired("a", "1.0.0");
        let p = plan(
            std::slice::from_ref(&d),
            &[instance(
                &d,
                "i1",
                InstanceState::Exited { code: Some(137) },
                1,
            )],
            &BTreeMap::new(),
        );
        assert_eq!(names(&p), [("a".into(), "update")]);
    }

    #[test]
    fn servers_to_leave_alone_are_not_touched() {
        let d = desired("a", "1.0.0");
        let other = desired("a", "0.9.0");
        let held = BTreeMap::from([("a".to_owned(), "stopped by an operator".to_owned())]);
        let observed = [instance(&other, "i1", InstanceState::Running, 1)];
        let p = plan(std::slice::from_ref(&d), &observed, &held);
        assert_eq!(names(&p), [("a".into(), "leave_alone")]);
        assert!(p.is_noop());
        assert!(plan(&[d], &[], &held).is_noop());
    }

    #[test]
    fn applying_a_plan_then_planning_again_is_a_noop() {
        // Simulate execution: every deploy/update yields one running instance of the spec.
        let want = [desired("a", "1.1.0"), desired("b", "1.0.0")];
        let old = desired("a", "1.0.0");
        let gone = desired("c", "1.0.0");
        let observed = vec![
            instance(&old, "a1", InstanceState::Running, 1),
            instance(&gone, "c1", InstanceState::Running, 1),
        ];
        let first = plan(&want, &observed, &BTreeMap::new());
        let mut after = Vec::new();
        for (id, action) in &first.actions {
            match action {
                Action::Deploy { desired } | Action::Update { desired, .. } => after.push(
                    instance(desired, &format!("{id}-new"), InstanceState::Running, 5),
                ),
                Action::Keep { instance, .. } => after.push((**instance).clone()),
                Action::Remove { .. } | Action::LeaveAlone { .. } => {}
            }
        }
        assert!(plan(&want, &after, &BTreeMap::new()).is_noop());
    }
}
