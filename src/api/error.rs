//! The error envelope every failing response carries:
//! `{"error": {"code", "message", "details", "timestamp", "request_id"}}`.
//!
//! Handlers return [`ApiError`]; the request-id middleware renders it (it alone knows the
//! request id), and also wraps axum's own rejections (bad JSON, wrong method, unknown route)
//! so no client ever sees a bare text error.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const REQUEST_ID: &str = "x-request-id";

/// What a failing response's body is (and what `GET /openapi.json` documents).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable: `SERVER_NOT_FOUND`, `ROLLOUT_NOT_FOUND`, `REVISION_NOT_FOUND`,
    /// `VALIDATION_FAILED`, `BAD_REQUEST`, `UNAUTHORIZED`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`,
    /// `CONFLICT`, `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`, `INTERNAL`.
    pub code: String,
    pub message: String,
    /// Structured context, e.g. `{"server_id": "..."}`; null when there is none.
    pub details: Value,
    pub timestamp: jiff::Timestamp,
    /// The request's `x-request-id`, also in the response header.
    pub request_id: String,
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, documented: `SERVER_NOT_FOUND`, `VALIDATION_FAILED`, `UNAUTHORIZED`, ...
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn server_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "SERVER_NOT_FOUND",
            format!("no server `{id}` in the applied manifest"),
        )
        .with_details(json!({ "server_id": id }))
    }

    /// Input that does not fit what the operation takes (a body, query or tool arguments).
    pub fn validation_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }

    fn from_status(status: StatusCode, message: String) -> ApiError {
        let code = match status {
            StatusCode::BAD_REQUEST => "BAD_REQUEST",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
            StatusCode::CONFLICT => "CONFLICT",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::UNPROCESSABLE_ENTITY => "VALIDATION_FAILED",
            s if s.is_server_error() => "INTERNAL",
            _ => "ERROR",
        };
        let message = if message.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            message
        };
        ApiError::new(status, code, message)
    }

    fn render(&self, request_id: &str) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
                timestamp: jiff::Timestamp::now(),
                request_id: request_id.to_owned(),
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Rendered by `request_id`, which knows the id; the extension carries it there.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        r.extensions_mut().insert(self);
        r
    }
}

fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("req-{:x}{:04x}", t & 0xffff_ffff_ffff, n & 0xffff)
}

/// Keeps what an error's producer set besides its body (`WWW-Authenticate` on a 401,
/// `Retry-After` on a 429, `Allow` on a 405) on the envelope that replaces it.
fn with_headers_of(mut rendered: Response, headers: &axum::http::HeaderMap) -> Response {
    for (name, value) in headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().append(name, value.clone());
        }
    }
    rendered
}

/// Gives every request an id (the client's `x-request-id` when sane, else a new one),
/// echoes it on the response, and renders error envelopes.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let response = next.run(req).await;
    let mut response = if let Some(err) = response.extensions().get::<ApiError>().cloned() {
        with_headers_of(err.render(&id), response.headers())
    } else if response.status().is_client_error() || response.status().is_server_error() {
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            response
        } else {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, 64 * 1024)
                .await
                .unwrap_or_default();
            let err = ApiError::from_status(parts.status, String::from_utf8_lossy(&bytes).into());
            with_headers_of(err.render(&id), &parts.headers)
        }
    } else {
        response
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

impl From<crate::fleet::ControlError> for ApiError {
    fn from(e: crate::fleet::ControlError) -> ApiError {
        use crate::fleet::ControlError;
        let status = match &e {
            ControlError::NotFound { .. } => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // The request is well formed; what it names is in a state that refuses it.
            ControlError::Refused { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.code(), e.to_string()).with_details(e.details())
    }
}
