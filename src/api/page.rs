//! `GET /`, `/ui/app.js`, `/ui/app.css`: the status page's files (`crate::ui`), with the
//! headers that keep the page to this origin.

use axum::http::Uri;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

use crate::ui::{ASSETS, POLICY};

/// The file served at the request's path.
pub async fn asset(uri: Uri) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(path, _, _)| *path == uri.path())
    else {
        return super::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such route",
        )
        .into_response();
    };
    (
        [
            (CONTENT_TYPE, *content_type),
            (CONTENT_SECURITY_POLICY, POLICY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            // Small, and a new agent may bring a new page: always asked again.
            (CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response()
}
