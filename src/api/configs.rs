//! The seed's `/v1/` routes for client configurations: thin handlers over
//! `clients::service::Configs`, which the MCP tools share.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::clients::service::{
    AddEntry, AvailableServer, AvailableServers, ClientList, ConfigView, DeployReport,
    DeployRequest, DiffReport, DiffRequest, DraftCleared, DraftView, KeysView, ProfileList,
    Published, ValidationReport,
};

/// `POST .../draft/remove`'s body.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The entry's name in the configuration.
    pub name: String,
}

/// A body that must be a JSON document of type `T`; an empty one is `T::default()` when
/// `empty` is given.
fn body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    empty: Option<T>,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(default) = empty
    {
        return Ok(default);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::validation_failed(format!("invalid {what}: {e}")))
}

pub async fn clients(State(state): State<Arc<ApiState>>) -> Json<ClientList> {
    Json(state.configs.clients())
}

pub async fn profiles(
    State(state): State<Arc<ApiState>>,
    Path(client): Path<String>,
) -> Result<Json<ProfileList>, ApiError> {
    Ok(Json(state.configs.profiles(&client).await?))
}

pub async fn config(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<Json<ConfigView>, ApiError> {
    Ok(Json(state.configs.config(&client, &profile).await?))
}

pub async fn latest_artifact(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state.configs.latest_artifact(&client, &profile).await?,
    ))
}

pub async fn artifact(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.configs.artifact(&id).await?))
}

pub async fn diff(
    State(state): State<Arc<ApiState>>,
    bytes: axum::body::Bytes,
) -> Result<Json<DiffReport>, ApiError> {
    let request: DiffRequest = body(&bytes, "diff request", None)?;
    Ok(Json(state.configs.diff(request).await?))
}

pub async fn draft_add(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Json<DraftView>, ApiError> {
    let add: AddEntry = body(&bytes, "entry to add", None)?;
    Ok(Json(state.configs.add(&client, &profile, add).await?))
}

pub async fn draft_remove(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Json<DraftView>, ApiError> {
    let remove: RemoveRequest = body(&bytes, "entry to remove", None)?;
    Ok(Json(
        state
            .configs
            .remove(&client, &profile, &remove.name)
            .await?,
    ))
}

pub async fn draft(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<Json<DraftView>, ApiError> {
    Ok(Json(state.configs.draft(&client, &profile).await?))
}

pub async fn clear_draft(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<Json<DraftCleared>, ApiError> {
    Ok(Json(state.configs.clear_draft(&client, &profile).await?))
}

pub async fn validate(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<Json<ValidationReport>, ApiError> {
    Ok(Json(state.configs.validate(&client, &profile).await?))
}

pub async fn publish(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
) -> Result<(axum::http::StatusCode, Json<Published>), ApiError> {
    Ok((
        axum::http::StatusCode::CREATED,
        Json(state.configs.publish(&client, &profile).await?),
    ))
}

pub async fn deploy(
    State(state): State<Arc<ApiState>>,
    Path((client, profile)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Json<DeployReport>, ApiError> {
    let request: DeployRequest = body(&bytes, "deploy request", Some(DeployRequest::default()))?;
    Ok(Json(
        state.configs.deploy(&client, &profile, request).await?,
    ))
}

pub async fn servers(State(state): State<Arc<ApiState>>) -> Json<AvailableServers> {
    Json(state.configs.servers())
}

pub async fn server(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<AvailableServer>, ApiError> {
    Ok(Json(state.configs.server(&id)?))
}

pub async fn keys(State(state): State<Arc<ApiState>>) -> Result<Json<KeysView>, ApiError> {
    Ok(Json(state.configs.public_keys().await?))
}

pub async fn initialize_keys(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<KeysView>, ApiError> {
    Ok(Json(state.configs.initialize_keys().await?))
}

pub async fn rotate_keys(State(state): State<Arc<ApiState>>) -> Result<Json<KeysView>, ApiError> {
    Ok(Json(state.configs.rotate_keys().await?))
}
