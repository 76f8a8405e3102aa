//! Sending one delivery: a JSON POST with its id, kind and (with a secret) an HMAC-SHA256
//! signature over the body, tried until a 2xx answer or the last of [`Retry::attempts`],
//! waiting [`Retry::wait_after`] between tries. Shared by subscriptions and by manifests'
//! notification channels (`Outbox`), so both retry, back off and dead-letter alike.
//!
//! It never follows a redirect: the URL passed the trust policy, its redirect target did not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{NewDeadLetter, Store};

/// The delivery's id: the same on every try, so a receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "X-MCP-Orchestration-Delivery";
/// The event's kind (`rollout.finished`), or a notification channel's event.
pub const EVENT_HEADER: &str = "X-MCP-Orchestration-Event";
/// `sha256=<hex HMAC-SHA256 of the body with the subscription's secret>`.
pub const SIGNATURE_HEADER: &str = "X-MCP-Orchestration-Signature";
/// Which try this is, from 1.
pub const ATTEMPT_HEADER: &str = "X-MCP-Orchestration-Attempt";

/// How long one try may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a delivery is tried and how long it waits in between: `first`, doubling after
/// every failed try, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failed try.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Retry {
    /// 8 tries over about two minutes: 1, 2, 4, 8, 16, 32 and 60 s apart.
    fn default() -> Retry {
        Retry {
            attempts: 8,
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Retry {
    /// The wait after failed try `attempt` (from 1).
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed with `secret`, as in
/// [`SIGNATURE_HEADER`] (the same form as GitHub's `X-Hub-Signature-256`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new delivery id for deliveries that are not an event's (notification channels).
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    // Without OS randomness the time still makes ids unique enough to tell tries apart.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = Timestamp::now().as_nanosecond().to_le_bytes()[..8]
            .try_into()
            .unwrap_or_default();
    }
    format!("{prefix}{}", hex::encode(bytes))
}

/// What one delivery sends.
pub struct Outgoing {
    pub url: String,
    pub delivery_id: String,
    pub kind: String,
    pub body: Vec<u8>,
    /// Signs the body when given.
    pub secret: Option<String>,
}

/// How a delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer, at this try.
    Delivered { attempts: u32 },
    /// Every try failed; the last one for this reason.
    GaveUp { attempts: u32, error: String },
    /// The agent is shutting down (or the subscription went) before an answer.
    Stopped,
}

/// The HTTP client deliveries share (no redirects, a timeout per try), built at the first
/// delivery: building it initialises the TLS library, 2.5 MiB of resident memory an agent
/// without subscriptions should not carry (BENCHMARKS.md, "Start-up and idle memory").
#[derive(Clone)]
pub struct Sender {
    client: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
    pub retry: Retry,
}

impl Sender {
    pub fn new(retry: Retry) -> Sender {
        Sender {
            client: std::sync::Arc::default(),
            retry,
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                // Only a broken TLS backend fails here; the default client has the same one.
                .unwrap_or_default()
        })
    }

    /// Tries `out` until it is delivered, every try failed, or `stop` is cancelled.
    pub async fn deliver(&self, out: &Outgoing, stop: &CancellationToken) -> Outcome {
        let attempts = self.retry.attempts.max(1);
        let mut error = String::new();
        for attempt in 1..=attempts {
            let tried = tokio::select! {
                _ = stop.cancelled() => return Outcome::Stopped,
                r = self.try_once(out, attempt) => r,
            };
            match tried {
                Ok(()) => return Outcome::Delivered { attempts: attempt },
                Err(e) => error = e,
            }
            if attempt < attempts {
                warn!(url = %out.url, delivery = %out.delivery_id, attempt, error = %error, "delivery failed; trying again");
                tokio::select! {
                    _ = stop.cancelled() => return Outcome::Stopped,
                    _ = tokio::time::sleep(self.retry.wait_after(attempt)) => {}
                }
            }
        }
        Outcome::GaveUp { attempts, error }
    }

    async fn try_once(&self, out: &Outgoing, attempt: u32) -> Result<(), String> {
        let mut request = self
            .client()
            .post(&out.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &out.delivery_id)
            .header(EVENT_HEADER, &out.kind)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(out.body.clone());
        if let Some(secret) = &out.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret.as_bytes(), &out.body));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("cannot reach it: {}", crate::error_text::chain(&e))),
        }
    }
}

/// A manifest's notification channels (`update_policy.notification_channel`): deliveries
/// without a subscription, one ordered queue per URL, the same tries and backoff as a
/// subscription's and a dead letter after the last. Unsigned (a manifest holds no secret)
/// and not kept across a restart of the agent. Clones share the queues.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    store: Store,
    sender: Sender,
    /// One queue per channel URL, so a channel gets its notifications in order.
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<(String, serde_json::Value)>>>,
    stop: CancellationToken,
}

impl Outbox {
    /// Deliveries end with `stop` (the agent's shutdown).
    pub fn new(store: Store, retry: Retry, stop: CancellationToken) -> Outbox {
        Outbox {
            inner: Arc::new(OutboxInner {
                store,
                sender: Sender::new(retry),
                queues: Mutex::default(),
                stop,
            }),
        }
    }

    /// Queues `payload` (its `event` field names the kind) for `url`; never blocks. The
    /// caller has redacted it.
    pub fn notify(&self, url: String, payload: serde_json::Value) {
        let kind = payload["event"]
            .as_str()
            .unwrap_or("notification")
            .to_owned();
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let item = (kind, payload);
        let item = match queues.get(&url) {
            Some(queue) => match queue.send(item) {
                Ok(()) => return,
                // Its worker ended (a shutdown); a new one would end at once too.
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        queues.insert(url.clone(), tx);
        tokio::spawn(channel_worker(self.inner.clone(), url, rx));
    }
}

/// Delivers one channel's notifications in order.
async fn channel_worker(
    inner: Arc<OutboxInner>,
    url: String,
    mut rx: mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) {
    while let Some((kind, payload)) = tokio::select! {
        _ = inner.stop.cancelled() => None,
        item = rx.recv() => item,
    } {
        let out = Outgoing {
            url: url.clone(),
            delivery_id: random_id("n-"),
            kind,
            body: payload.to_string().into_bytes(),
            secret: None,
        };
        match inner.sender.deliver(&out, &inner.stop).await {
            Outcome::Delivered { .. } => {
                info!(url = %url, delivery = %out.delivery_id, "notification sent")
            }
            Outcome::Stopped => return,
            Outcome::GaveUp { attempts, error } => {
                warn!(url = %url, delivery = %out.delivery_id, attempts, error = %error, "the notification channel did not take the event; recorded as a dead letter");
                let dead = NewDeadLetter {
                    subscription_id: None,
                    url: url.clone(),
                    delivery_id: out.delivery_id.clone(),
                    event_id: None,
                    kind: out.kind.clone(),
                    body: String::from_utf8_lossy(&out.body).into_owned(),
                    attempts,
                    error,
                    failed_at: Timestamp::now(),
                };
                if let Err(e) = inner.store.call(move |s| s.add_dead_letter(&dead)).await {
                    warn!(error = %crate::error_text::chain(&e), "cannot record the dead letter");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_first_up_to_the_longest() {
        let r = Retry {
            attempts: 8,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=6).map(|a| r.wait_after(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.wait_after(1000), Duration::from_secs(1), "no overflow");
        let d = Retry::default();
        let total: Duration = (1..d.attempts).map(|a| d.wait_after(a)).sum();
        assert_eq!(total, Duration::from_secs(123));
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_body_and_a_wrong_secret_does_not_match() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            signature(b"Jeff", b"what do ya want for nothing?"),
            signature(b"Jefe", b"what do ya want for nothing?")
        );
    }

    /// A listener on 127.0.0.1 that answers 200 and hands each request's head and body on.
    async fn listener() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ = tx.send((head.to_lowercase(), body.to_owned()));
                            let _ = socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            break;
                        }
                    }
                }
            }
        });
        (url, rx)
    }

    fn fast(attempts: u32) -> Retry {
        Retry {
            attempts,
            first: Duration::from_millis(10),
            max: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn a_channel_gets_its_notifications_in_order_unsigned_with_an_id_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let outbox = Outbox::new(store, fast(3), CancellationToken::new());
        let (url, mut rx) = listener().await;
        for n in 0..5 {
            outbox.notify(
                url.clone(),
                serde_json::json!({ "event": "rollout_failed", "n": n }),
            );
        }
        let mut ids = std::collections::HashSet::new();
        for n in 0..5 {
            let (head, body) = rx.recv().await.unwrap();
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["n"], n, "in order");
            assert!(
                head.contains("x-mcp-orchestration-event: rollout_failed"),
                "{head}"
            );
            assert!(!head.contains("x-mcp-orchestration-signature"), "{head}");
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-mcp-orchestration-delivery: "))
                .unwrap()
                .to_owned();
            assert!(ids.insert(id), "one id per notification");
        }
    }

    #[tokio::test]
    async fn a_channel_nobody_answers_leaves_a_dead_letter_without_a_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let outbox = Outbox::new(store.clone(), fast(2), CancellationToken::new());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/notify");
        outbox.notify(
            url.clone(),
            serde_json::json!({ "event": "recovery", "server_id": "a" }),
        );
        let dead = loop {
            let dead = store.dead_letters(None, 10).unwrap();
            if !dead.is_empty() {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(dead[0].subscription_id, None);
        assert_eq!(dead[0].url, url);
        assert_eq!(dead[0].kind, "recovery");
        assert_eq!(dead[0].attempts, 2);
        assert!(
            dead[0].error.contains("cannot reach it"),
            "{}",
            dead[0].error
        );
        assert!(dead[0].body.contains("\"server_id\":\"a\""));
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id("n-"), random_id("n-"));
        assert!(random_id("n-").starts_with("n-"));
    }
}
