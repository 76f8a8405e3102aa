//! The agent's HTTP API (axum): status for operators and the gateway, run history, and the
//! git webhook; `/mcp` nests the MCP tools (see `crate::mcp`). It holds no state of its
//! own: every handler reads [`AgentState`], mostly through [`ops`], which the tools share.

mod auth;
mod error;
mod events;
pub mod openapi;
pub mod ops;
pub mod serve;
mod webhook;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use auth::generate_key;
pub use error::{ApiError, REQUEST_ID};
pub use webhook::{sign as sign_webhook, verify as verify_webhook};

use crate::agent::AgentState;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Where the MCP tools are served (streamable HTTP: POST, GET and DELETE).
pub const MCP_PATH: &str = "/mcp";

/// Every route the API serves: method, path, handler. `router` is built from this list and
/// `openapi::document` must describe exactly it (a test compares the two).
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<AgentState>>)> {
    vec![
        (Method::GET, "/health", get(health)),
        (Method::GET, "/openapi.json", get(openapi_json)),
        (Method::GET, "/servers", get(servers)),
        (Method::GET, "/servers/{id}", get(server)),
        (Method::DELETE, "/servers/{id}", delete(stop)),
        (Method::GET, "/servers/{id}/status", get(server)),
        (Method::POST, "/servers/{id}/deploy", post(deploy)),
        (Method::GET, "/servers/{id}/rollouts", get(server_rollouts)),
        (Method::POST, "/servers/{id}/rollback", post(rollback)),
        (Method::POST, "/servers/{id}/rollout/resume", post(resume)),
        (Method::POST, "/servers/{id}/rollout/retry", post(deploy)),
        (Method::GET, "/rollouts/{id}", get(rollout)),
        (Method::GET, "/servers/{id}/health", get(server_health)),
        (
            Method::GET,
            "/servers/{id}/health/events",
            get(server_health_events),
        ),
        (
            Method::POST,
            "/servers/{id}/health/override",
            post(health_override),
        ),
        (Method::POST, "/servers/{id}/restart", post(restart)),
        (Method::GET, "/health/status", get(health_status)),
        (Method::GET, "/health/events", get(health_events)),
        (Method::GET, "/events", get(events::stream)),
        (Method::GET, "/events/history", get(events::history)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/revisions", get(revisions)),
        (Method::GET, "/revisions/{commit}", get(revision)),
        (Method::POST, "/webhooks/git", post(webhook::push)),
    ]
}

/// Every method and path the router answers: [`routes`] and the MCP service.
pub fn served() -> Vec<(Method, &'static str)> {
    let mut all: Vec<_> = routes().into_iter().map(|(m, p, _)| (m, p)).collect();
    for m in [Method::POST, Method::GET, Method::DELETE] {
        all.push((m, MCP_PATH));
    }
    all
}

pub fn router(state: Arc<AgentState>) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        // Routes of one path with different methods merge into one method router.
        router = router.route(path, handler);
    }
    router
        // MCP's streamable HTTP: one service for POST (messages), GET (a session's stream)
        // and DELETE (end a session), behind the same auth.
        .nest_service(
            MCP_PATH,
            Router::new()
                .fallback_service(crate::mcp::http_service(
                    state.clone(),
                    state.shutdown.child_token(),
                ))
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

/// Whether `path` is an instance of the route `template` (`/servers/{id}`); the MCP
/// service also owns everything below its path.
fn route_matches(template: &str, path: &str) -> bool {
    if template == MCP_PATH {
        return path == MCP_PATH || path.starts_with("/mcp/");
    }
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The methods the API serves at `path` (HEAD wherever GET is), or `None` for a path it
/// does not serve at all.
fn methods_at(path: &str) -> Option<Vec<Method>> {
    let mut methods: Vec<Method> = served()
        .into_iter()
        .filter(|(_, template)| route_matches(template, path))
        .map(|(m, _)| m)
        .collect();
    if methods.is_empty() {
        return None;
    }
    if methods.contains(&Method::GET) {
        methods.push(Method::HEAD);
    }
    Some(methods)
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
    let Some(methods) = methods_at(req.uri().path()) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route").into_response();
    };
    if methods.contains(req.method()) {
        return next.run(req).await;
    }
    let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
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
    state: Arc<AgentState>,
    limits: serve::Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve(listener, router(state), limits, shutdown).await
}

/// The agent's own health, in the health standard's format.
async fn health(State(state): State<Arc<AgentState>>) -> Json<Value> {
    let fleet = state.fleet();
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
    Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "runtime": state.runtime.as_str(),
        "applied_revision": fleet.applied_revision,
        "source_error": fleet.source_error,
        "runtime_error": fleet.runtime_error,
        "store_error": fleet.store_error,
    }))
}

async fn servers(State(state): State<Arc<AgentState>>) -> Json<crate::agent::FleetView> {
    Json(state.fleet_live())
}

async fn server(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<Json<crate::agent::ServerView>, ApiError> {
    ops::server(&state, &id).map(Json)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Limit {
    /// How many, newest first (a value outside the range is refused).
    #[schemars(range(min = 1, max = ops::ROLLOUTS_LIMIT.1), extend("default" = ops::ROLLOUTS_LIMIT.0))]
    limit: Option<usize>,
}

async fn revisions(
    State(state): State<Arc<AgentState>>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = ops::limit(q.limit, ops::ROLLOUTS_LIMIT)?;
    let runs = state
        .store
        .call(move |s| s.runs(limit))
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?;
    Ok(Json(json!({ "revisions": runs })))
}

async fn revision(
    State(state): State<Arc<AgentState>>,
    Path(commit): Path<String>,
) -> Result<Json<crate::store::RunRecord>, ApiError> {
    let c = commit.clone();
    state
        .store
        .call(move |s| s.run_for_commit(&c))
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "REVISION_NOT_FOUND",
                format!(
                    "no run for a commit starting with `{commit}` (give at least 4 hex characters)"
                ),
            )
        })
}

/// `DELETE /servers/{id}`: an operator's stop, kept until `POST /servers/{id}/deploy`.
async fn stop(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ops::stop(&state, &id).await.map(Json)
}

/// `POST /servers/{id}/deploy`: lifts a stop and retries a failed version; converges now.
async fn deploy(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(ops::deploy(&state, &id).await?)))
}

/// `GET /servers/{id}/rollouts?limit=N`: the server's rollouts, newest first.
async fn server_rollouts(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    ops::server_rollouts(&state, &id, q.limit).await.map(Json)
}

/// `GET /rollouts/{id}`: one rollout with its timeline and the probes of its health gate.
async fn rollout(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ROLLOUT_NOT_FOUND",
            format!("no rollout `{id}`"),
        )
    };
    let n: i64 = id.parse().map_err(|_| not_found())?;
    let (record, (steps, probes)) = state
        .store
        .call(move |st| Ok((st.rollout(n)?, st.rollout_timeline(n)?)))
        .await
        .map_err(|e| ApiError::internal(crate::error_text::chain(&e)))?;
    let record = record.ok_or_else(not_found)?;
    let mut v = serde_json::to_value(record).map_err(|e| ApiError::internal(e.to_string()))?;
    v["steps"] = json!(steps);
    v["probes"] = json!(probes);
    Ok(Json(v))
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
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "VALIDATION_FAILED",
                format!("invalid rollback request: {e}"),
            )
        })?
    };
    let answer = ops::rollback(&state, &id, request.to.as_deref(), request.force).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// `POST /servers/{id}/rollout/resume`: lifts an operator's rollback.
async fn resume(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ops::resume(&state, &id).await.map(Json)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// How many, newest first (a value outside the range is refused).
    #[schemars(range(min = 1, max = ops::EVENTS_LIMIT.1), extend("default" = ops::EVENTS_LIMIT.0))]
    limit: Option<usize>,
    /// Only events with a larger id (for following).
    #[schemars(range(min = 0))]
    after: Option<i64>,
    server: Option<String>,
}

/// `GET /servers/{id}/health`: state, since when and why, the last probe, the consecutive
/// counts, and the recovery events since the last transition.
async fn server_health(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ops::server_health(&state, &id).await.map(Json)
}

async fn server_health_events(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.server.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "`server` is given by the path here",
        ));
    }
    ops::server_health_events(&state, &id, q.after, q.limit)
        .await
        .map(Json)
}

/// `GET /health/events?server=&after=&limit=`: health events of every server, newest first.
async fn health_events(
    State(state): State<Arc<AgentState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    ops::health_events(&state, q.server, q.after, q.limit)
        .await
        .map(Json)
}

/// `GET /health/status`: every monitored server's health, and counts by state.
async fn health_status(State(state): State<Arc<AgentState>>) -> Json<Value> {
    Json(ops::health_status(&state))
}

/// `POST /servers/{id}/restart`: a fresh instance, and recovery starts over.
async fn restart(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(ops::restart(&state, &id).await?)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct OverrideRequest {
    /// The state to show; `unknown`, `starting` and `failed` cannot be forced.
    #[schemars(extend("enum" = FORCEABLE))]
    state: String,
    /// How long it holds; more than 0 and at most a day.
    #[schemars(range(max = MAX_OVERRIDE_SECONDS), extend("exclusiveMinimum" = 0))]
    duration_seconds: f64,
    reason: Option<String>,
}

/// The longest a health override holds: a day.
const MAX_OVERRIDE_SECONDS: f64 = 86_400.0;

/// The states an operator may force.
const FORCEABLE: [crate::health::HealthState; 3] = [
    crate::health::HealthState::Healthy,
    crate::health::HealthState::Degraded,
    crate::health::HealthState::Unhealthy,
];

/// `POST /servers/{id}/health/override`: shows a state for a bounded time, recorded as an
/// operator's override (e.g. to keep routing to a server whose probe is known to be wrong).
async fn health_override(
    State(state): State<Arc<AgentState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", m);
    let req: OverrideRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid override: {e}")))?;
    let health = crate::health::HealthState::parse(&req.state)
        .filter(|s| FORCEABLE.contains(s))
        .ok_or_else(|| {
            bad(format!(
                "`{}` cannot be forced; use healthy, degraded or unhealthy",
                req.state
            ))
        })?;
    if !(req.duration_seconds > 0.0 && req.duration_seconds <= MAX_OVERRIDE_SECONDS) {
        return Err(bad(
            "duration_seconds must be more than 0 and at most 86400 (a day)".into(),
        ));
    }
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs_f64(req.duration_seconds))
        .map_err(|e| bad(e.to_string()))?;
    let reason = req.reason.unwrap_or_else(|| "forced by an operator".into());
    if !state.monitor.set_override(&id, health, until, &reason) {
        return Err(ApiError::server_not_found(&id));
    }
    Ok(Json(
        json!({ "server_id": id, "state": health, "until": until.to_string() }),
    ))
}

/// `GET /metrics`: Prometheus text format — servers by deployment state and by health,
/// rollouts by outcome, probe latency and sync duration histograms, gateway deliveries and
/// failed delivery attempts.
async fn metrics(
    State(state): State<Arc<AgentState>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use std::collections::BTreeMap;
    let fleet = state.fleet_live();
    let mut deployed: BTreeMap<String, u64> = BTreeMap::new();
    let mut health: BTreeMap<String, u64> = BTreeMap::new();
    for s in &fleet.servers {
        *deployed.entry(s.state.clone()).or_default() += 1;
        let h = s.health.map_or("unmonitored", |h| h.as_str());
        *health.entry(h.to_owned()).or_default() += 1;
    }
    let rollouts = state
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
    state.monitor.probe_latency().render(
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
