//! The live fleet view: what runs, where, and how healthy, as the sync loop and the rollout
//! executor last saw it. It is shared through a `tokio::sync::watch` channel, so readers
//! (the API, the MCP tools, the gateway publisher) copy out the latest view or wait for the
//! next one, and writers never hold a lock across an await.
//!
//! The executor's rollout phases land here directly ([`on_rollout_phase`]): a new instance
//! is published, and monitored, before its predecessor stops, without the executor holding
//! a reference back to the agent that owns it.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::health::{Monitor, Target};
use crate::manifest::Transport;
use crate::reconcile::execute::RolloutPhase;
use crate::runtime::Instance;

/// One server as an operator or the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerView {
    pub id: String,
    pub name: Option<String>,
    pub transport: Transport,
    /// Where to reach MCP: `http://127.0.0.1:PORT/mcp`.
    pub endpoint: Option<String>,
    pub desired_version: String,
    pub running_version: Option<String>,
    /// `running`, `pending`, `failed`, `stopped` (by an operator), or `removing`.
    pub state: String,
    /// Why it is not simply running the desired version.
    pub reason: Option<String>,
    pub instance_id: Option<String>,
    pub revision: Option<String>,
    pub since: Timestamp,
    /// A newer version the update policy only reports (`auto_update: false`).
    pub update_available: Option<String>,
    /// The version an operator's rollback holds the server at (auto-update paused).
    pub pinned_version: Option<String>,
    /// Health as the monitor sees it now: `unknown`, `starting`, `healthy`, `degraded`,
    /// `unhealthy` or `failed`; absent when the server is not monitored (not running).
    pub health: Option<crate::health::HealthState>,
    pub health_since: Option<Timestamp>,
    /// What caused the last health transition.
    pub health_reason: Option<String>,
    /// How many tools it contributes through the agent's gateway; absent while the gateway
    /// is off or has not listed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_tools: Option<usize>,
    /// The calls clients made to its tools through the gateway since the agent started;
    /// absent while the gateway is off. The status page shows them per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_calls: Option<GatewayCalls>,
    /// Where Swarm runs its tasks: node, endpoint, state, health. Empty on the other
    /// runtimes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskView>,
    /// The servers it depends on (`depends_on`) whose health its deploy or upgrade waits
    /// for; empty when it waits for nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// The registry upgrade an operator's sync window holds back (`what`: the version it
    /// waits to move to), which window, and until when; absent when nothing waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_window: Option<crate::sync_windows::Held>,
}

/// Calls through the gateway, and how many of them did not end well (a tool error, a
/// refused request, `BACKEND_UNHEALTHY`, `BACKEND_UNAVAILABLE`, `BACKEND_UNREACHABLE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GatewayCalls {
    pub calls: u64,
    pub errors: u64,
}

/// One of a server's Swarm tasks, with its health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: crate::runtime::Task,
    /// The server's health for the task calls are routed to; `healthy` or `unhealthy` by
    /// its last probe for another serving task; absent for a task that does not serve, and
    /// in the view a sync publishes (live reads fill it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthState>,
}

impl TaskView {
    /// The tasks of `instance`, health not yet known.
    pub fn of(instance: &crate::runtime::Instance) -> Vec<TaskView> {
        instance
            .tasks
            .iter()
            .map(|task| TaskView {
                task: task.clone(),
                health: None,
            })
            .collect()
    }
}

/// The fleet after the last sync.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetView {
    /// The commit whose manifest is applied.
    pub applied_revision: Option<String>,
    /// The branch head last fetched.
    pub head: Option<String>,
    pub last_sync: Option<Timestamp>,
    /// Set while the repository cannot be fetched.
    pub source_error: Option<String>,
    /// Set while the runtime cannot list its instances: the servers and endpoints shown
    /// are the last ones seen, not a fleet that vanished.
    pub runtime_error: Option<String>,
    /// Set while the state database cannot record runs: a new commit waits for it.
    pub store_error: Option<String>,
    pub servers: Vec<ServerView>,
    /// The applied manifest's profiles (schema 1.2), without the implied `default`.
    #[serde(default)]
    pub profiles: Vec<crate::manifest::Profile>,
    /// The operator's sync windows open now.
    #[serde(default)]
    pub windows: Vec<crate::sync_windows::OpenWindow>,
    /// A new commit a sync window holds (`what`: the commit), and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_held: Option<crate::sync_windows::Held>,
    /// Whether the runtime has been listed since the agent started. Until then the view
    /// is empty for lack of knowledge, and nothing is published to gateways.
    #[serde(skip)]
    #[schemars(skip)]
    pub observed: bool,
}

/// A cheap handle to the fleet view; clones share it.
#[derive(Clone, Debug)]
pub struct Fleet {
    tx: Arc<watch::Sender<FleetView>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet {
            tx: Arc::new(watch::Sender::new(FleetView::default())),
        }
    }

    /// The view now.
    pub fn get(&self) -> FleetView {
        self.tx.borrow().clone()
    }

    /// Server `id` as the view has it (copying only that server).
    pub fn server(&self, id: &str) -> Option<ServerView> {
        self.tx
            .borrow()
            .servers
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// The ids of the view's servers.
    pub fn server_ids(&self) -> std::collections::HashSet<String> {
        self.tx
            .borrow()
            .servers
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// The applied manifest's profile `id` (copying only that profile); `default` is the
    /// whole fleet and not one of them.
    pub fn profile(&self, id: &str) -> Option<crate::manifest::Profile> {
        self.tx
            .borrow()
            .profiles
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    /// Whether the view has a server `id` (without copying the view).
    pub fn has_server(&self, id: &str) -> bool {
        self.tx.borrow().servers.iter().any(|s| s.id == id)
    }

    /// Replaces the view; every subscriber wakes.
    pub fn set(&self, view: FleetView) {
        self.tx.send_replace(view);
    }

    /// A receiver that wakes on every change (the gateway publisher follows it).
    pub fn subscribe(&self) -> watch::Receiver<FleetView> {
        self.tx.subscribe()
    }

    /// Publishes a newly healthy instance at once, before its predecessor stops, so the
    /// endpoint readers see always answers.
    pub fn switch_to(&self, instance: &Instance) {
        self.tx.send_modify(|fleet| {
            if let Some(view) = fleet
                .servers
                .iter_mut()
                .find(|s| s.id == instance.server_id)
            {
                let path = mcp_path(view.endpoint.as_deref());
                view.endpoint = instance.base_url().map(|b| format!("{b}{path}"));
                view.running_version = Some(instance.version.to_string());
                view.instance_id = Some(instance.id.clone());
                view.tasks = TaskView::of(instance);
                view.revision = Some(instance.revision.clone());
            }
        });
    }
}

impl Fleet {
    /// Routes `server` to another task of the same instance (the monitor's failover): only
    /// the endpoint changes, and only while `instance_id` still serves it.
    pub fn move_to(&self, server: &str, instance_id: &str, addr: std::net::SocketAddr) {
        self.tx.send_modify(|fleet| {
            if let Some(view) = fleet
                .servers
                .iter_mut()
                .find(|s| s.id == server && s.instance_id.as_deref() == Some(instance_id))
            {
                let path = mcp_path(view.endpoint.as_deref());
                view.endpoint = Some(format!("http://{addr}{path}"));
            }
        });
    }
}

/// The path part of an endpoint URL (`/mcp` when there is none).
fn mcp_path(endpoint: Option<&str>) -> String {
    endpoint
        .and_then(|e| {
            e.find("://")
                .and_then(|i| e[i + 3..].find('/').map(|j| e[i + 3 + j..].to_owned()))
        })
        .unwrap_or_else(|| "/mcp".to_owned())
}

/// Follows the monitor's failovers into the view until `shutdown`, so the gateway routes
/// to the task that answers as soon as the monitor found it.
pub async fn follow_failovers(
    fleet: Fleet,
    mut failovers: tokio::sync::broadcast::Receiver<crate::health::Failover>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let f = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = failovers.recv() => f,
        };
        match f {
            Ok(f) => fleet.move_to(&f.server_id, &f.instance_id, f.to),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What the executor reports about a rollout: the monitor steps aside while it runs, and a
/// new instance is published (and monitored) before its predecessor stops.
pub fn on_rollout_phase(fleet: &Fleet, monitor: &Monitor, server: &str, phase: RolloutPhase<'_>) {
    match phase {
        RolloutPhase::Started => monitor.rollout_started(server),
        RolloutPhase::Switched(instance, desired) => {
            fleet.switch_to(instance);
            if let Some(addr) = instance.addr() {
                monitor.rollout_switched(Target {
                    server_id: server.to_owned(),
                    instance_id: instance.id.clone(),
                    addr,
                    alternates: instance.alternates(),
                    version: instance.version.to_string(),
                    check: desired.health.clone(),
                    mcp_path: desired.mcp_path.clone(),
                });
            }
        }
        RolloutPhase::Finished => monitor.rollout_finished(server),
    }
}
