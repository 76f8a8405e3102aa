//! The MCP gateway: one endpoint (`/mcp` on `--gateway-listen`) through which MCP clients
//! reach the tools of every server of the fleet, named `{server}_{tool}` (`naming`), each
//! call routed by the server's health (`route`) to the instance the fleet view publishes.
//!
//! - `backends`: the gateway's own session with each running instance, opened before the
//!   instance replaces its predecessor in the gateway, and the tools it offers;
//! - `service`: the MCP server clients talk to (rmcp, streamable HTTP);
//! - `client`: the HTTP client every backend session shares, and the tool listing of the
//!   rollouts' tool-set guard;
//! - `status`: `GET /backends`, `/backends/{id}/health`, `/health` and `/metrics` on the
//!   gateway's listener, with the counts `metrics` keeps;
//! - `sessions`: signed client session ids and their parameters in the data dir, so a
//!   client's session outlives the agent;
//! - `profiles`: `/profiles/{id}/mcp`, each profile of the applied manifest as its own
//!   endpoint showing only its servers and tools, and `GET /profiles`;
//! - `naming`, `route`: the pure rules.
//!
//! The gateway reads the fleet view and decides nothing about deploying.

mod backends;
mod client;
mod forward;
mod http;
mod metrics;
pub mod naming;
mod profiles;
mod progress;
mod route;
mod service;
mod sessions;
mod shortcut;
mod spread;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

pub use backends::{Backends, Drained, InFlight};
pub use client::tool_lister;
pub use http::BackendHttp;
pub use route::{Route, Unavailable, route};
pub use service::Gateway;
pub use status::{BackendHealth, BackendView, BackendsView, GatewayHealth};

use crate::fleet::Control;

/// Who may use the gateway's listener.
#[derive(Clone, Debug)]
pub struct Access {
    /// Whether every request needs one of `keys` (see `AgentSettings::gateway_keys`).
    pub keys_required: bool,
    pub keys: Vec<String>,
}

/// Where client sessions live: in the data dir, so they outlive the agent (see
/// `sessions`).
pub struct SessionPlace {
    key: sessions::SessionKey,
    files: sessions::SessionFiles,
    /// Where the profiles' endpoints keep their sessions, one directory each.
    profiles_dir: std::path::PathBuf,
}

impl SessionPlace {
    /// Sessions kept in `data_dir`: the key in `gateway-session.key`, each session's
    /// parameters under `gateway-sessions/`.
    pub fn in_data_dir(data_dir: &std::path::Path) -> std::io::Result<SessionPlace> {
        let key = sessions::SessionKey::load_or_create(&data_dir.join("gateway-session.key"))?;
        let dir = data_dir.join("gateway-sessions");
        let files = sessions::SessionFiles::open(dir.clone(), key.clone())?;
        Ok(SessionPlace {
            key,
            files,
            profiles_dir: dir.join("profiles"),
        })
    }
}

/// The gateway's router: `/mcp`, the read routes (`status`), and an open `GET /health`
/// and `GET /openapi.json`.
/// Spawns the task that follows the fleet, ended by `shutdown` like the sessions.
pub fn router(
    control: Arc<Control>,
    backends: Backends,
    access: Access,
    sessions: SessionPlace,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> Router {
    tasks.spawn(
        backends
            .clone()
            .follow(control.view.subscribe(), shutdown.clone()),
    );
    tasks.spawn(count_tools(
        control.clone(),
        backends.clone(),
        shutdown.clone(),
    ));
    let metrics = Arc::new(metrics::GatewayMetrics::default());
    let counted = metrics.clone();
    control.set_gateway_calls(Arc::new(move || counted.totals()));
    let store = Arc::new(sessions.files);
    let key = sessions.key;
    let profiles_dir = sessions.profiles_dir;
    let sessions = Arc::new(service::Sessions::new(key.clone()));
    let gateway = Gateway::new(control.clone(), backends.clone(), metrics.clone());
    let endpoints = Arc::new(profiles::Endpoints::new(
        gateway.clone(),
        backends.clone(),
        key,
        profiles_dir,
        access.keys_required,
        shutdown.clone(),
    ));
    tasks.spawn(close_idle_sessions(
        sessions.clone(),
        endpoints.clone(),
        shutdown.clone(),
    ));
    let mcp = shortcut::Endpoint::new(
        service::http_service(
            gateway.clone(),
            sessions.clone(),
            store,
            access.keys_required,
            shutdown,
        ),
        gateway,
        sessions.clone(),
        access.keys_required,
    );
    let gauges = status::Gauges {
        control,
        backends,
        metrics,
        sessions,
        profiles: endpoints.clone(),
        started: std::time::Instant::now(),
    };
    use axum::routing::{any, get};
    let profile_routes = Router::new()
        .route("/profiles", get(profiles::list))
        .route("/profiles/{id}/mcp", any(profiles::profile_mcp))
        .route("/servers/{id}/mcp", any(profiles::server_mcp))
        .with_state(endpoints);
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/backends", get(status::backends))
        .route("/backends/{id}/health", get(status::backend_health))
        .route("/metrics", get(status::metrics))
        .with_state(gauges.clone())
        .merge(profile_routes)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            require_key,
        ))
        .route("/health", get(status::health).with_state(gauges))
        .route("/openapi.json", get(status::openapi))
        // Request ids and the API's error envelope (a `PROFILE_NOT_FOUND`, a 401), as on
        // the API's listener; without it an `ApiError` went out as an empty body.
        .layer(axum::middleware::from_fn(crate::api::request_id))
}

/// The client's session id on a request the router handed to rmcp, when it has one
/// (revisions before 2026-07-28).
fn client_session(context: &rmcp::service::RequestContext<rmcp::RoleServer>) -> Option<&str> {
    context
        .extensions
        .get::<axum::http::request::Parts>()?
        .headers
        .get("mcp-session-id")?
        .to_str()
        .ok()
}

/// How long a client session may go without a request before it is closed (rmcp's own
/// default); its file stays, so its client's next request restores it.
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Closes idle client sessions, once a minute, until `shutdown`.
async fn close_idle_sessions(
    sessions: Arc<service::Sessions>,
    endpoints: Arc<profiles::Endpoints>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        sessions.close_idle(SESSION_IDLE).await;
        endpoints.close_idle(SESSION_IDLE).await;
    }
}

/// Tells the control layer how many tools each server contributes (`status` shows it),
/// whenever what the backends offer changes.
async fn count_tools(control: Arc<Control>, backends: Backends, shutdown: CancellationToken) {
    let mut generation = backends.watch();
    loop {
        let counts = backends
            .all()
            .into_iter()
            .map(|(server, backend)| {
                let n = backend.served(&server).count();
                (server, n)
            })
            .collect();
        control.set_gateway_tools(counts);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = generation.changed() => if changed.is_err() { return },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::service::{never_delivered, session_expired};
    use super::*;
    use rmcp::model::{CallToolRequestParams, ServerCapabilities, ServerConfig};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use rmcp::{ServerHandler, ServiceExt};

    #[derive(Clone)]
    struct Empty;

    impl ServerHandler for Empty {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }
    }

    /// A real MCP server on 127.0.0.1 with a real session, then the server goes away: a
    /// call on that session is one the backend never saw, which the gateway may send to
    /// the instance that replaced it; and so is one a new server on that address refuses
    /// for not knowing the session.
    #[tokio::test]
    async fn calls_a_backend_cannot_have_run_are_told_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, server) = serve_empty(listener);
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"));
        // As the gateway's backend sessions (`backends::transport`).
        config.reinit_on_expired_session = false;
        let transport = StreamableHttpClientTransport::with_client(BackendHttp::default(), config);
        let session = ().serve(transport).await.expect("a session");
        session.peer().list_all_tools().await.expect("tools listed");

        stop.cancel();
        server.await.unwrap().unwrap();
        let e = session
            .peer()
            .call_tool_once(CallToolRequestParams::new("anything"))
            .await
            .expect_err("nobody listens");
        assert!(never_delivered(&e), "{e:?}");
        assert!(!session_expired(&e), "{e:?}");
        assert!(!never_delivered(&rmcp::ServiceError::TransportClosed));

        // A server on the same address that does not know the session (the backend
        // restarted in place): HTTP 404, which the gateway must see as such.
        let (stop, server) = serve_empty(tokio::net::TcpListener::bind(addr).await.unwrap());
        let e = session
            .peer()
            .call_tool_once(CallToolRequestParams::new("anything"))
            .await
            .expect_err("the session is unknown");
        assert!(session_expired(&e), "{e:?}");
        assert!(!never_delivered(&e), "{e:?}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// The short way of a call (`forward`) on a real session: it reaches the backend on
    /// the session rmcp opened (the backend's own refusal comes back as its error), and
    /// its failures read as the session's would: a session the backend does not know is
    /// expired, a closed port is a call never delivered.
    #[tokio::test]
    async fn the_short_way_of_a_call_uses_the_session_and_reports_failures_alike() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, server) = serve_empty(listener);
        let uri = format!("http://{addr}/mcp");
        let (http, session_id) = BackendHttp::default().for_session(Default::default());
        let mut config = StreamableHttpClientTransportConfig::with_uri(uri.clone());
        config.reinit_on_expired_session = false;
        let session = ()
            .serve(StreamableHttpClientTransport::with_client(
                http.clone(),
                config,
            ))
            .await
            .expect("a session");
        let version = session.peer().peer_info().unwrap().protocol_version.clone();
        let id = session_id
            .get()
            .cloned()
            .expect("the server named the session");
        let direct = forward::Direct::new(http.clone(), &uri, Some(id), &version)
            .expect("a revision with sessions");
        for _ in 0..3 {
            // The server has no tools: its own answer.
            match direct
                .call_tool(CallToolRequestParams::new("anything"), None)
                .await
            {
                Err(rmcp::ServiceError::McpError(e)) => assert!(!e.message.is_empty()),
                other => panic!("not the backend's refusal: {other:?}"),
            }
            // The answer stream is read to its end, so its connection is kept for the
            // next call.
            let host = addr.to_string();
            crate::gateway::tests::until("the connection kept", || http.idle(&host) > 0).await;
        }
        let stranger =
            forward::Direct::new(http.clone(), &uri, Some("unknown".into()), &version).unwrap();
        let e = stranger
            .call_tool(CallToolRequestParams::new("anything"), None)
            .await
            .expect_err("the session is unknown");
        assert!(session_expired(&e), "{e:?}");
        assert!(!never_delivered(&e), "{e:?}");
        stop.cancel();
        server.await.unwrap().unwrap();
        let e = direct
            .call_tool(CallToolRequestParams::new("anything"), None)
            .await
            .expect_err("nobody listens");
        assert!(never_delivered(&e), "{e:?}");
        assert!(
            forward::Direct::new(
                http,
                &uri,
                None,
                &rmcp::model::ProtocolVersion::V_2026_07_28
            )
            .is_none(),
            "2026-07-28 needs its own request headers"
        );
    }

    /// Waits until `done`, yielding meanwhile; fails after 5 s.
    pub(super) async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// An MCP server without tools at `/mcp` on `listener`, until the token is cancelled.
    fn serve_empty(
        listener: tokio::net::TcpListener,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let stop = CancellationToken::new();
        let mcp: StreamableHttpService<
            Empty,
            rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
        > = StreamableHttpService::new(
            || Ok(Empty),
            Arc::new(Default::default()),
            StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
        );
        let app = Router::new().nest_service("/mcp", mcp);
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        (stop, server)
    }
}
