//! What the agent knows right now, shared by the sync loop and the HTTP API.

use std::sync::RwLock;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::manifest::Transport;
use crate::runtime::RuntimeKind;
use crate::store::Store;

/// What woke a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Poll,
    Webhook,
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Watch => "watch",
        }
    }
}

/// One server as an operator or the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
}

/// The fleet after the last sync.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetView {
    /// The commit whose manifest is applied.
    pub applied_revision: Option<String>,
    /// The branch head last fetched.
    pub head: Option<String>,
    pub last_sync: Option<Timestamp>,
    /// Set while the repository cannot be fetched.
    pub source_error: Option<String>,
    pub servers: Vec<ServerView>,
}

/// State shared between the agent's tasks.
pub struct AgentState {
    pub store: Store,
    pub runtime: RuntimeKind,
    pub branch: String,
    pub webhook_secret: Option<String>,
    pub started_at: Timestamp,
    // A std lock: readers copy out, the sync loop swaps in a new view; never held across await.
    fleet: RwLock<FleetView>,
    triggers: mpsc::Sender<Trigger>,
}

impl AgentState {
    pub fn new(
        store: Store,
        runtime: RuntimeKind,
        branch: String,
        webhook_secret: Option<String>,
        triggers: mpsc::Sender<Trigger>,
    ) -> AgentState {
        AgentState {
            store,
            runtime,
            branch,
            webhook_secret,
            started_at: Timestamp::now(),
            fleet: RwLock::new(FleetView::default()),
            triggers,
        }
    }

    pub fn fleet(&self) -> FleetView {
        self.fleet.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_fleet(&self, view: FleetView) {
        *self.fleet.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Asks the sync loop to run soon; bursts collapse into one sync.
    pub fn wake(&self, trigger: Trigger) {
        // A full queue already holds a wake-up, which is all that is needed.
        let _ = self.triggers.try_send(trigger);
    }
}
