//! API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time.
//!
//! Who needs a key is the route table's [`Auth`]: mutating routes always, read routes only
//! when the agent listens beyond loopback, `/mcp` whatever the method (its tools stop,
//! deploy and roll back servers), and `GET /health`, `GET /openapi.json` and the webhook
//! (which has its HMAC) never.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::ApiError;
use super::routes::Auth;

fn presented(req: &Request) -> Option<&str> {
    presented_in(req.headers())
}

fn presented_in(h: &axum::http::HeaderMap) -> Option<&str> {
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            h.get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
        })
        .map(str::trim)
}

/// Compares digests, so neither the content nor the length of a key leaks through timing.
fn key_matches(given: &str, keys: &[String]) -> bool {
    let g = Sha256::digest(given.as_bytes());
    let mut any = 0u8;
    for k in keys {
        let d = Sha256::digest(k.as_bytes());
        let diff = g
            .iter()
            .zip(d.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        any |= u8::from(diff == 0);
    }
    any == 1
}

pub async fn require_key(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    // Who may call it comes from the route table (`refuse_unserved` answered the rest).
    let auth = super::routes::at(req.uri().path())
        .and_then(|methods| {
            methods
                .into_iter()
                .find(|(m, _)| m == req.method())
                .map(|(_, a)| a)
        })
        .unwrap_or(Auth::Write);
    if auth == Auth::Open || (auth == Auth::Read && !state.keys_for_reads) {
        return next.run(req).await;
    }
    match check(presented(&req), &state.api_keys) {
        Ok(()) => next.run(req).await,
        Err(refused) => *refused,
    }
}

/// Lets a request through when it carries one of `keys`; otherwise the 401 to answer.
/// The gateway's listener uses it too, with the same keys.
pub fn check_headers(
    headers: &axum::http::HeaderMap,
    keys: &[String],
) -> Result<(), Box<Response>> {
    check(presented_in(headers), keys)
}

fn check(presented: Option<&str>, keys: &[String]) -> Result<(), Box<Response>> {
    match presented {
        Some(k) if key_matches(k, keys) => Ok(()),
        Some(_) => Err(Box::new(unauthorized(
            "the API key is not valid",
            CHALLENGE_INVALID,
        ))),
        None => Err(Box::new(unauthorized(
            "this request needs an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            CHALLENGE,
        ))),
    }
}

/// The challenge of a 401 (RFC 6750 §3, which MCP's authorization follows): a request
/// without a key gets the scheme alone, a wrong key `error="invalid_token"`. HTTP clients
/// (MCP clients among them) read this header, not our envelope, to learn they need a key.
pub const CHALLENGE: &str = r#"Bearer realm="mcp-orchestration""#;
pub const CHALLENGE_INVALID: &str = r#"Bearer realm="mcp-orchestration", error="invalid_token", error_description="the API key is not valid""#;

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    response
}

/// A new random key: 32 bytes from the OS, hex.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    // /dev/urandom is always there on the Linux hosts we support; the fallback mixes the
    // clock and pid so a key is never empty or constant.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&Sha256::digest(seed.as_bytes()));
    }
    format!("mcpo_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_keys_match() {
        let keys = vec!["alpha".to_owned(), "beta".to_owned()];
        assert!(key_matches("beta", &keys));
        assert!(!key_matches("gamma", &keys));
        assert!(!key_matches("", &keys));
        assert!(!key_matches("alpha", &[]));
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
    }
}
