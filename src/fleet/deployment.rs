//! The deployment-state view, computed: what each server of the applied manifest is
//! (running, pending, failed, stopped) and why, where it serves, and which instance the
//! monitor probes. Pure: the sync loop hands it the selection, what runs, what the store
//! holds and the previous view.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::view::{FleetView, ServerView};
use crate::health::Target;
use crate::manifest::Server;
use crate::reconcile::Selection;
use crate::runtime::Instance;

/// What one view is made of.
pub struct ViewInputs<'a> {
    /// The applied manifest's servers (none before a revision is in force).
    pub servers: &'a [Server],
    /// The applied manifest's profiles.
    pub profiles: &'a [crate::manifest::Profile],
    pub applied_revision: Option<String>,
    pub head: Option<String>,
    pub source_error: Option<String>,
    pub selection: &'a Selection,
    pub observed: &'a [Instance],
    /// Servers an operator stopped.
    pub held: &'a [String],
    /// Operators' rollback pins: server → version.
    pub pins: &'a BTreeMap<String, String>,
    /// The registry upgrades sync windows hold: server → why, with the version waiting.
    pub window_holds: &'a BTreeMap<String, crate::sync_windows::Held>,
    /// The view before, for how long each server has been in its state.
    pub previous: &'a FleetView,
    pub now: Timestamp,
}

/// The view for the API and the monitor's targets: the running instance of every server
/// that is not stopped by an operator.
pub fn deployment_view(inputs: &ViewInputs<'_>) -> (FleetView, Vec<Target>) {
    let selection = inputs.selection;
    let desired = &selection.desired;
    let (held, pins, observed, previous, now) = (
        inputs.held,
        inputs.pins,
        inputs.observed,
        inputs.previous,
        inputs.now,
    );
    let mut targets = Vec::new();
    let mut servers = Vec::new();
    for server in inputs.servers {
        let d = desired.iter().find(|d| d.server_id() == server.id);
        // Where the view routes this server now: kept while that task still serves.
        let routed = previous
            .servers
            .iter()
            .find(|s| s.id == server.id)
            .and_then(|s| s.endpoint.as_deref())
            .and_then(crate::runtime::endpoint_addr);
        let mine: Vec<Instance> = observed
            .iter()
            .filter(|i| i.server_id == server.id && i.is_running())
            .map(|i| i.preferring(routed))
            .collect();
        let current = d
            .and_then(|d| mine.iter().find(|i| i.spec_hash == d.spec.spec_hash))
            .or_else(|| mine.iter().max_by_key(|i| i.started_at));
        let matches = matches!((d, current), (Some(d), Some(i)) if i.spec_hash == d.spec.spec_hash);
        let (state, reason) = if held.contains(&server.id) {
            ("stopped", Some("stopped by an operator".to_owned()))
        } else if let Some(p) = selection.problems.iter().find(|p| p.server_id == server.id) {
            ("failed", Some(p.reason.clone()))
        } else if let Some(reason) = selection.failed.get(&server.id) {
            ("failed", Some(reason.clone()))
        } else if matches {
            ("running", None)
        } else {
            ("pending", None)
        };
        // A server whose instance crashed stays monitored (on its last instance), so
        // it shows unhealthy and recovery can act, rather than vanishing.
        let watched = current.or_else(|| {
            observed
                .iter()
                .filter(|i| i.server_id == server.id)
                .max_by_key(|i| i.started_at)
        });
        if let (Some(i), Some(addr), false) = (
            watched,
            watched.and_then(|i| i.addr()),
            held.contains(&server.id),
        ) {
            targets.push(crate::health::Target {
                server_id: server.id.clone(),
                instance_id: i.id.clone(),
                addr,
                alternates: i.alternates(),
                version: i.version.to_string(),
                check: server.health_check.clone(),
                mcp_path: server.mcp_path.clone(),
            });
        }
        let since = previous
            .servers
            .iter()
            .find(|s| s.id == server.id && s.state == state)
            .map(|s| s.since)
            .unwrap_or(now);
        servers.push(ServerView {
            id: server.id.clone(),
            name: server.name.clone(),
            transport: server.transport,
            endpoint: current
                .and_then(Instance::base_url)
                .map(|base| format!("{base}{}", server.mcp_path)),
            desired_version: d
                .map(|d| d.spec.version.to_string())
                .unwrap_or_else(|| server.version.to_string()),
            running_version: current.map(|i| i.version.to_string()),
            state: state.to_owned(),
            reason,
            instance_id: current.map(|i| i.id.clone()),
            revision: current.map(|i| i.revision.clone()),
            since,
            update_available: selection.update_available.get(&server.id).cloned(),
            pinned_version: pins.get(&server.id).cloned(),
            health: None,
            health_since: None,
            health_reason: None,
            gateway_tools: None,
            gateway_calls: None,
            blocked_by: Vec::new(),
            tasks: current.map(super::view::TaskView::of).unwrap_or_default(),
            held_by_window: inputs.window_holds.get(&server.id).cloned(),
        });
    }

    let view = FleetView {
        applied_revision: inputs.applied_revision.clone(),
        head: inputs.head.clone(),
        last_sync: Some(now),
        source_error: inputs.source_error.clone(),
        runtime_error: None,
        store_error: None,
        servers,
        profiles: inputs.profiles.to_vec(),
        windows: Vec::new(),
        commit_held: None,
        observed: false,
    };
    (view, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{DesiredProblem, desired_state};
    use crate::runtime::{InstanceState, RuntimeKind};

    const FLEET: &str = "version: \"1.1\"\nservers:\n  - id: ok\n    version: \"1.0.0\"\n    process: { command: /opt/mcp/s }\n  - id: old\n    version: \"2.0.0\"\n    process: { command: /opt/mcp/s }\n  - id: crashed\n    version: \"1.0.0\"\n    process: { command: /opt/mcp/s }\n    mcp_path: /rpc\n  - id: held\n    version: \"1.0.0\"\n    process: { command: /opt/mcp/s }\n  - id: broken\n    version: \"1.0.0\"\n    process: { command: /opt/mcp/s }\n";

    fn instance(
        server: &str,
        version: &str,
        hash: &str,
        port: u16,
        state: InstanceState,
    ) -> Instance {
        Instance {
            id: format!("{server}-{version}-{port}"),
            server_id: server.into(),
            version: semver::Version::parse(version).unwrap(),
            revision: "c0ffee".into(),
            spec_hash: hash.into(),
            host_port: Some(port),
            host: None,
            tasks: Vec::new(),
            state,
            started_at: Some(Timestamp::from_second(port.into()).unwrap()),
            image_digest: None,
        }
    }

    #[test]
    fn each_server_gets_its_state_reason_endpoint_and_probe_target() {
        let c = crate::manifest::checked_for_tests(FLEET);
        let (desired, _) = desired_state(
            &c,
            RuntimeKind::Process,
            "c0ffee",
            &|s| s.version.clone(),
            &|_| None,
        );
        let hash = |id: &str| {
            desired
                .iter()
                .find(|d| d.server_id() == id)
                .unwrap()
                .spec
                .spec_hash
                .clone()
        };
        let mut selection = Selection {
            desired: desired.clone(),
            ..Selection::default()
        };
        selection
            .failed
            .insert("broken".into(), "1.0.0 failed: gate".into());
        selection.problems.push(DesiredProblem {
            server_id: "held".into(),
            reason: "never shown: the stop comes first".into(),
        });
        let observed = vec![
            instance("ok", "1.0.0", &hash("ok"), 9001, InstanceState::Running),
            instance("old", "1.0.0", "older spec", 9002, InstanceState::Running),
            instance("old", "0.9.0", "oldest spec", 9000, InstanceState::Running),
            instance(
                "crashed",
                "1.0.0",
                &hash("crashed"),
                9003,
                InstanceState::Exited { code: Some(1) },
            ),
            instance("held", "1.0.0", &hash("held"), 9004, InstanceState::Running),
        ];
        let held = vec!["held".to_owned()];
        let pins = BTreeMap::from([("ok".to_owned(), "1.0.0".to_owned())]);
        let earlier = Timestamp::from_second(1_000).unwrap();
        let previous = FleetView {
            servers: vec![ServerView {
                id: "ok".into(),
                name: None,
                transport: crate::manifest::Transport::StreamableHttp,
                endpoint: None,
                desired_version: "1.0.0".into(),
                running_version: None,
                state: "running".into(),
                reason: None,
                instance_id: None,
                revision: None,
                since: earlier,
                update_available: None,
                pinned_version: None,
                health: None,
                health_since: None,
                health_reason: None,
                gateway_tools: None,
                gateway_calls: None,
                tasks: Vec::new(),
                blocked_by: Vec::new(),
                held_by_window: None,
            }],
            ..FleetView::default()
        };
        let now = Timestamp::from_second(2_000).unwrap();
        let (view, targets) = deployment_view(&ViewInputs {
            profiles: &[],
            servers: &c.manifest.servers,
            applied_revision: Some("c0ffee".into()),
            head: Some("c0ffee".into()),
            source_error: None,
            selection: &selection,
            observed: &observed,
            held: &held,
            pins: &pins,
            window_holds: &BTreeMap::new(),
            previous: &previous,
            now,
        });
        let get = |id: &str| view.servers.iter().find(|s| s.id == id).unwrap();

        let ok = get("ok");
        assert_eq!((ok.state.as_str(), ok.reason.as_deref()), ("running", None));
        assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9001/mcp"));
        assert_eq!(ok.pinned_version.as_deref(), Some("1.0.0"));
        assert_eq!(ok.since, earlier, "still running: since is kept");

        let old = get("old");
        assert_eq!(old.state, "pending", "not yet on its desired spec");
        assert_eq!(
            old.running_version.as_deref(),
            Some("1.0.0"),
            "the newest that runs"
        );
        assert_eq!(old.desired_version, "2.0.0");
        assert_eq!(old.since, now);

        let crashed = get("crashed");
        assert_eq!(crashed.state, "pending");
        assert_eq!(crashed.endpoint, None, "nothing serves");

        let held_view = get("held");
        assert_eq!(held_view.state, "stopped");
        assert_eq!(held_view.reason.as_deref(), Some("stopped by an operator"));

        let broken = get("broken");
        assert_eq!(broken.state, "failed");
        assert_eq!(broken.reason.as_deref(), Some("1.0.0 failed: gate"));

        let probed: Vec<(&str, &str)> = targets
            .iter()
            .map(|t| (t.server_id.as_str(), t.mcp_path.as_str()))
            .collect();
        assert_eq!(
            probed,
            [("ok", "/mcp"), ("old", "/mcp"), ("crashed", "/rpc")],
            "a crashed server stays monitored on its last instance; a stopped one is not"
        );
        assert_eq!(targets[1].instance_id, "old-1.0.0-9002");
        assert_eq!(view.applied_revision.as_deref(), Some("c0ffee"));
        assert!(!view.observed, "the sync loop marks a view observed");
    }

    #[test]
    fn before_a_revision_is_in_force_the_view_is_empty() {
        let selection = Selection::default();
        let (view, targets) = deployment_view(&ViewInputs {
            profiles: &[],
            servers: &[],
            applied_revision: None,
            head: Some("abc".into()),
            source_error: Some("cannot fetch".into()),
            selection: &selection,
            observed: &[],
            held: &[],
            pins: &BTreeMap::new(),
            window_holds: &BTreeMap::new(),
            previous: &FleetView::default(),
            now: Timestamp::UNIX_EPOCH,
        });
        assert!(view.servers.is_empty() && targets.is_empty());
        assert_eq!(view.source_error.as_deref(), Some("cannot fetch"));
        assert_eq!(view.head.as_deref(), Some("abc"));
    }
}
