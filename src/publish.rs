//! Publishing the routing state to MCP gateways: every `--gateway-url` receives a JSON POST
//! of the full backend set on start and whenever something that affects routing changes
//! (a deploy, an upgrade, a removal, a health transition).
//!
//! The contract a gateway implements: each payload carries a `sequence` that only grows
//! (across agent restarts too) and replaces everything before it; a backend that is absent
//! is removed. Bursts coalesce and the latest state wins: while a gateway is down the agent
//! retries with backoff, always with the newest state, so nothing older ever overwrites
//! newer. This module reads the fleet view; it never decides anything about it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::fleet::Control;

/// One backend as a gateway routes to it.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Backend {
    pub id: String,
    pub endpoint: String,
    pub transport: crate::manifest::Transport,
    pub version: Option<String>,
    /// `healthy`, `degraded`, `unhealthy`, `failed`, `starting` or `unknown`.
    pub health: String,
    pub health_since: Option<Timestamp>,
    /// Whether to send traffic to it: healthy or degraded.
    pub routable: bool,
}

/// What a gateway receives.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Payload {
    pub sequence: u64,
    /// The applied manifest revision.
    pub revision: Option<String>,
    pub generated_at: Timestamp,
    pub backends: Vec<Backend>,
}

const SEQUENCE_KEY: &str = "publish_sequence";

/// Deliveries and failed attempts per gateway, for `GET /metrics`.
#[derive(Clone, Default)]
pub struct Counts(Arc<std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>>);

impl Counts {
    fn add(&self, gateway: &str, delivered: u64, failed: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(gateway.to_owned()).or_default();
        e.0 += delivered;
        e.1 += failed;
    }

    /// `(gateway, delivered, failed)` for every gateway published to.
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(g, (d, f))| (g.clone(), *d, *f)).collect()
    }
}

/// The routing-relevant part of the fleet now.
fn backends(state: &Control) -> (Option<String>, Vec<Backend>) {
    let fleet = state.fleet_live();
    let backends = fleet
        .servers
        .into_iter()
        .filter_map(|s| {
            let endpoint = s.endpoint?;
            let health = s.health.map_or("unknown", |h| h.as_str()).to_owned();
            Some(Backend {
                id: s.id,
                endpoint,
                transport: s.transport,
                version: s.running_version,
                routable: s.health.is_some_and(|h| h.serves()),
                health,
                health_since: s.health_since,
            })
        })
        .collect();
    (fleet.applied_revision, backends)
}

/// Runs the publisher for `urls` until shutdown.
pub async fn run(
    state: Arc<Control>,
    counts: Counts,
    urls: Vec<String>,
    resend_every: Duration,
    shutdown: CancellationToken,
) {
    if urls.is_empty() {
        return;
    }
    let mut sequence: u64 = match state.store.call(|s| s.meta(SEQUENCE_KEY)).await {
        Ok(stored) => stored.and_then(|s| s.parse().ok()).unwrap_or(0),
        Err(e) => {
            // Gateways keep the highest sequence they saw; starting again from 0 would have
            // every update ignored. The clock in milliseconds is above any count so far.
            let floor = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
            warn!(error = %crate::error_text::chain(&e), sequence = floor, "cannot read the last publish sequence; continuing above any earlier one");
            floor
        }
    };
    let (tx, rx) = watch::channel::<Option<Payload>>(None);
    for url in urls {
        counts.add(&redact(&url), 0, 0);
        state.tasks.spawn(deliver(
            url,
            rx.clone(),
            counts.clone(),
            resend_every,
            shutdown.clone(),
        ));
    }
    let mut transitions = state.monitor.subscribe();
    let mut fleet = state.view.subscribe();
    let mut last: Option<(Option<String>, Vec<Backend>)> = None;
    loop {
        // Until the runtime has been listed the view is empty for lack of knowledge, not
        // because the fleet is gone: an agent that restarts must not withdraw every backend.
        if !state.fleet().observed {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = fleet.changed() => {}
            }
            continue;
        }
        let (revision, backends) = backends(&state);
        // Health-since timestamps alone do not change routing... but they do tell a gateway
        // when a state began, so any difference is published.
        if last.as_ref() != Some(&(revision.clone(), backends.clone())) {
            sequence += 1;
            let value = sequence.to_string();
            let persisted = state
                .store
                .call(move |s| s.set_meta(SEQUENCE_KEY, &value))
                .await;
            if let Err(e) = persisted {
                warn!(error = %crate::error_text::chain(&e), "cannot persist the publish sequence");
            }
            last = Some((revision.clone(), backends.clone()));
            let _ = tx.send(Some(Payload {
                sequence,
                revision,
                generated_at: Timestamp::now(),
                backends,
            }));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.changed() => {}
            _ = transitions.recv() => {}
            // A safety net for changes no one announced.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Coalesce a burst into one payload.
        tokio::time::sleep(Duration::from_millis(10)).await;
        while transitions.try_recv().is_ok() {}
    }
}

/// A gateway URL fit for logs and metric labels: no user, password or query.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// Delivers the newest payload to one gateway, retrying with backoff while it is down.
async fn deliver(
    url: String,
    mut rx: watch::Receiver<Option<Payload>>,
    counts: Counts,
    resend_every: Duration,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %crate::error_text::chain(&e), "cannot build the gateway client");
            return;
        }
    };
    // Logs and metric labels name the gateway without credentials or query.
    let name = redact(&url);
    let mut delivered = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut resend = false;
    loop {
        let payload = rx.borrow_and_update().clone();
        if let Some(p) = payload.filter(|p| p.sequence > delivered || resend) {
            let again = p.sequence == delivered;
            resend = false;
            match http.post(&url).json(&p).send().await {
                Ok(r) if r.status().is_success() => {
                    delivered = p.sequence;
                    if !again {
                        counts.add(&name, 1, 0);
                    }
                    backoff = Duration::from_millis(100);
                    if again {
                        tracing::debug!(gateway = %name, sequence = p.sequence, "sent the backend set again");
                    } else {
                        info!(gateway = %name, sequence = p.sequence, backends = p.backends.len(), "published to the gateway");
                    }
                    continue;
                }
                Ok(r) => {
                    counts.add(&name, 0, 1);
                    warn!(gateway = %name, status = r.status().as_u16(), "the gateway refused the backend set; retrying")
                }
                Err(e) => {
                    counts.add(&name, 0, 1);
                    warn!(gateway = %name, error = %crate::error_text::chain(&e.without_url()), "cannot reach the gateway; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            // Nothing changed for a while: send the same state again, so a gateway that
            // restarted since (and lost its table) is not left empty until the next change.
            _ = tokio::time::sleep(resend_every) => resend = true,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gateway_names_carry_no_credentials() {
        assert_eq!(
            super::redact("https://user:s3cret@gw.example/backends?token=abc"),
            "https://gw.example/backends"
        );
        assert_eq!(
            super::redact("http://127.0.0.1:9090/routes"),
            "http://127.0.0.1:9090/routes"
        );
    }
}
