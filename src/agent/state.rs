//! What the agent knows right now, shared by the sync loop and the HTTP API.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use jiff::Timestamp;
use tokio::sync::mpsc;

pub use crate::fleet::{Fleet, FleetView, ServerView};
use crate::health::Monitor;
use crate::reconcile::Desired;
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
    #[error("`{0}` has no earlier successful version to roll back to; name one with --to")]
    NothingToRollBackTo(String),
    #[error("`{0}` is stopped by an operator; `deploy` it to start it again")]
    Stopped(String),
    #[error(
        "`{server}` never ran {version} successfully here; roll back to a version from its history (`mcp-orchestration history {server}`), or pass force to go anyway"
    )]
    NotInHistory { server: String, version: String },
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
    /// The registry has new tags.
    Registry,
    /// An instance exited (or was restarted by its runtime): the endpoint may have moved.
    Runtime,
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
        }
    }
}

/// State shared between the agent's tasks.
pub struct AgentState {
    pub store: Store,
    pub executor: Executor,
    pub monitor: Monitor,
    /// The desired state of the last sync, per server (recovery starts instances from it).
    desired: RwLock<std::collections::BTreeMap<String, Desired>>,
    pub runtime: RuntimeKind,
    pub branch: String,
    pub webhook_secret: Option<String>,
    pub started_at: Timestamp,
    /// Gateway deliveries and failures (`GET /metrics`).
    pub publish_counts: crate::publish::Counts,
    /// How long syncs took (`GET /metrics`).
    pub sync_duration: crate::metrics::Histogram,
    /// API keys accepted by the HTTP API (see `api::auth`).
    pub api_keys: Vec<String>,
    /// Whether read routes need a key too (the agent listens beyond loopback).
    pub keys_for_reads: bool,
    /// The agent's shutdown token. Long-lived responses (event streams, MCP sessions) end
    /// with it, so they never hold the HTTP server's graceful shutdown open.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The live fleet view (see [`crate::fleet`]).
    pub view: Fleet,
    /// Every background task of the agent: shutdown closes it and waits (with a deadline)
    /// for them to finish their current step rather than dropping them mid-call.
    pub tasks: tokio_util::task::TaskTracker,
    triggers: mpsc::Sender<Trigger>,
    /// Tags per image repository from the last registry poll.
    tags: RwLock<HashMap<String, Vec<String>>>,
    /// The image repositories the applied manifest's servers use, for the registry poller.
    images: RwLock<BTreeSet<String>>,
    images_changed: tokio::sync::Notify,
}

impl AgentState {
    pub fn new(
        store: Store,
        executor: Executor,
        monitor: Monitor,
        view: Fleet,
        runtime: RuntimeKind,
        branch: String,
        triggers: mpsc::Sender<Trigger>,
    ) -> AgentState {
        AgentState {
            store,
            executor,
            monitor,
            desired: RwLock::default(),
            runtime,
            branch,
            webhook_secret: None,
            started_at: Timestamp::now(),
            sync_duration: crate::metrics::Histogram::default(),
            publish_counts: crate::publish::Counts::default(),
            api_keys: Vec::new(),
            keys_for_reads: false,
            shutdown: tokio_util::sync::CancellationToken::new(),
            view,
            tasks: tokio_util::task::TaskTracker::new(),
            triggers,
            tags: RwLock::default(),
            images: RwLock::default(),
            images_changed: tokio::sync::Notify::new(),
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

    /// An operator's rollback: holds the server at `to` (or the version it ran before the
    /// current one), pausing auto-update for it, and converges now. Returns the version.
    ///
    /// A named version must have rolled out successfully on this server before, unless
    /// `force`: a version that never ran would otherwise "succeed" as a hold and then count
    /// as the version to go back to.
    pub async fn rollback(
        &self,
        server: &str,
        to: Option<semver::Version>,
        force: bool,
    ) -> Result<String, OperatorError> {
        self.known(server)?;
        let current = self
            .fleet()
            .servers
            .into_iter()
            .find(|s| s.id == server)
            .and_then(|s| s.running_version);
        let s = server.to_owned();
        let history = self
            .store
            .call(move |st| st.rollouts(Some(&s), 10_000))
            .await?;
        let mut ran = history
            .iter()
            .filter(|r| r.outcome == crate::store::RolloutOutcome::Succeeded)
            .filter_map(|r| r.to_version.clone());
        let version = match to {
            Some(v) => {
                let v = v.to_string();
                if !force && !ran.any(|r| r == v) {
                    return Err(OperatorError::NotInHistory {
                        server: server.to_owned(),
                        version: v,
                    });
                }
                v
            }
            // The newest successful rollout to something other than what runs now.
            None => ran
                .find(|v| Some(v) != current.as_ref())
                .ok_or_else(|| OperatorError::NothingToRollBackTo(server.to_owned()))?,
        };
        let pin = crate::store::Pin {
            server_id: server.to_owned(),
            version: version.clone(),
            reason: format!(
                "rolled back by an operator from {}",
                current.as_deref().unwrap_or("nothing")
            ),
            pinned_at: Timestamp::now(),
        };
        self.store.call(move |st| st.set_pin(&pin)).await?;
        self.wake(Trigger::Operator);
        Ok(version)
    }

    /// Lifts an operator's rollback pin: the update policy applies again.
    pub async fn resume(&self, server: &str) -> Result<bool, OperatorError> {
        self.known(server)?;
        let s = server.to_owned();
        let lifted = self.store.call(move |st| st.clear_pin(&s)).await?;
        self.wake(Trigger::Operator);
        Ok(lifted)
    }

    /// An operator's deploy: lifts a stop, forgets failed versions, and converges now.
    pub async fn deploy(&self, server: &str) -> Result<(), OperatorError> {
        self.known(server)?;
        let s = server.to_owned();
        self.store
            .call(move |st| {
                st.set_held(&s, false, Timestamp::now())?;
                st.clear_failed_versions(&s)
            })
            .await?;
        self.wake(Trigger::Operator);
        Ok(())
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

    /// Tags per image repository, as last polled.
    pub fn tags(&self) -> HashMap<String, Vec<String>> {
        self.tags.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a repository's tags; returns whether they changed.
    pub fn set_tags(&self, image: &str, tags: Vec<String>) -> bool {
        let mut all = self.tags.write().unwrap_or_else(|p| p.into_inner());
        if all.get(image) == Some(&tags) {
            return false;
        }
        all.insert(image.to_owned(), tags);
        true
    }

    pub fn images(&self) -> BTreeSet<String> {
        self.images
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_images(&self, images: BTreeSet<String>) {
        let mut current = self.images.write().unwrap_or_else(|p| p.into_inner());
        if *current != images {
            *current = images;
            self.images_changed.notify_one();
        }
    }

    /// Resolves when the set of watched repositories changed.
    pub async fn images_changed(&self) {
        self.images_changed.notified().await;
    }

    pub fn fleet(&self) -> FleetView {
        self.view.get()
    }

    /// The fleet with each server's live health from the monitor.
    pub fn fleet_live(&self) -> FleetView {
        let mut fleet = self.fleet();
        for s in &mut fleet.servers {
            if let Some(h) = self.monitor.get(&s.id) {
                s.health = Some(h.state);
                s.health_since = Some(h.since);
                s.health_reason = h.cause;
            }
        }
        fleet
    }

    /// An operator's restart: a fresh instance replaces the current one, and the recovery
    /// count starts over. Runs in the background; returns once it is under way.
    ///
    /// A server an operator stopped stays stopped: only `deploy` lifts a stop.
    pub async fn restart(self: &std::sync::Arc<Self>, server: &str) -> Result<(), OperatorError> {
        self.known(server)?;
        // The store, not the fleet view: a stop is recorded before its sync shows it.
        let held = self.store.call(|st| st.held_servers()).await?;
        if held.iter().any(|h| h == server) {
            return Err(OperatorError::Stopped(server.to_owned()));
        }
        let desired = self.desired(server).ok_or_else(|| {
            OperatorError::Runtime(format!("`{server}` cannot run here; see its status"))
        })?;
        let state = self.clone();
        let held = self.store.clone();
        let id = server.to_owned();
        self.tasks.spawn(async move {
            // A stop that landed since the check above wins.
            match held.call(move |st| st.held_servers()).await {
                Ok(h) if h.contains(&id) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(server = %id, error = %crate::error_text::chain(&e), "cannot read operator stops; not restarting");
                    return;
                }
            }
            if let Err(e) = state.executor.replace(&desired, false, "operator").await {
                tracing::warn!(server = %desired.server_id(), error = %e, "operator restart failed");
            }
            state.wake(Trigger::Operator);
        });
        Ok(())
    }

    pub fn set_fleet(&self, view: FleetView) {
        self.view.set(view);
    }

    /// Asks the sync loop to run soon; bursts collapse into one sync.
    pub fn wake(&self, trigger: Trigger) {
        // A full queue already holds a wake-up, which is all that is needed.
        let _ = self.triggers.try_send(trigger);
    }
}
