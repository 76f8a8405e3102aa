//! `POST /webhooks/git`: a push notification (GitHub/Gitea style) that wakes a sync.
//!
//! With a secret configured, the body must carry a valid `X-Hub-Signature-256`
//! (`sha256=<hex HMAC-SHA256 of the body>`, compared in constant time) or Gitea's
//! `X-Gitea-Signature` (bare hex); otherwise the request is refused with 401 and does
//! nothing. The payload only wakes the agent: what to deploy always comes from git itself,
//! so a forged push event cannot choose a commit.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::error::ApiError;
use crate::agent::{AgentState, Trigger};

pub async fn push(
    State(state): State<Arc<AgentState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let tracked = format!("refs/heads/{}", state.branch);
    if let Some(r) = payload.get("ref").and_then(Value::as_str)
        && r != tracked
    {
        return Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({ "accepted": false, "reason": format!("`{r}` is not the tracked branch `{tracked}`") }),
            ),
        ));
    }
    state.wake(Trigger::Webhook);
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))))
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
}
