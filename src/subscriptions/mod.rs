//! Webhook subscriptions: the event log (runs, rollouts, health transitions, recoveries,
//! holds) delivered as signed JSON POSTs to the URLs operators subscribe, and the manifest's
//! notification channels on the same sender.
//!
//! [`Subscriptions`] is the one implementation of subscribe, list, delete and the dead
//! letters, behind the `/v1/webhooks` routes, the MCP tools and the `webhooks` CLI. Each
//! subscription has a worker (`worker`) on the agent's task tracker that delivers the
//! events it wants in id order, each until a 2xx answer or the last try (`deliver`), then
//! moves its stored cursor; after the last try the delivery becomes a dead letter. Only
//! URLs the operator's trust policy allows for notifications (`allowed_notification_urls`)
//! may subscribe: an API key is not a licence to make the agent POST anywhere.
//!
//! It decides nothing about the fleet and never changes it; it only reads the event log.

pub mod deliver;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

pub use deliver::{Outbox, Retry, Sender, signature};
pub use worker::delivery_id;

use crate::manifest::policy::TrustPolicy;
use crate::store::{DeadLetter, Store, StoreError, Subscription};

/// The event families a pattern may name: `run.*`, `rollout.*`, `health.*`, `hold.*`.
pub const FAMILIES: &[&str] = &["run", "rollout", "health", "hold"];

/// A subscription's secret is at least this long: it is the receiver's only proof.
pub const MIN_SECRET_LEN: usize = 16;

/// How many dead letters a page shows when not told, and at most.
pub const DEAD_LETTERS_LIMIT: (usize, usize) = (50, 1000);

/// At most this many patterns per subscription.
const MAX_PATTERNS: usize = 32;

/// Why an operation on subscriptions could not be carried out; the control layer shows it
/// as its own `ControlError`.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("no webhook subscription `{0}`")]
    NotFound(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The URL is not one the trust policy allows.
    #[error("{0}")]
    Refused(String),
    #[error("the state database failed")]
    Store(#[from] StoreError),
}

/// `POST /v1/webhooks/subscribe`'s body.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Where deliveries are POSTed: an http(s) URL under one of the trust policy's
    /// `allowed_notification_urls`.
    #[schemars(regex(
        pattern = r"^https?://(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?)(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]*)?$"
    ))]
    pub url: String,
    /// Event kinds: exact (`rollout.finished`), a family (`health.*`: `run`, `rollout`,
    /// `health`, `hold`), or `*` for every event.
    #[schemars(length(min = 1, max = MAX_PATTERNS), inner(regex(pattern = r"^(\*|(run|rollout|health|hold)\.(\*|[a-z0-9_]+))$")))]
    pub events: Vec<String>,
    /// Signs every delivery: `X-MCP-Orchestration-Signature: sha256=<hex HMAC-SHA256 of
    /// the body>`. At least 16 characters; never shown again.
    #[schemars(length(min = MIN_SECRET_LEN))]
    pub secret: String,
}

/// What a subscriber receives (the body of every delivery): the event as `GET /events`
/// has it, with the delivery's and the subscription's ids.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// `<subscription_id>:<event id>`: the same on every try and after a restart, so a
    /// receiver drops a repeat by it (also in `X-MCP-Orchestration-Delivery`).
    pub delivery_id: String,
    pub subscription_id: String,
    pub event: crate::store::Event,
}

/// A subscription as listed: never its secret.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Always true: a subscription cannot exist without one.
    pub secret_set: bool,
    pub created_at: Timestamp,
    /// The id of the last event delivered or given up on.
    pub cursor: i64,
    /// Deliveries given up on after the last try.
    pub dead_letters: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Unsubscribed {
    pub id: String,
    pub deleted: bool,
}

/// A delivery given up on after its last try.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterView {
    pub id: i64,
    /// `null` for a manifest's notification channel.
    pub subscription_id: Option<String>,
    pub url: String,
    pub delivery_id: String,
    /// The event log's id (a subscription's delivery).
    pub event_id: Option<i64>,
    pub kind: String,
    /// The body as it was sent.
    pub body: serde_json::Value,
    pub attempts: u32,
    /// Why the last try failed.
    pub error: String,
    pub failed_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterPage {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterView>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> DeadLetterView {
        DeadLetterView {
            id: d.id,
            subscription_id: d.subscription_id,
            url: d.url,
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            kind: d.kind,
            body: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::String(d.body)),
            attempts: d.attempts,
            error: d.error,
            failed_at: d.failed_at,
        }
    }
}

/// Whether a subscription with `patterns` wants an event of `kind`.
pub fn wants(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| matches(p, kind))
}

/// `*` matches every kind, `family.*` every kind of the family, anything else itself.
pub fn matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(family) => kind
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == kind,
    }
}

/// Checks one pattern: `*`, `family.*` or `family.name` of a known family.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    let Some((family, name)) = pattern.split_once('.') else {
        return Err(format!(
            "`{pattern}` is not an event kind: give `family.name` or `family.*` (families: {})",
            FAMILIES.join(", ")
        ));
    };
    if !FAMILIES.contains(&family) {
        return Err(format!(
            "`{pattern}`: no event family `{family}` (families: {})",
            FAMILIES.join(", ")
        ));
    }
    let valid = name == "*"
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{pattern}`: the part after `{family}.` is a kind's name (lower case, digits, `_`) or `*`"
        ))
    }
}

/// The subscriptions, their workers and the dead letters.
pub struct Subscriptions {
    store: Store,
    trust: TrustPolicy,
    sender: Sender,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Each running worker's token, by subscription id.
    workers: Mutex<HashMap<String, CancellationToken>>,
}

impl Subscriptions {
    /// Workers run on `tasks` and end with `shutdown`.
    pub fn new(
        store: Store,
        trust: TrustPolicy,
        retry: Retry,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Subscriptions> {
        Arc::new(Subscriptions {
            store,
            trust,
            sender: Sender::new(retry),
            tasks,
            shutdown,
            workers: Mutex::default(),
        })
    }

    /// Starts a worker for every stored subscription (at the agent's start). A stored URL
    /// the trust policy no longer allows gets none, and a warning.
    pub async fn start(&self) -> Result<usize, StoreError> {
        let all = self.store.call(|s| s.subscriptions()).await?;
        let mut started = 0;
        for sub in all {
            if self.trust.allows_notification_url(&sub.url) {
                self.spawn(sub);
                started += 1;
            } else {
                warn!(subscription = %sub.id, url = %sub.url, "the trust policy no longer allows this subscription's URL; nothing is delivered to it");
            }
        }
        Ok(started)
    }

    fn spawn(&self, sub: Subscription) {
        let stop = self.shutdown.child_token();
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sub.id.clone(), stop.clone());
        self.tasks.spawn(worker::run(
            self.store.clone(),
            self.sender.clone(),
            sub,
            stop,
        ));
    }

    /// Subscribes `request.url` to the events it names, from the next event on.
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<SubscriptionView, SubscriptionError> {
        let url = request.url.trim().to_owned();
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(SubscriptionError::Invalid(format!(
                    "`{url}` is not an http(s) URL"
                )));
            }
        }
        if !self.trust.allows_notification_url(&url) {
            return Err(SubscriptionError::Refused(format!(
                "the trust policy ({}) does not allow deliveries to `{url}`: list its prefix in `allowed_notification_urls`",
                self.trust.source
            )));
        }
        if request.events.is_empty() {
            return Err(SubscriptionError::Invalid(
                "name at least one event kind (`*` for every event)".to_owned(),
            ));
        }
        if request.events.len() > MAX_PATTERNS {
            return Err(SubscriptionError::Invalid(format!(
                "at most {MAX_PATTERNS} event kinds"
            )));
        }
        let mut events: Vec<String> = Vec::new();
        for p in &request.events {
            let p = p.trim();
            check_pattern(p).map_err(SubscriptionError::Invalid)?;
            if !events.iter().any(|e| e == p) {
                events.push(p.to_owned());
            }
        }
        if request.secret.chars().count() < MIN_SECRET_LEN {
            return Err(SubscriptionError::Invalid(format!(
                "the secret must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
            )));
        }
        let id = deliver::random_id("sub-");
        let secret = request.secret;
        let sub = self
            .store
            .call(move |s| s.add_subscription(&id, &url, &events, &secret, Timestamp::now()))
            .await?;
        let view = view(&sub, 0);
        self.spawn(sub);
        Ok(view)
    }

    pub async fn list(&self) -> Result<SubscriptionList, SubscriptionError> {
        let (subs, dead) = self
            .store
            .call(|s| Ok((s.subscriptions()?, s.dead_letter_counts()?)))
            .await?;
        Ok(SubscriptionList {
            subscriptions: subs
                .iter()
                .map(|s| view(s, dead.get(&s.id).copied().unwrap_or(0)))
                .collect(),
        })
    }

    /// Deletes a subscription and stops its worker (a delivery under way is abandoned).
    pub async fn delete(&self, id: &str) -> Result<Unsubscribed, SubscriptionError> {
        let key = id.to_owned();
        if !self
            .store
            .call(move |s| s.delete_subscription(&key))
            .await?
        {
            return Err(SubscriptionError::NotFound(id.to_owned()));
        }
        if let Some(stop) = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            stop.cancel();
        }
        Ok(Unsubscribed {
            id: id.to_owned(),
            deleted: true,
        })
    }

    /// Dead letters, newest first, of one subscription (which must exist) or of all
    /// (notification channels' included).
    pub async fn dead_letters(
        &self,
        subscription: Option<&str>,
        limit: Option<usize>,
    ) -> Result<DeadLetterPage, SubscriptionError> {
        let (default, max) = DEAD_LETTERS_LIMIT;
        let limit = match limit {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                return Err(SubscriptionError::Invalid(format!(
                    "`limit` must be between 1 and {max}, not {n}"
                )));
            }
        };
        let sub = subscription.map(str::to_owned);
        let rows = self
            .store
            .call(move |s| {
                if let Some(id) = &sub
                    && s.subscription(id)?.is_none()
                {
                    return Ok(None);
                }
                s.dead_letters(sub.as_deref(), limit).map(Some)
            })
            .await?;
        let rows = rows.ok_or_else(|| {
            SubscriptionError::NotFound(subscription.unwrap_or_default().to_owned())
        })?;
        Ok(DeadLetterPage {
            dead_letters: rows.into_iter().map(DeadLetterView::from).collect(),
        })
    }
}

fn view(s: &Subscription, dead_letters: usize) -> SubscriptionView {
    SubscriptionView {
        id: s.id.clone(),
        url: s.url.clone(),
        events: s.events.clone(),
        secret_set: !s.secret.is_empty(),
        created_at: s.created_at,
        cursor: s.cursor,
        dead_letters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_a_kind_a_family_or_everything() {
        assert!(matches("*", "run.started"));
        assert!(matches("health.*", "health.transition"));
        assert!(!matches("health.*", "healthy.transition"));
        assert!(!matches("run.*", "rollout.started"));
        assert!(matches("rollout.finished", "rollout.finished"));
        assert!(!matches("rollout.finished", "rollout.finished_late"));
        let p = vec!["run.finished".to_owned(), "health.*".to_owned()];
        assert!(wants(&p, "health.recovery"));
        assert!(wants(&p, "run.finished"));
        assert!(!wants(&p, "run.started"));
    }

    #[test]
    fn only_known_families_and_well_formed_kinds_are_accepted() {
        for ok in [
            "*",
            "run.*",
            "rollout.finished",
            "health.transition",
            "hold.*",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "runs.*",
            "health",
            "health.",
            "health.Transition",
            "*.started",
            "",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
