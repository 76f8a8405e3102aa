//! The operations behind the HTTP API and the MCP tools: each composes [`AgentState`], the
//! store and the monitor into the JSON both surfaces return, with the [`ApiError`] both
//! report. Nothing here knows about routes, status codes of success, or MCP framing, so a
//! route and a tool that do the same thing cannot drift apart.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::agent::{AgentState, OperatorError, ServerView};

/// How many rollouts (or runs) a page shows when not told, and at most. The query types'
/// schemas (`GET /openapi.json`, the MCP tools) are built from these too.
pub const ROLLOUTS_LIMIT: (usize, usize) = (20, 500);
/// How many events a page shows when not told, and at most.
pub const EVENTS_LIMIT: (usize, usize) = (50, 1000);

/// A page size: the default when none is given; one outside `1..=max` is refused, as the
/// documented schema says, rather than quietly cut.
pub fn limit(given: Option<usize>, (default, max): (usize, usize)) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::validation_failed(format!(
            "`limit` must be between 1 and {max}, not {n}"
        ))),
    }
}

/// An event id to page after: never negative.
pub fn after(given: Option<i64>) -> Result<Option<i64>, ApiError> {
    match given {
        Some(n) if n < 0 => Err(ApiError::validation_failed(format!(
            "`after` must be an event id (a non-negative integer), not {n}"
        ))),
        other => Ok(other),
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    ApiError::internal(crate::error_text::chain(&e))
}

pub fn operator_error(e: OperatorError) -> ApiError {
    match e {
        OperatorError::UnknownServer(id) => ApiError::server_not_found(&id),
        e @ (OperatorError::NothingToRollBackTo(_)
        | OperatorError::Stopped(_)
        | OperatorError::NotInHistory { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "CONFLICT", e.to_string())
        }
        other => ApiError::internal(crate::error_text::chain(&other)),
    }
}

fn known(state: &AgentState, id: &str) -> bool {
    state.fleet().servers.iter().any(|s| s.id == id)
}

/// One server with its live health.
pub fn server(state: &AgentState, id: &str) -> Result<ServerView, ApiError> {
    state
        .fleet_live()
        .servers
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::server_not_found(id))
}

/// An operator's stop, kept until [`deploy`].
pub async fn stop(state: &AgentState, id: &str) -> Result<Value, ApiError> {
    let stopped = state.stop(id).await.map_err(operator_error)?;
    Ok(json!({ "server_id": id, "stopped_instances": stopped, "held": true }))
}

/// Lifts a stop and retries a failed version; the sync loop converges right away.
pub async fn deploy(state: &AgentState, id: &str) -> Result<Value, ApiError> {
    state.deploy(id).await.map_err(operator_error)?;
    Ok(json!({ "server_id": id, "deploy": "requested" }))
}

/// A fresh instance replaces the current one, in the background.
pub async fn restart(state: &Arc<AgentState>, id: &str) -> Result<Value, ApiError> {
    state.restart(id).await.map_err(operator_error)?;
    Ok(json!({ "server_id": id, "restart": "requested" }))
}

/// Holds the server at `to` (a version, `v` prefix allowed) or at the version it ran
/// before, pausing auto-update for it until resumed.
pub async fn rollback(
    state: &AgentState,
    id: &str,
    to: Option<&str>,
    force: bool,
) -> Result<Value, ApiError> {
    let to = to
        .map(|v| {
            semver::Version::parse(v.trim_start_matches('v'))
                .map_err(|e| ApiError::validation_failed(format!("`{v}` is not a version: {e}")))
        })
        .transpose()?;
    let version = state
        .rollback(id, to, force)
        .await
        .map_err(operator_error)?;
    Ok(json!({ "server_id": id, "rollback_to": version, "auto_update": "paused until resumed" }))
}

/// Lifts an operator's rollback: auto-update resumes under the manifest's policy.
pub async fn resume(state: &AgentState, id: &str) -> Result<Value, ApiError> {
    let lifted = state.resume(id).await.map_err(operator_error)?;
    Ok(json!({ "server_id": id, "resumed": lifted }))
}

/// The server's rollouts, newest first. A server that left the manifest still has its
/// history; only an id never seen is unknown.
pub async fn server_rollouts(
    state: &AgentState,
    id: &str,
    limit_to: Option<usize>,
) -> Result<Value, ApiError> {
    let limit = limit(limit_to, ROLLOUTS_LIMIT)?;
    let s = id.to_owned();
    let rollouts = state
        .store
        .call(move |st| st.rollouts(Some(&s), limit))
        .await
        .map_err(store_error)?;
    if rollouts.is_empty() && !known(state, id) {
        return Err(ApiError::server_not_found(id));
    }
    Ok(json!({ "server_id": id, "rollouts": rollouts }))
}

/// The health of a server of the manifest that the monitor does not watch: it has no
/// running instance to probe (not started yet, stopped, or unable to run here).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct UnmonitoredHealth {
    pub server_id: String,
    #[schemars(extend("const" = "unknown"))]
    pub state: &'static str,
    #[schemars(extend("const" = false))]
    pub monitored: bool,
    pub reason: &'static str,
}

/// State, since when and why, the last probe, the consecutive counts, and the recovery
/// events since the last transition; for a server without an instance,
/// [`UnmonitoredHealth`].
pub async fn server_health(state: &AgentState, id: &str) -> Result<Value, ApiError> {
    let Some(h) = state.monitor.get(id) else {
        if known(state, id) {
            let unmonitored = UnmonitoredHealth {
                server_id: id.to_owned(),
                state: "unknown",
                monitored: false,
                reason: "the server has no running instance to probe",
            };
            return serde_json::to_value(unmonitored)
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        return Err(ApiError::server_not_found(id));
    };
    let s = id.to_owned();
    let recent = state
        .store
        .call(move |st| st.health_events(Some(&s), None, 20))
        .await
        .map_err(store_error)?;
    let recovery: Vec<_> = recent
        .iter()
        .take_while(|e| {
            e.kind != "transition"
                || e.to_state.as_deref() == Some("unhealthy")
                || e.to_state.as_deref() == Some("failed")
        })
        .filter(|e| e.kind == "recovery")
        .cloned()
        .collect();
    let mut v = serde_json::to_value(&h).map_err(|e| ApiError::internal(e.to_string()))?;
    v["monitored"] = json!(true);
    v["recovery"] = json!(recovery);
    Ok(v)
}

/// Every monitored server's health, and counts by state.
pub fn health_status(state: &AgentState) -> Value {
    let all = state.monitor.snapshot();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for h in &all {
        *counts.entry(h.state.as_str()).or_default() += 1;
    }
    json!({ "servers": all, "counts": counts })
}

/// One server's health events, newest first; `after` pages forward (for following).
pub async fn server_health_events(
    state: &AgentState,
    id: &str,
    after: Option<i64>,
    limit_to: Option<usize>,
) -> Result<Value, ApiError> {
    let limit = limit(limit_to, EVENTS_LIMIT)?;
    let after = self::after(after)?;
    let s = id.to_owned();
    let events = state
        .store
        .call(move |st| st.health_events(Some(&s), after, limit))
        .await
        .map_err(store_error)?;
    if events.is_empty() && !known(state, id) {
        return Err(ApiError::server_not_found(id));
    }
    Ok(json!({ "server_id": id, "events": events }))
}

/// Health events of every server (or of `server`, unchecked, as a filter), newest first.
pub async fn health_events(
    state: &AgentState,
    server: Option<String>,
    after: Option<i64>,
    limit_to: Option<usize>,
) -> Result<Value, ApiError> {
    let limit = limit(limit_to, EVENTS_LIMIT)?;
    let after = self::after(after)?;
    let events = state
        .store
        .call(move |st| st.health_events(server.as_deref(), after, limit))
        .await
        .map_err(store_error)?;
    Ok(json!({ "events": events }))
}
