//! [`Control`]: the handles every surface acts through — the store, the rollout executor,
//! the health monitor, the fleet view, the desired snapshot of the last sync and the sync
//! loop's wake-ups. The agent builds one; the HTTP API, the MCP tools, the gateway
//! publisher and the agent's own loops share it, and none of them needs the others.

use std::collections::BTreeMap;
use std::sync::RwLock;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::error::ControlError;
use super::view::{Fleet, FleetView, ServerView};
use crate::health::Monitor;
use crate::reconcile::Desired;
use crate::reconcile::execute::Executor;
use crate::store::Store;

/// What woke a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Poll,
    Webhook,
    Watch,
    /// An operator asked for something (deploy, retry).
    Operator,
    /// The registry has new tags.
    Registry,
    /// An instance exited (or was restarted by its runtime): the endpoint may have moved.
    Runtime,
    /// A server others wait for (`depends_on`) became healthy.
    Dependency,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Watch => "watch",
            Trigger::Operator => "operator",
            Trigger::Registry => "registry",
            Trigger::Runtime => "runtime",
            Trigger::Dependency => "dependency",
        }
    }
}

/// The fleet's handles and the operator's actions on them (see `actions` and `reads`).
pub struct Control {
    pub store: Store,
    pub executor: Executor,
    pub monitor: Monitor,
    /// The live fleet view.
    pub view: Fleet,
    /// Work that must finish its current step before the agent exits (an operator's
    /// restart); the agent's own background tasks share the same tracker.
    pub tasks: TaskTracker,
    /// The desired state of the last sync, per server (restarts and recovery start
    /// instances from it).
    desired: RwLock<BTreeMap<String, Desired>>,
    triggers: mpsc::Sender<Trigger>,
    /// How many tools each server contributes through the gateway, as the gateway last
    /// listed them (empty while it is off).
    gateway_tools: std::sync::RwLock<BTreeMap<String, usize>>,
    /// Reads the gateway's call counts per server (none while it is off).
    gateway_calls: std::sync::RwLock<Option<CallCounts>>,
    /// Makes plans (`POST /plan`), set once the agent's git mirror is open.
    planner: std::sync::OnceLock<std::sync::Arc<dyn super::plan::Planner>>,
    /// Servers an operator deployed while a sync window held their registry upgrade: an
    /// operator's action goes through, so the window no longer holds them until it closes.
    window_releases: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The gateway's calls per server since the agent started.
pub type CallCounts =
    std::sync::Arc<dyn Fn() -> BTreeMap<String, super::view::GatewayCalls> + Send + Sync>;

impl Control {
    pub fn new(
        store: Store,
        executor: Executor,
        monitor: Monitor,
        view: Fleet,
        tasks: TaskTracker,
        triggers: mpsc::Sender<Trigger>,
    ) -> Control {
        Control {
            store,
            executor,
            monitor,
            view,
            tasks,
            desired: RwLock::default(),
            triggers,
            gateway_tools: Default::default(),
            gateway_calls: Default::default(),
            planner: Default::default(),
            window_releases: Default::default(),
        }
    }

    /// Lets `server`'s held registry upgrade through its sync window (an operator's deploy).
    pub fn release_from_windows(&self, server: &str) {
        self.window_releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_owned());
    }

    /// The servers an operator released from their windows, keeping only those a window
    /// still holds (`held`): a release lasts until the window that held the server closes.
    pub fn window_releases(
        &self,
        held: &std::collections::BTreeSet<String>,
    ) -> std::collections::BTreeSet<String> {
        let mut released = self
            .window_releases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        released.retain(|s| held.contains(s));
        released.clone()
    }

    /// Hands over the planner; only the first one counts.
    pub fn set_planner(&self, planner: std::sync::Arc<dyn super::plan::Planner>) {
        let _ = self.planner.set(planner);
    }

    pub(super) fn planner(&self) -> Option<std::sync::Arc<dyn super::plan::Planner>> {
        self.planner.get().cloned()
    }

    /// Asks the sync loop to run soon; bursts collapse into one sync.
    pub fn wake(&self, trigger: Trigger) {
        // A full queue already holds a wake-up, which is all that is needed.
        let _ = self.triggers.try_send(trigger);
    }

    pub fn desired(&self, server: &str) -> Option<Desired> {
        self.desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .cloned()
    }

    pub fn set_desired(&self, desired: &[Desired]) {
        *self.desired.write().unwrap_or_else(|p| p.into_inner()) = desired
            .iter()
            .map(|d| (d.server_id().to_owned(), d.clone()))
            .collect();
    }

    /// The view as the sync loop and the executor last left it.
    pub fn fleet(&self) -> FleetView {
        self.view.get()
    }

    pub fn set_fleet(&self, view: FleetView) {
        self.view.set(view);
    }

    /// The fleet with each server's live health from the monitor.
    pub fn fleet_live(&self) -> FleetView {
        let mut fleet = self.fleet();
        let tools = self.gateway_tools.read().unwrap_or_else(|p| p.into_inner());
        let calls = self
            .gateway_calls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|count| count());
        let blocked = self.executor.blocked();
        for s in &mut fleet.servers {
            if let Some(h) = self.monitor.get(&s.id) {
                with_health(s, h);
            }
            s.blocked_by = blocked.get(&s.id).cloned().unwrap_or_default();
            s.gateway_tools = tools.get(&s.id).copied();
            s.gateway_calls = calls
                .as_ref()
                .map(|c| c.get(&s.id).copied().unwrap_or_default());
        }
        fleet
    }

    /// One server with its live health, copying only that server (the gateway asks on
    /// every call).
    pub fn server_live(&self, id: &str) -> Option<ServerView> {
        let mut s = self.view.server(id)?;
        if let Some(h) = self.monitor.get(id) {
            with_health(&mut s, h);
        }
        s.blocked_by = self.executor.blocked().remove(id).unwrap_or_default();
        s.gateway_tools = self
            .gateway_tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        Some(s)
    }

    /// Where [`Control::fleet_live`] reads the gateway's call counts.
    pub fn set_gateway_calls(&self, counts: CallCounts) {
        *self
            .gateway_calls
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(counts);
    }

    /// What the gateway serves now: the number of tools per server.
    pub fn set_gateway_tools(&self, counts: BTreeMap<String, usize>) {
        *self
            .gateway_tools
            .write()
            .unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// Whether `server` is one of the applied manifest's.
    pub(super) fn known(&self, server: &str) -> bool {
        self.view.has_server(server)
    }

    pub(super) fn require_known(&self, server: &str) -> Result<(), ControlError> {
        if self.known(server) {
            Ok(())
        } else {
            Err(ControlError::server_not_found(server))
        }
    }
}

/// `s` as the monitor sees it now: the server's health, and each serving task's (the
/// routed one has the server's; the others, their last probe's).
fn with_health(s: &mut ServerView, h: crate::health::ServerHealth) {
    use crate::health::HealthState;
    for t in &mut s.tasks {
        let Some(at) = t.task.serving_at() else {
            continue;
        };
        t.health = if at == h.addr {
            Some(h.state)
        } else {
            h.alternates.iter().find(|a| a.addr == at).map(|a| {
                if a.healthy {
                    HealthState::Healthy
                } else {
                    HealthState::Unhealthy
                }
            })
        };
    }
    s.health = Some(h.state);
    s.health_since = Some(h.since);
    s.health_reason = h.cause;
}
