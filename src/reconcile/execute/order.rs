//! Order between servers (`depends_on`) within one apply: a server starts or is upgraded
//! only once each server it depends on is healthy (those changed in the same apply first
//! finish their rollout, then the monitor must say healthy); removals go the other way,
//! dependents first. What waits, and on what, is kept for `status` (`blocked_by`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::health::{HealthState, Monitor};

/// How long a server waits for a dependency changed in the same apply to become healthy
/// after its rollout, before it counts as blocked.
pub const SAME_APPLY_WAIT: Duration = Duration::from_secs(60);

/// The dependencies the executor knows, and the servers waiting on them.
#[derive(Clone, Default)]
pub(super) struct Dependencies {
    /// server → the servers it depends on, as the last desired state said.
    known: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// server → the dependencies it waits for (or was refused for) now.
    blocked: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Dependencies {
    /// Takes the dependencies of `servers` (server, depends_on); a server not among them
    /// is forgotten once it is gone (its removal ordered by what it had).
    pub fn remember<'a>(&self, servers: impl Iterator<Item = (&'a str, &'a [String])>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeMap<String, Vec<String>> = servers
            .map(|(id, deps)| (id.to_owned(), deps.to_vec()))
            .collect();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|server, _| now.contains_key(server));
        // Removed servers keep their entry until their removal ran (see `forget`).
        for (id, deps) in now {
            known.insert(id, deps);
        }
    }

    pub fn forget(&self, server: &str) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server);
    }

    pub fn of(&self, server: &str) -> Vec<String> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .cloned()
            .unwrap_or_default()
    }

    /// The servers among `removed` that depend on `server`: removed before it.
    pub fn dependents_among(&self, server: &str, removed: &[&str]) -> Vec<String> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        removed
            .iter()
            .filter(|r| **r != server)
            .filter(|r| {
                known
                    .get(**r)
                    .is_some_and(|deps| deps.iter().any(|d| d == server))
            })
            .map(|r| (*r).to_owned())
            .collect()
    }

    pub fn set_blocked(&self, server: &str, on: Vec<String>) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if on.is_empty() {
            blocked.remove(server);
        } else {
            blocked.insert(server.to_owned(), on);
        }
    }

    pub fn blocked(&self) -> BTreeMap<String, Vec<String>> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Each server's change in one wave, done or not: `Some(true)` once it succeeded.
#[derive(Default)]
pub(super) struct Wave {
    done: HashMap<String, watch::Receiver<Option<bool>>>,
}

impl Wave {
    /// Registers `server`'s change; the sender says when it is done and how it went.
    pub fn add(&mut self, server: &str) -> watch::Sender<Option<bool>> {
        let (tx, rx) = watch::channel(None);
        self.done.insert(server.to_owned(), rx);
        tx
    }

    pub fn has(&self, server: &str) -> bool {
        self.done.contains_key(server)
    }

    /// Waits until `server`'s change in this wave is done; whether it succeeded.
    pub async fn finished(&self, server: &str) -> bool {
        let Some(mut rx) = self.done.get(server).cloned() else {
            return true;
        };
        rx.wait_for(Option::is_some)
            .await
            .map(|v| *v == Some(true))
            .unwrap_or(false)
    }
}

/// Whether `server` is healthy, waiting up to `wait` for it to become so. Without a
/// monitor (tests of the executor alone) the health gate the rollout passed is enough.
pub(super) async fn healthy(monitor: Option<&Monitor>, server: &str, wait: Duration) -> bool {
    let Some(monitor) = monitor else {
        return true;
    };
    let mut transitions = monitor.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if monitor
            .get(server)
            .is_some_and(|h| h.state == HealthState::Healthy)
        {
            return true;
        }
        match tokio::time::timeout_at(deadline, transitions.recv()).await {
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}
