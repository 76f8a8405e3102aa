//! `mcp-orchestration mcp`: an MCP server on stdio, for desktop clients, whose tools are the
//! running agent's. It forwards `tools/list` and `tools/call` to the agent's `/mcp` over
//! streamable HTTP and implements no tool itself, so the two can never disagree.
//!
//! Stdout is the protocol: nothing here prints, and logs go to stderr.

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams, ServerConfig,
};
use rmcp::service::{ClientInitializeError, RequestContext, ServerInitializeError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};
use tracing::{info, warn};

/// How long the agent may take to answer the first request, before we call it unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the bridge could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Nothing answers at the agent's URL.
    #[error("cannot reach the agent at {url} (is it running? set --agent-url)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The agent answers HTTP but would not open an MCP session: most often the API key.
    #[error("the agent at {url} refused the MCP connection ({hint})")]
    Refused {
        url: String,
        hint: String,
        #[source]
        source: Box<ClientInitializeError>,
    },
    /// The desktop client went away or spoke something else before the handshake ended.
    #[error("the MCP client on stdio did not complete the handshake")]
    Stdio(#[source] Box<ServerInitializeError>),
}

/// Serves the agent's tools on stdin/stdout until the client closes stdin. `key_hint` says
/// which key is sent or where none was found, for when the agent refuses it.
pub async fn serve_stdio(
    agent_url: &str,
    api_key: Option<String>,
    key_hint: String,
) -> Result<(), BridgeError> {
    let base = agent_url.trim_end_matches('/').to_owned();
    reachable(&base).await?;
    // A restarted agent has forgotten our session; a new one is opened transparently, so
    // the desktop client never needs restarting with the agent.
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
        .reinit_on_expired_session(true);
    if let Some(key) = api_key {
        config = config.auth_header(key);
    }
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mcp-orchestration-stdio", env!("CARGO_PKG_VERSION")),
    )
    .serve(StreamableHttpClientTransport::from_config(config))
    .await
    .map_err(|e| BridgeError::Refused {
        url: base.clone(),
        hint: key_hint,
        source: Box::new(e),
    })?;
    info!(agent = %base, "serving the agent's MCP tools on stdio");

    let bridge = Bridge {
        agent: client.peer().clone(),
        url: base,
    };
    let server = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| BridgeError::Stdio(Box::new(e)))?;
    if let Err(e) = server.waiting().await {
        warn!(error = %e, "the stdio session ended abnormally");
    }
    if let Err(e) = client.cancel().await {
        warn!(error = %e, "cannot close the session with the agent");
    }
    Ok(())
}

/// A plain request first, so an agent that is not there gets a plain message rather than
/// an MCP transport error.
async fn reachable(base: &str) -> Result<(), BridgeError> {
    let unreachable = |source| BridgeError::Unreachable {
        url: base.to_owned(),
        source,
    };
    let http = reqwest::Client::builder()
        .timeout(REACH_TIMEOUT)
        .build()
        .map_err(unreachable)?;
    http.get(format!("{base}/health"))
        .send()
        .await
        .map_err(unreachable)?;
    Ok(())
}

/// The stdio side: the agent's tools, forwarded.
#[derive(Clone)]
struct Bridge {
    agent: Peer<RoleClient>,
    url: String,
}

impl Bridge {
    fn lost(&self, e: &ServiceError) -> String {
        format!(
            "AGENT_UNREACHABLE: the agent at {} did not answer: {e}",
            self.url
        )
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        super::server_config()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // Only the cursor travels: the client's own `_meta` belongs to its session with us.
        let cursor = request.and_then(|r| r.cursor);
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        self.agent
            .list_tools(Some(params))
            .await
            .map_err(|e| match e {
                ServiceError::McpError(e) => e,
                other => ErrorData::internal_error(self.lost(&other), None),
            })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut params = CallToolRequestParams::new(request.name);
        if let Some(arguments) = request.arguments {
            params = params.with_arguments(arguments);
        }
        match self.agent.call_tool_once(params).await {
            Ok(response) => Ok(response),
            // The agent's protocol error (e.g. an unknown tool) reaches the client unchanged.
            Err(ServiceError::McpError(e)) => Err(e),
            // A tool error rather than a protocol error, so the user reads why.
            Err(other) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(self.lost(&other))]).into())
            }
        }
    }
}
