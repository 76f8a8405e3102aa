//! The MCP gateway: one endpoint (`/mcp` on `--gateway-listen`) through which MCP clients
//! reach the tools of every server of the fleet, named `{server}_{tool}` (`naming`), each
//! call routed by the server's health (`route`) to the instance the fleet view publishes.
//!
//! - `backends`: the gateway's own session with each running instance, opened before the
//!   instance replaces its predecessor in the gateway, and the tools it offers;
//! - `service`: the MCP server clients talk to (rmcp, streamable HTTP);
//! - `client`: the HTTP client every backend session shares, and the tool listing of the
//!   rollouts' tool-set guard;
//! - `naming`, `route`: the pure rules.
//!
//! The gateway reads the fleet view and decides nothing about deploying.

mod backends;
mod client;
pub mod naming;
mod route;
mod service;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

pub use backends::{Backends, Drained, InFlight};
pub use client::{SharedHttp, tool_lister};
pub use route::{Route, Unavailable, route};
pub use service::Gateway;

use crate::fleet::Control;

/// Who may use the gateway's listener.
#[derive(Clone, Debug)]
pub struct Access {
    /// Whether every request needs one of `keys` (see `AgentSettings::gateway_keys`).
    pub keys_required: bool,
    pub keys: Vec<String>,
}

/// The gateway's router: `/mcp` and an open `GET /health`. Spawns the task that follows
/// the fleet, ended by `shutdown` like the sessions.
pub fn router(
    control: Arc<Control>,
    backends: Backends,
    access: Access,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> Router {
    tasks.spawn(
        backends
            .clone()
            .follow(control.view.subscribe(), shutdown.clone()),
    );
    let gateway = Gateway::new(control, backends);
    let mcp = service::http_service(gateway, access.keys_required, shutdown);
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            require_key,
        ))
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "healthy"})) }),
        )
}

async fn require_key(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if !access.keys_required {
        return next.run(req).await;
    }
    match crate::api::check_key(req.headers(), &access.keys) {
        Ok(()) => next.run(req).await,
        Err(refused) => *refused,
    }
}
