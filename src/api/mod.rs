//! The agent's HTTP API (axum): status for operators and the gateway, run history, and the
//! git webhook; the MCP service the agent hands [`router`] is nested at `/mcp`, behind the
//! same keys and limits. It holds no state of its own: every handler is an adapter over
//! [`crate::fleet::Control`], which the MCP tools share, plus the API's own configuration
//! ([`ApiState`]).

mod auth;
mod configs;
mod error;
mod events;
pub mod openapi;
mod page;
mod routes;
pub mod serve;
mod subscriptions;
mod webhook;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use auth::{check_headers as check_key, generate_key};
pub use error::{ApiError, ErrorEnvelope, REQUEST_ID, request_id};
pub use webhook::{sign as sign_webhook, verify as verify_webhook};

use crate::fleet::{self, Control};

/// What the handlers read: the control layer, and the API's own configuration and counters.
pub struct ApiState {
    pub control: Arc<Control>,
    /// The client-configuration operations (`/v1/`).
    pub configs: Arc<crate::clients::service::Configs>,
    /// Webhook subscriptions to the event log (`/v1/webhooks`).
    pub subscriptions: Arc<crate::subscriptions::Subscriptions>,
    pub runtime: crate::runtime::RuntimeKind,
    /// The tracked branch: a webhook for another one wakes nothing.
    pub branch: String,
    pub webhook_secret: Option<String>,
    /// API keys accepted (see `auth`).
    pub api_keys: Vec<String>,
    /// Whether read routes need a key too (the agent listens beyond loopback).
    pub keys_for_reads: bool,
    pub started_at: jiff::Timestamp,
    /// How long syncs took (`GET /metrics`).
    pub sync_duration: Arc<crate::metrics::Histogram>,
    /// Gateway deliveries and failures (`GET /metrics`).
    pub publish_counts: crate::publish::Counts,
    /// Pushes of the deploy results' git notes, and failures (`GET /metrics`).
    pub notes_pushes: Arc<crate::metrics::Attempts>,
    /// The agent's shutdown token. Long-lived responses (event streams) end with it, so
    /// they never hold the HTTP server's graceful shutdown open.
    pub shutdown: CancellationToken,
    /// What the start still waits for (`GET /health`'s `starting`).
    pub startup: Startup,
}

/// What a starting agent still waits for: the API answers before the git mirror is open
/// and the first sync is done.
#[derive(Clone, Default)]
pub struct Startup(Arc<std::sync::Mutex<Option<&'static str>>>);

impl Startup {
    pub fn set(&self, step: Option<&'static str>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = step;
    }

    pub fn get(&self) -> Option<&'static str> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub use routes::MCP_PATH;

/// The API's router with `mcp` (the MCP tools' streamable HTTP service) nested at
/// [`MCP_PATH`].
pub fn router<S>(state: Arc<ApiState>, mcp: S) -> Router
where
    S: tower_service::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let mut router = Router::new();
    for route in routes::table() {
        // Routes of one path with different methods merge into one method router.
        if let Some(handler) = route.handler {
            router = router.route(route.path, handler);
        }
    }
    router
        // MCP's streamable HTTP: one service for POST (messages), GET (a session's stream)
        // and DELETE (end a session), behind the same auth.
        .nest_service(
            MCP_PATH,
            Router::new()
                .fallback_service(mcp)
                .layer(axum::middleware::from_fn(session_end_is_no_content)),
        )
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        // Before the keys: a wrong method is a 405 and an unknown path a 404 for everyone,
        // not a 401 that suggests a key would help.
        .layer(axum::middleware::from_fn(refuse_unserved))
        .layer(axum::Extension(Arc::new(webhook::Guard::default())))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::from_fn(error::request_id))
        .with_state(state)
}

/// Answers a request the router would refuse anyway before the API keys are asked for: an
/// unknown path is a 404 and a method the path does not serve (`TRACE`, `PUT`, ...) a 405
/// with `Allow`, in the error envelope. The route list is public (`GET /openapi.json`),
/// so this tells nobody anything.
async fn refuse_unserved(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(methods) = routes::at(req.uri().path()) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route").into_response();
    };
    if methods.iter().any(|(m, _)| m == req.method()) {
        return next.run(req).await;
    }
    let allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
    let allow = allow.join(", ");
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "{} is not served here; this path takes {allow}",
            req.method()
        ),
    )
    .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    response
}

/// rmcp answers a `DELETE /mcp` that ended a session with 202 Accepted, which MCP clients
/// log as a failed termination (they expect 200 or 204): the session is gone by then, so
/// it is a 204 No Content.
async fn session_end_is_no_content(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let delete = req.method() == Method::DELETE;
    let mut response = next.run(req).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// Refuses a declared body over [`BODY_LIMIT`] before any handler runs, also on routes that
/// never read one (`DefaultBodyLimit` acts only where a body is read).
async fn refuse_large_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request bodies are limited to {BODY_LIMIT} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// `GET /openapi.json`: the API described from the routes and types above.
async fn openapi_json() -> Json<Value> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(openapi::document).clone())
}

/// Serves the API on `listener` until `shutdown` is cancelled, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: serve::Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve(listener, router, limits, shutdown).await
}

/// The agent's own health, in the health standard's format.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct AgentHealth {
    #[schemars(extend("enum" = ["healthy", "degraded"]))]
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
    runtime: &'static str,
    applied_revision: Option<String>,
    /// Set while the repository cannot be fetched.
    source_error: Option<String>,
    /// Set while the runtime cannot list its instances.
    runtime_error: Option<String>,
    /// Set while the state database cannot answer.
    store_error: Option<String>,
    /// While the agent starts, what it still waits for (`opening the git mirror`, `the
    /// first sync`); null once the first sync is done.
    starting: Option<&'static str>,
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<AgentHealth> {
    let fleet = state.control.fleet();
    let uptime = jiff::Timestamp::now()
        .duration_since(state.started_at)
        .as_secs_f64();
    let status = if fleet.source_error.is_some()
        || fleet.runtime_error.is_some()
        || fleet.store_error.is_some()
    {
        "degraded"
    } else {
        "healthy"
    };
    Json(AgentHealth {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: uptime,
        runtime: state.runtime.as_str(),
        applied_revision: fleet.applied_revision,
        source_error: fleet.source_error,
        runtime_error: fleet.runtime_error,
        store_error: fleet.store_error,
        starting: state.startup.get(),
    })
}

async fn servers(State(state): State<Arc<ApiState>>) -> Json<fleet::FleetView> {
    Json(state.control.fleet_live())
}

async fn server(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::ServerView>, ApiError> {
    Ok(Json(state.control.server(&id)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Limit {
    /// How many, newest first (a value outside the range is refused).
    #[schemars(range(min = 1, max = fleet::ROLLOUTS_LIMIT.1), extend("default" = fleet::ROLLOUTS_LIMIT.0))]
    limit: Option<usize>,
}

async fn revisions(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<Limit>,
) -> Result<Json<fleet::RevisionPage>, ApiError> {
    Ok(Json(state.control.revisions(q.limit).await?))
}

async fn revision(
    State(state): State<Arc<ApiState>>,
    Path(commit): Path<String>,
) -> Result<Json<crate::store::RunRecord>, ApiError> {
    Ok(Json(state.control.revision(&commit).await?))
}

/// `DELETE /servers/{id}`: an operator's stop, kept until `POST /servers/{id}/deploy`.
async fn stop(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::Stopped>, ApiError> {
    Ok(Json(state.control.stop(&id).await?))
}

/// `POST /servers/{id}/deploy`: lifts a stop and retries a failed version; converges now.
async fn deploy(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<fleet::DeployRequested>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.control.deploy(&id).await?)))
}

/// `GET /servers/{id}/rollouts?limit=N`: the server's rollouts, newest first.
async fn server_rollouts(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<fleet::RolloutPage>, ApiError> {
    Ok(Json(state.control.server_rollouts(&id, q.limit).await?))
}

/// `GET /rollouts/{id}`: one rollout with its timeline and the probes of its health gate.
async fn rollout(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::RolloutDetail>, ApiError> {
    Ok(Json(state.control.rollout(&id).await?))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// The version to go back to (a `v` prefix is allowed); by default the last version
    /// that rolled out successfully before the running one.
    #[schemars(regex(
        pattern = r"^v?(0|[1-9]\d{0,18})\.(0|[1-9]\d{0,18})\.(0|[1-9]\d{0,18})(-(0|[1-9]\d{0,18}|\d*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9]\d{0,18}|\d*[A-Za-z-][0-9A-Za-z-]*))*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
    ))]
    to: Option<String>,
    /// Allow a `to` version that never rolled out successfully on this server.
    #[serde(default)]
    force: bool,
}

/// `POST /servers/{id}/rollback` with an optional `{"to": "1.1.0", "force": false}`: an
/// operator rollback to a version from the server's history (any version with `force`),
/// holding the server at that version until `POST /servers/{id}/rollout/resume`.
async fn rollback(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<fleet::RolledBack>), ApiError> {
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::validation_failed(format!("invalid rollback request: {e}")))?
    };
    let answer = state
        .control
        .rollback(&id, request.to.as_deref(), request.force)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// `POST /plan` with `{"files": {...}}` or `{"commit": "REV"}`: what that manifest would
/// change against the running fleet; changes nothing.
async fn plan(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Json<fleet::PlanReport>, ApiError> {
    let request = fleet::PlanRequest::from_json(&body).map_err(ApiError::validation_failed)?;
    Ok(Json(state.control.plan(request).await?))
}

/// `POST /servers/{id}/rollout/resume`: lifts an operator's rollback.
async fn resume(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::Resumed>, ApiError> {
    Ok(Json(state.control.resume(&id).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// How many, newest first (a value outside the range is refused).
    #[schemars(range(min = 1, max = fleet::EVENTS_LIMIT.1), extend("default" = fleet::EVENTS_LIMIT.0))]
    limit: Option<usize>,
    /// Only events with a larger id (for following).
    #[schemars(range(min = 0))]
    after: Option<i64>,
    server: Option<String>,
}

/// `GET /servers/{id}/health`: state, since when and why, the last probe, the consecutive
/// counts, and the recovery events since the last transition.
async fn server_health(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::HealthReport>, ApiError> {
    Ok(Json(state.control.server_health(&id).await?))
}

/// `GET /servers/{id}/health/history`: the last hour of probes, a sample per window.
async fn server_health_history(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<fleet::HealthHistory>, ApiError> {
    Ok(Json(state.control.health_history(&id)?))
}

async fn server_health_events(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<fleet::HealthEventPage>, ApiError> {
    if q.server.is_some() {
        return Err(ApiError::validation_failed(
            "`server` is given by the path here",
        ));
    }
    Ok(Json(
        state
            .control
            .server_health_events(&id, q.after, q.limit)
            .await?,
    ))
}

/// `GET /health/events?server=&after=&limit=`: health events of every server, newest first.
async fn health_events(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<fleet::HealthEventPage>, ApiError> {
    Ok(Json(
        state
            .control
            .health_events(q.server, q.after, q.limit)
            .await?,
    ))
}

/// `GET /health/status`: every monitored server's health, and counts by state.
async fn health_status(State(state): State<Arc<ApiState>>) -> Json<fleet::HealthStatus> {
    Json(state.control.health_status())
}

/// `POST /servers/{id}/restart`: a fresh instance, and recovery starts over.
async fn restart(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<fleet::RestartRequested>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(state.control.restart(&id).await?),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct OverrideRequest {
    /// The state to show; `unknown`, `starting` and `failed` cannot be forced.
    #[schemars(extend("enum" = fleet::FORCEABLE))]
    state: String,
    /// How long it holds; more than 0 and at most a day.
    #[schemars(range(max = fleet::MAX_OVERRIDE_SECONDS), extend("exclusiveMinimum" = 0))]
    duration_seconds: f64,
    reason: Option<String>,
}

/// `POST /servers/{id}/health/override`: shows a state for a bounded time, recorded as an
/// operator's override (e.g. to keep routing to a server whose probe is known to be wrong).
async fn health_override(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<fleet::Overridden>, ApiError> {
    let req: OverrideRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation_failed(format!("invalid override: {e}")))?;
    let answer = state
        .control
        .override_health(&id, &req.state, req.duration_seconds, req.reason)
        .await?;
    Ok(Json(answer))
}

/// `GET /metrics`: Prometheus text format — servers by deployment state and by health,
/// rollouts by outcome, probe latency and sync duration histograms, gateway deliveries and
/// failed delivery attempts.
async fn metrics(State(state): State<Arc<ApiState>>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use std::collections::BTreeMap;
    let fleet = state.control.fleet_live();
    let mut deployed: BTreeMap<String, u64> = BTreeMap::new();
    let mut health: BTreeMap<String, u64> = BTreeMap::new();
    for s in &fleet.servers {
        *deployed.entry(s.state.clone()).or_default() += 1;
        let h = s.health.map_or("unmonitored", |h| h.as_str());
        *health.entry(h.to_owned()).or_default() += 1;
    }
    let rollouts = state
        .control
        .store
        .call(|st| st.rollout_counts())
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?;
    let mut out = String::new();
    use crate::metrics::render_family;
    render_family(
        &mut out,
        "mcp_orchestration_servers",
        "gauge",
        "Servers of the applied manifest by deployment state.",
        "state",
        &deployed.into_iter().collect::<Vec<_>>(),
    );
    render_family(
        &mut out,
        "mcp_orchestration_server_health",
        "gauge",
        "Servers by health state.",
        "state",
        &health.into_iter().collect::<Vec<_>>(),
    );
    render_family(
        &mut out,
        "mcp_orchestration_rollouts_total",
        "counter",
        "Rollouts by outcome.",
        "outcome",
        &rollouts,
    );
    let publish = state.publish_counts.snapshot();
    render_family(
        &mut out,
        "mcp_orchestration_gateway_publishes_total",
        "counter",
        "Backend sets delivered to each gateway.",
        "gateway",
        &publish
            .iter()
            .map(|(g, d, _)| (g.clone(), *d))
            .collect::<Vec<_>>(),
    );
    render_family(
        &mut out,
        "mcp_orchestration_gateway_publish_failures_total",
        "counter",
        "Failed attempts to deliver a backend set to each gateway (refused or unreachable).",
        "gateway",
        &publish
            .iter()
            .map(|(g, _, f)| (g.clone(), *f))
            .collect::<Vec<_>>(),
    );
    let (pushed, failed) = state.notes_pushes.counts();
    render_family(
        &mut out,
        "mcp_orchestration_git_notes_pushes_total",
        "counter",
        "Pushes of the deploy results' git notes (--write-notes), by result.",
        "result",
        &[("pushed".to_owned(), pushed), ("failed".to_owned(), failed)],
    );
    state.control.monitor.probe_latency().render(
        &mut out,
        "mcp_orchestration_probe_duration_seconds",
        "How long health probes took.",
    );
    state.sync_duration.render(
        &mut out,
        "mcp_orchestration_sync_duration_seconds",
        "How long syncs (fetch, and run or reconcile) took.",
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
