//! What the agent knows right now, shared by the sync loop and the HTTP API.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::manifest::Transport;
use crate::reconcile::execute::{ApplyContext, Executor};
use crate::runtime::RuntimeKind;
use crate::store::{Store, StoreError};

/// Why an operator's request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no server `{0}` in the applied manifest")]
    UnknownServer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Runtime(String),
}

/// What woke a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Poll,
    Webhook,
    Watch,
    /// An operator asked for something (deploy, retry).
    Operator,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Watch => "watch",
            Trigger::Operator => "operator",
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
    pub executor: Executor,
    pub runtime: RuntimeKind,
    pub branch: String,
    pub webhook_secret: Option<String>,
    pub started_at: Timestamp,
    /// API keys accepted by the HTTP API (see `api::auth`).
    pub api_keys: Vec<String>,
    /// Whether read routes need a key too (the agent listens beyond loopback).
    pub keys_for_reads: bool,
    // A std lock: readers copy out, the sync loop swaps in a new view; never held across await.
    fleet: RwLock<FleetView>,
    triggers: mpsc::Sender<Trigger>,
    /// Servers an operator asked to deploy again: the sync loop forgets their failed spec.
    retries: Mutex<BTreeSet<String>>,
}

impl AgentState {
    pub fn new(
        store: Store,
        executor: Executor,
        runtime: RuntimeKind,
        branch: String,
        webhook_secret: Option<String>,
        triggers: mpsc::Sender<Trigger>,
    ) -> AgentState {
        AgentState {
            store,
            executor,
            runtime,
            branch,
            webhook_secret,
            started_at: Timestamp::now(),
            api_keys: Vec::new(),
            keys_for_reads: false,
            fleet: RwLock::new(FleetView::default()),
            triggers,
            retries: Mutex::new(BTreeSet::new()),
        }
    }

    fn known(&self, server: &str) -> Result<(), OperatorError> {
        if self.fleet().servers.iter().any(|s| s.id == server) {
            Ok(())
        } else {
            Err(OperatorError::UnknownServer(server.to_owned()))
        }
    }

    /// An operator's stop: the server is held (syncs leave it alone) and its instances are
    /// stopped and removed. It stays stopped until [`AgentState::deploy`].
    pub async fn stop(&self, server: &str) -> Result<usize, OperatorError> {
        self.known(server)?;
        let s = server.to_owned();
        self.store
            .call(move |st| st.set_held(&s, true, Timestamp::now()))
            .await?;
        let ctx = ApplyContext {
            run_id: None,
            trigger: "operator",
        };
        let stopped = self
            .executor
            .stop_server(server, &ctx)
            .await
            .map_err(OperatorError::Runtime)?;
        self.wake(Trigger::Operator);
        Ok(stopped)
    }

    /// An operator's deploy: lifts a stop, forgets a failed spec, and converges now.
    pub async fn deploy(&self, server: &str) -> Result<(), OperatorError> {
        self.known(server)?;
        let s = server.to_owned();
        self.store
            .call(move |st| st.set_held(&s, false, Timestamp::now()))
            .await?;
        self.request_retry(server);
        Ok(())
    }

    /// Asks the sync loop to deploy `server` again, forgetting a failed spec.
    pub fn request_retry(&self, server: &str) {
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_owned());
        self.wake(Trigger::Operator);
    }

    /// The servers whose retry was requested since the last call.
    pub fn take_retries(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.retries.lock().unwrap_or_else(|p| p.into_inner()))
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
