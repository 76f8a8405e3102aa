//! `POST /webhooks/git`: a push notification (GitHub/Gitea style) that wakes a sync.
//!
//! With a secret configured, the body must carry a valid `X-Hub-Signature-256`
//! (`sha256=<hex HMAC-SHA256 of the body>`, compared in constant time) or Gitea's
//! `X-Gitea-Signature` (bare hex); otherwise the request is refused with 401 and does
//! nothing. The payload only wakes the agent: what to deploy always comes from git itself,
//! so a forged push event cannot choose a commit.
//!
//! A valid signature does not make a request new: a captured delivery could be replayed
//! forever. Each source address gets a token bucket (a burst of [`BURST`], then
//! [`PER_SECOND`] a second; 429 with `Retry-After` beyond it), and a delivery seen before
//! is answered without waking anything. A delivery is known by its forge's id
//! (`X-GitHub-Delivery`, `X-Gitea-Delivery`) and by its signature: the id header is not
//! signed, so a replay with a fresh id still repeats the signature. Both are remembered
//! only once the signature checked out, so a forger cannot spend a real delivery's id in
//! advance.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::ApiState;
use super::error::ApiError;
use crate::fleet::Trigger;

/// Requests a source may send at once…
pub const BURST: f64 = 20.0;
/// …and then per second.
pub const PER_SECOND: f64 = 2.0;
/// How many delivery ids are remembered (the oldest is forgotten first).
const REMEMBERED: usize = 4096;
/// Sources tracked before idle full buckets are forgotten.
const SOURCES: usize = 10_000;

/// Replay and flood protection for the webhook; one per router.
#[derive(Debug, Default)]
pub struct Guard {
    // A std lock: held for a few map operations, never across an await.
    inner: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    seen: HashSet<String>,
    order: VecDeque<String>,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        self.at = now;
    }
}

impl Guard {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token from `source`'s bucket, or says how long until one is back.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut g = self.lock();
        if g.buckets.len() >= SOURCES {
            g.buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST
            });
        }
        let bucket = g.buckets.entry(source).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / PER_SECOND))
        }
    }

    /// Whether `id` is new; it is remembered from now on.
    pub fn first_delivery(&self, id: &str) -> bool {
        let mut g = self.lock();
        if !g.seen.insert(id.to_owned()) {
            return false;
        }
        g.order.push_back(id.to_owned());
        if g.order.len() > REMEMBERED
            && let Some(old) = g.order.pop_front()
        {
            g.seen.remove(&old);
        }
        true
    }
}

/// What identifies a delivery: the forge's id header and the signature, each if present.
fn delivery_keys(headers: &HeaderMap, signature: Option<&str>) -> Vec<String> {
    ["x-github-delivery", "x-gitea-delivery", "x-gogs-delivery"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|id| format!("delivery:{}", id.trim()))
        .into_iter()
        .chain(signature.map(|s| format!("signature:{}", s.trim().to_ascii_lowercase())))
        .collect()
}

/// The webhook's answer: whether it woke a sync, and why not.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Answer {
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn push(
    State(state): State<Arc<ApiState>>,
    guard: Option<axum::Extension<Arc<Guard>>>,
    peer: Option<axum::Extension<super::serve::Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let guard = guard.map(|g| g.0).unwrap_or_default();
    if let Some(axum::Extension(super::serve::Peer(addr))) = peer
        && let Err(wait) = guard.admit(addr.ip(), Instant::now())
    {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many webhook requests from {}; at most {BURST} at once and {PER_SECOND} a second",
                addr.ip()
            ),
        )
        .into_response();
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        return Ok(response);
    }
    let mut signature_seen = None;
    if let Some(secret) = &state.webhook_secret {
        let signature = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .or_else(|| {
                headers
                    .get("x-gitea-signature")
                    .and_then(|v| v.to_str().ok())
            });
        let Some(signature) = signature else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the webhook needs an X-Hub-Signature-256 header (HMAC-SHA256 of the body with the webhook secret)",
            ));
        };
        if !verify(secret.as_bytes(), &body, signature) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the webhook signature does not match the body; check the webhook secret",
            ));
        }
        signature_seen = Some(signature.to_owned());
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("the webhook body is not JSON: {e}"),
            )
        })?
    };
    // An empty body only wakes; one that is there must be a push event, `null` included.
    if !body.is_empty() && !payload.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the webhook body must be a JSON object (a push event)",
        ));
    }
    let keys = delivery_keys(&headers, signature_seen.as_deref());
    // Every key is remembered, also when an earlier one was already known.
    let new: Vec<bool> = keys.iter().map(|k| guard.first_delivery(k)).collect();
    let fresh = new.iter().all(|n| *n);
    if !fresh {
        return Ok((
            StatusCode::OK,
            Json(Answer {
                accepted: false,
                reason: Some("this delivery was seen before; a replay wakes nothing".into()),
            }),
        )
            .into_response());
    }
    let tracked = format!("refs/heads/{}", state.branch);
    if let Some(r) = payload.get("ref").and_then(Value::as_str)
        && r != tracked
    {
        return Ok((
            StatusCode::ACCEPTED,
            Json(Answer {
                accepted: false,
                reason: Some(format!("`{r}` is not the tracked branch `{tracked}`")),
            }),
        )
            .into_response());
    }
    state.control.wake(Trigger::Webhook);
    let woke = Answer {
        accepted: true,
        reason: None,
    };
    Ok((StatusCode::ACCEPTED, Json(woke)).into_response())
}

/// Constant-time check of a hex HMAC-SHA256 signature.
pub fn verify(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The `X-Hub-Signature-256` value for a body, for clients and tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let sig = sign(b"s3cret", b"{\"ref\":\"refs/heads/main\"}");
        let hex = sig.strip_prefix("sha256=").unwrap();
        assert!(verify(b"s3cret", b"{\"ref\":\"refs/heads/main\"}", hex));
        assert!(!verify(b"s3cret", b"{\"ref\":\"refs/heads/evil\"}", hex));
        assert!(!verify(b"other", b"{\"ref\":\"refs/heads/main\"}", hex));
        assert!(!verify(b"s3cret", b"x", "not hex"));
    }

    #[test]
    fn a_source_gets_a_burst_then_a_steady_rate() {
        let guard = Guard::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert!(guard.admit(a, t0).is_ok());
        }
        let wait = guard.admit(a, t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs_f64(1.0 / PER_SECOND),
            "{wait:?}"
        );
        assert!(
            guard.admit(b, t0).is_ok(),
            "another source has its own bucket"
        );
        let later = t0 + Duration::from_secs_f64(1.0 / PER_SECOND);
        assert!(guard.admit(a, later).is_ok());
        assert!(guard.admit(a, later).is_err());
    }

    #[test]
    fn a_delivery_is_new_once_and_old_ids_are_forgotten_in_order() {
        let guard = Guard::default();
        assert!(guard.first_delivery("d1"));
        assert!(!guard.first_delivery("d1"));
        for i in 0..REMEMBERED {
            assert!(guard.first_delivery(&format!("x{i}")));
        }
        assert!(
            guard.first_delivery("d1"),
            "forgotten after {REMEMBERED} newer ids"
        );
    }

    #[test]
    fn a_delivery_is_known_by_its_id_and_its_signature() {
        let mut h = HeaderMap::new();
        assert_eq!(delivery_keys(&h, Some("AB")), vec!["signature:ab"]);
        assert!(delivery_keys(&h, None).is_empty());
        h.insert("x-github-delivery", HeaderValue::from_static("72d3162e"));
        assert_eq!(
            delivery_keys(&h, Some("ab")),
            vec!["delivery:72d3162e", "signature:ab"]
        );
    }
}
