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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_wait_for_the_removed_servers_that_depend_on_them() {
        let deps = Dependencies::default();
        let db = vec![];
        let api = vec!["db".to_owned()];
        let web = vec!["api".to_owned(), "db".to_owned()];
        deps.remember(
            [
                ("db", db.as_slice()),
                ("api", api.as_slice()),
                ("web", web.as_slice()),
            ]
            .into_iter(),
        );
        let removed = ["db", "api", "web"];
        assert_eq!(deps.dependents_among("db", &removed), ["api", "web"]);
        assert_eq!(deps.dependents_among("api", &removed), ["web"]);
        assert!(deps.dependents_among("web", &removed).is_empty());
        // A dependent that stays is not waited for: only removals are ordered here.
        assert_eq!(deps.dependents_among("db", &["db", "api"]), ["api"]);
        // A removed server keeps what it depended on until its removal ran.
        deps.remember([("db", db.as_slice())].into_iter());
        assert_eq!(deps.of("api"), ["db"]);
        deps.forget("api");
        assert!(deps.of("api").is_empty());
    }

    #[test]
    fn who_waits_is_kept_only_for_servers_still_desired() {
        let deps = Dependencies::default();
        deps.set_blocked("api", vec!["db".to_owned()]);
        deps.set_blocked("web", vec!["api".to_owned()]);
        assert_eq!(deps.blocked().len(), 2);
        deps.set_blocked("web", Vec::new());
        assert_eq!(deps.blocked().keys().collect::<Vec<_>>(), ["api"]);
        deps.remember(std::iter::empty());
        assert!(deps.blocked().is_empty());
    }

    #[tokio::test]
    async fn a_wave_says_when_each_change_is_done_and_how() {
        let mut wave = Wave::default();
        let db = wave.add("db");
        let cache = wave.add("cache");
        assert!(wave.has("db") && !wave.has("api"));
        let wave = Arc::new(wave);
        let waiter = {
            let wave = wave.clone();
            tokio::spawn(async move { (wave.finished("db").await, wave.finished("cache").await) })
        };
        db.send(Some(true)).unwrap();
        cache.send(Some(false)).unwrap();
        assert_eq!(waiter.await.unwrap(), (true, false));
        // Not a change of this wave: nothing to wait for.
        assert!(wave.finished("api").await);
        // A change whose task went away without saying counts as failed.
        let mut other = Wave::default();
        drop(other.add("gone"));
        assert!(!other.finished("gone").await);
    }

    #[tokio::test]
    async fn without_a_monitor_a_passed_gate_is_enough() {
        assert!(healthy(None, "db", Duration::ZERO).await);
    }
}
