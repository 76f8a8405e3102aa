//! The gateway's own read routes: `GET /backends` (each backend: health, whether calls are
//! routed to it, endpoint, version, protocol revision, tools, calls in flight and by
//! outcome), `GET /backends/{id}/health`, `GET /health` and `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::backends::Backends;
use super::metrics::GatewayMetrics;
use super::route::{Route, route};
use super::service::{Sessions, open_sessions};
use crate::api::ApiError;
use crate::fleet::{Control, ServerView};
use crate::health::HealthState;

/// What the read routes read.
#[derive(Clone)]
pub struct Gauges {
    pub control: Arc<Control>,
    pub backends: Backends,
    pub metrics: Arc<GatewayMetrics>,
    pub sessions: Arc<Sessions>,
    /// The profiles' endpoints, whose sessions count too.
    pub profiles: Arc<super::profiles::Endpoints>,
    pub started: std::time::Instant,
}

/// One backend as the gateway sees it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackendView {
    /// The server id; its tools are named `{id}_{tool}`.
    pub id: String,
    /// Whether a call to its tools is sent to it now (else it is answered
    /// `BACKEND_UNHEALTHY`).
    pub routable: bool,
    /// The deployment state (`running`, `pending`, `failed`, `stopped`, `removing`).
    pub state: String,
    pub health: Option<HealthState>,
    pub health_since: Option<Timestamp>,
    /// The version running, as the fleet view says.
    pub version: Option<String>,
    pub instance_id: Option<String>,
    /// Where the gateway's session with it goes.
    pub endpoint: Option<String>,
    /// The MCP revision the backend speaks with the gateway.
    pub protocol_version: Option<String>,
    /// The tools it contributes, under their gateway names.
    pub tools: Vec<String>,
    pub calls_in_flight: usize,
    /// Calls since the agent started, by outcome (`ok`, `tool_error`, `protocol_error`,
    /// `backend_unhealthy`, `backend_unavailable`, `unreachable`, `cancelled`).
    pub calls: BTreeMap<String, u64>,
    /// The gateway's sessions with the instance's tasks: the routed one first, then one
    /// per other serving task (Swarm replicas), which calls are spread over.
    #[serde(default)]
    pub sessions: Vec<BackendSession>,
}

/// One of the gateway's sessions with a backend's tasks.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackendSession {
    pub endpoint: String,
    /// The task the fleet view routes to (its tools are the catalog's).
    pub routed: bool,
    /// Calls sent on this session since it opened.
    pub calls_sent: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackendsView {
    pub backends: Vec<BackendView>,
}

/// `GET /backends/{id}/health`: whether the backend takes calls, and when not, the same
/// facts a `BACKEND_UNHEALTHY` answer carries.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackendHealth {
    pub backend: String,
    /// `healthy`, `degraded`, `unknown`, `starting` (routed), or why not: `unhealthy`,
    /// `failed`, or the deployment state when nothing runs.
    pub status: String,
    pub routable: bool,
    pub since: Timestamp,
    pub reason: Option<String>,
    /// Set when it is routed with a warning (degraded).
    pub warning: Option<String>,
    /// Set when it is not routed.
    pub suggested_action: Option<String>,
    pub affected_tools: Vec<String>,
}

/// `GET /health` on the gateway's listener.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GatewayHealth {
    /// `healthy` when every backend takes calls, `degraded` when some do not.
    pub status: String,
    pub version: String,
    pub uptime_seconds: f64,
    pub backends: usize,
    pub routable: usize,
    pub sessions: usize,
}

impl Gauges {
    fn view(&self, s: &ServerView) -> BackendView {
        let backend = self.backends.get(&s.id);
        BackendView {
            id: s.id.clone(),
            routable: matches!(route(s), Route::Call { .. }),
            state: s.state.clone(),
            health: s.health,
            health_since: s.health_since,
            version: s.running_version.clone(),
            instance_id: backend.as_ref().map(|b| b.instance_id.clone()),
            endpoint: backend.as_ref().map(|b| b.endpoint.clone()),
            protocol_version: backend.as_ref().and_then(|b| b.protocol_version.clone()),
            tools: backend
                .as_ref()
                .map(|b| b.served(&s.id).map(|(name, _)| name).collect())
                .unwrap_or_default(),
            calls_in_flight: backend
                .as_ref()
                .map_or(0, |b| self.backends.in_flight(&b.instance_id)),
            calls: self
                .metrics
                .calls_of(&s.id)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            sessions: backend
                .iter()
                .cloned()
                .chain(
                    self.backends
                        .replicas(&s.id)
                        .into_iter()
                        .filter(|r| Some(&r.instance_id) == s.instance_id.as_ref()),
                )
                .map(|b| BackendSession {
                    routed: !b.replica,
                    calls_sent: b.sent.load(std::sync::atomic::Ordering::Relaxed),
                    endpoint: b.endpoint,
                })
                .collect(),
        }
    }
}

pub async fn backends(State(g): State<Gauges>) -> Json<BackendsView> {
    let fleet = g.control.fleet_live();
    Json(BackendsView {
        backends: fleet.servers.iter().map(|s| g.view(s)).collect(),
    })
}

pub async fn backend_health(
    State(g): State<Gauges>,
    Path(id): Path<String>,
) -> Result<Json<BackendHealth>, ApiError> {
    let s = g
        .control
        .server_live(&id)
        .ok_or_else(|| ApiError::server_not_found(&id))?;
    let tools = g.view(&s).tools;
    Ok(Json(match route(&s) {
        Route::Call { warning, .. } => BackendHealth {
            backend: id,
            status: s
                .health
                .map_or_else(|| "unknown".to_owned(), |h| h.as_str().to_owned()),
            routable: true,
            since: s.health_since.unwrap_or(s.since),
            reason: s.health_reason,
            warning,
            suggested_action: None,
            affected_tools: Vec::new(),
        },
        Route::Unhealthy(why) => BackendHealth {
            backend: id,
            status: why.state,
            routable: false,
            since: why.since,
            reason: why.reason,
            warning: None,
            suggested_action: Some(why.suggested_action),
            affected_tools: tools,
        },
    }))
}

pub async fn health(State(g): State<Gauges>) -> Json<GatewayHealth> {
    let fleet = g.control.fleet_live();
    let routable = fleet
        .servers
        .iter()
        .filter(|s| matches!(route(s), Route::Call { .. }))
        .count();
    Json(GatewayHealth {
        status: if routable == fleet.servers.len() {
            "healthy"
        } else {
            "degraded"
        }
        .to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: g.started.elapsed().as_secs_f64(),
        backends: fleet.servers.len(),
        routable,
        sessions: open_sessions(&g.sessions).await + g.profiles.open_sessions().await,
    })
}

pub async fn metrics(State(g): State<Gauges>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        g.metrics
            .render(open_sessions(&g.sessions).await + g.profiles.open_sessions().await),
    )
        .into_response()
}

/// `GET /openapi.json` on the gateway's listener: these routes and `/mcp`.
pub async fn openapi() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

fn document() -> serde_json::Value {
    use serde_json::json;
    let mut schemas = crate::api::openapi::Schemas::new();
    let error = schemas.schema::<crate::api::ErrorEnvelope>();
    let get = |summary: &str, answer: serde_json::Value, open: bool| {
        let mut op = json!({
            "summary": summary,
            "tags": ["gateway"],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": answer } } },
                "401": { "description": "A key is required (beyond loopback, or with --require-key-for-reads)",
                         "content": { "application/json": { "schema": error.clone() } } },
            },
        });
        if open {
            op["security"] = json!([]);
            op["responses"].as_object_mut().map(|r| r.remove("401"));
        }
        json!({ "get": op })
    };
    let backends = get(
        "Every backend: whether calls are routed to it, health, version, endpoint, protocol revision, tools, calls in flight and by outcome",
        schemas.schema::<BackendsView>(),
        false,
    );
    let mut one = get(
        "One backend's health as routing sees it; when not routed, what BACKEND_UNHEALTHY answers carry",
        schemas.schema::<BackendHealth>(),
        false,
    );
    one["get"]["parameters"] =
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
    one["get"]["responses"]["404"] = json!({
        "description": "No such server in the applied manifest",
        "content": { "application/json": { "schema": error.clone() } },
    });
    let health = get(
        "The gateway's own health: healthy when every backend takes calls, else degraded",
        schemas.schema::<GatewayHealth>(),
        true,
    );
    let mut metrics = get(
        "Prometheus metrics: calls by backend and outcome, latency per backend, reroutes, sessions",
        json!({ "type": "string" }),
        false,
    );
    metrics["get"]["responses"]["200"]["content"] =
        json!({ "text/plain": { "schema": { "type": "string" } } });
    let profiles = get(
        "default and every profile of the applied manifest: its path, servers, the tools it shows, and listed tools no server offers",
        schemas.schema::<super::profiles::ProfilesView>(),
        false,
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mcp-orchestration gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The MCP gateway's listener (--gateway-listen). MCP clients use \
                            /mcp (streamable HTTP); these routes show what it routes where.",
        },
        "paths": {
            "/backends": backends,
            "/backends/{id}/health": one,
            "/health": health,
            "/metrics": metrics,
            "/mcp": {
                "post": {
                    "summary": "MCP over streamable HTTP: every server's tools as {server}_{tool}",
                    "tags": ["gateway"],
                    "responses": { "200": { "description": "a JSON-RPC answer (JSON or an SSE stream)" } },
                },
            },
            "/profiles": profiles,
            "/servers/{id}/mcp": {
                "post": {
                    "summary": "MCP over streamable HTTP, showing only server {id}'s tools, prompts and resources (named as on /mcp)",
                    "tags": ["gateway"],
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": {
                        "200": { "description": "a JSON-RPC answer (JSON or an SSE stream)" },
                        "404": { "description": "No such server in the applied manifest",
                                 "content": { "application/json": { "schema": error.clone() } } },
                    },
                },
            },
            "/profiles/{id}/mcp": {
                "post": {
                    "summary": "MCP over streamable HTTP, showing only profile {id}'s servers and tools (default: the whole fleet)",
                    "tags": ["gateway"],
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": {
                        "200": { "description": "a JSON-RPC answer (JSON or an SSE stream)" },
                        "404": { "description": "No such profile in the applied manifest",
                                 "content": { "application/json": { "schema": error.clone() } } },
                    },
                },
            },
        },
        "security": [{ "bearer": [] }, { "api_key": [] }],
        "components": {
            "schemas": schemas.definitions(),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "api_key": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
        },
    })
}
