//! The agent's MCP tools (rmcp): an operator's view and controls — list, status, deploy,
//! stop, restart, health, rollouts, rollback — for MCP clients.
//!
//! They are served in-process at `/mcp` on the API's listener (streamable HTTP, behind the
//! API's keys), and over stdio by `mcp-orchestration mcp`, a bridge that forwards to a
//! running agent's `/mcp`, so there is one implementation. Nothing here holds state or
//! decides anything: every tool is a call into [`crate::fleet::Control`], like the HTTP routes.

mod stdio;
mod tools;

use std::sync::Arc;

use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use stdio::{BridgeError, Endpoint, EndpointError, serve_stdio};
pub use tools::Tools;

use crate::fleet::Control;

/// What `/mcp` is: a tower service the API nests.
pub type HttpService = StreamableHttpService<Tools, LocalSessionManager>;

const INSTRUCTIONS: &str = "Tools of mcp-orchestration, the GitOps agent that runs this \
    fleet of MCP servers from a git repository. The manifest in git is the desired state; \
    these tools inspect what runs and act on it as an operator would. Start with \
    list_servers; server ids are the manifest's.";

/// Who the tools say they are, in-process and through the stdio bridge alike.
fn server_config() -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new(
            "mcp-orchestration",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
}

/// How the `/mcp` endpoint is served.
#[derive(Clone, Copy, Debug)]
pub struct HttpConfig {
    /// Larger request bodies are refused (the API's limit).
    pub body_limit: usize,
    /// Accept any `Host`: the agent listens beyond loopback, behind API keys.
    pub any_host: bool,
}

/// The `/mcp` endpoint. Cancelling `shutdown` ends every session and its stream, so the
/// HTTP server's graceful shutdown is not held open by idle clients.
pub fn http_service(
    control: Arc<Control>,
    configs: Arc<crate::clients::service::Configs>,
    subscriptions: Arc<crate::subscriptions::Subscriptions>,
    http: HttpConfig,
    shutdown: CancellationToken,
) -> HttpService {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(http.body_limit);
    if http.any_host {
        // Beyond loopback the agent is reached by names rmcp cannot know, and its `Host`
        // check (a DNS-rebinding guard) would refuse them. `/mcp` always needs an API key,
        // which a rebinding page does not have.
        config = config.disable_allowed_hosts();
    }
    let tools = Tools::new(control, configs, subscriptions);
    StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
