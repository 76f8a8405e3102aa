//! The `/v1/webhooks` routes: thin handlers over `subscriptions::Subscriptions`, which the
//! MCP tools and the CLI share.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::fleet::ControlError;
use crate::subscriptions::{
    DEAD_LETTERS_LIMIT, DeadLetterPage, SubscribeRequest, SubscriptionList, SubscriptionView,
    Unsubscribed,
};

/// `GET /v1/dead-letters`' query.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only this subscription's (every subscription's and notification channel's when
    /// not given).
    pub subscription: Option<String>,
    /// How many, newest first (a value outside the range is refused).
    #[schemars(range(min = 1, max = DEAD_LETTERS_LIMIT.1), extend("default" = DEAD_LETTERS_LIMIT.0))]
    pub limit: Option<usize>,
}

pub async fn subscribe(
    State(state): State<Arc<ApiState>>,
    bytes: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<SubscriptionView>), ApiError> {
    let request: SubscribeRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::validation_failed(format!("invalid subscription: {e}")))?;
    let view = state
        .subscriptions
        .subscribe(request)
        .await
        .map_err(ControlError::from)?;
    Ok((axum::http::StatusCode::CREATED, Json(view)))
}

pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<SubscriptionList>, ApiError> {
    Ok(Json(
        state
            .subscriptions
            .list()
            .await
            .map_err(ControlError::from)?,
    ))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Unsubscribed>, ApiError> {
    Ok(Json(
        state
            .subscriptions
            .delete(&id)
            .await
            .map_err(ControlError::from)?,
    ))
}

pub async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    Ok(Json(
        state
            .subscriptions
            .dead_letters(q.subscription.as_deref(), q.limit)
            .await
            .map_err(ControlError::from)?,
    ))
}
