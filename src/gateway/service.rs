//! The gateway's MCP server: every backend's tools under one endpoint, each call routed by
//! the backend's health (see `route`).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, MetaObject, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceError};
use serde_json::json;

use super::backends::Backends;
use super::naming::server_of;
use super::route::{Route, route};
use crate::fleet::Control;

const INSTRUCTIONS: &str = "The mcp-orchestration gateway: the tools of every MCP server \
    of this fleet, named {server}_{tool}. A tool whose server is down answers \
    BACKEND_UNHEALTHY with the server, since when, and what to do.";

/// One client session's handler; clones share the control layer and the backends.
#[derive(Clone)]
pub struct Gateway {
    control: Arc<Control>,
    backends: Backends,
}

impl Gateway {
    pub fn new(control: Arc<Control>, backends: Backends) -> Gateway {
        Gateway { control, backends }
    }

    /// Every tool the gateway serves, under its gateway name: the tools of each server of
    /// the fleet view whose backend has been listed (the last instance's while it is down).
    pub fn catalog(&self) -> Vec<Tool> {
        let in_view = self.control.view.server_ids();
        let mut tools = Vec::new();
        for (server, backend) in self.backends.all() {
            if !in_view.contains(&server) {
                continue;
            }
            tools.extend(backend.served(&server).map(|(name, tool)| {
                let mut tool = tool.clone();
                tool.name = name.into();
                tool
            }));
        }
        tools
    }

    /// The gateway names of the tools `server` contributes.
    fn tools_of(&self, server: &str) -> Vec<String> {
        self.backends
            .get(server)
            .map(|b| b.served(server).map(|(name, _)| name).collect())
            .unwrap_or_default()
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcp-orchestration-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Tell the client whenever what it sees changes, until its session ends.
        let peer = context.peer;
        let mut generation = self.backends.watch();
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut seen: Vec<String> = gateway.catalog_names();
            while generation.changed().await.is_ok() {
                // Changes come in bursts (a switch relists a server): debounce.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                generation.borrow_and_update();
                let now = gateway.catalog_names();
                if now != seen {
                    seen = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.catalog()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let unknown = || {
            ErrorData::invalid_params(
                format!("unknown tool `{name}`: tools/list names the tools of this gateway"),
                Some(json!({ "tool": name })),
            )
        };
        let server = server_of(&name).ok_or_else(unknown)?;
        let Some(view) = self.control.server_live(server) else {
            return Err(unknown());
        };
        // Counted in flight from here, so a drain waits for this call before the instance
        // stops.
        let checked_out = self.backends.checkout(server);
        let backend_name = checked_out
            .as_ref()
            .and_then(|(b, _)| b.names.backend(&name).map(str::to_owned));
        if checked_out.is_some() && backend_name.is_none() {
            return Err(unknown());
        }
        let warning = match route(&view) {
            Route::Unhealthy(why) => return Ok(why.answer(self.tools_of(server)).into()),
            Route::Call { warning, .. } => warning,
        };
        let (Some((backend, _in_flight)), Some(backend_name)) = (checked_out, backend_name) else {
            // Running, but its session is not open yet (it just started).
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "BACKEND_UNAVAILABLE: the gateway has no session with '{server}' yet; retry in a moment"
            ))])
            .into());
        };
        let mut params = CallToolRequestParams::new(backend_name);
        if let Some(arguments) = request.arguments {
            params = params.with_arguments(arguments);
        }
        match backend.peer.call_tool_once(params).await {
            Ok(CallToolResponse::Complete(mut result)) => {
                if let Some(warning) = warning {
                    let meta = result.meta.get_or_insert_with(MetaObject::new);
                    meta.0
                        .insert("mcp-orchestration/warning".into(), json!(warning));
                }
                Ok(result.into())
            }
            Ok(other) => Ok(other),
            // The backend's own protocol error (bad arguments...) reaches the client as is.
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "BACKEND_UNREACHABLE: '{server}' did not answer: {}",
                crate::error_text::chain(&e)
            ))])
            .into()),
        }
    }
}

impl Gateway {
    fn catalog_names(&self) -> Vec<String> {
        self.catalog()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect()
    }
}

/// What `/mcp` on the gateway's listener is.
pub type HttpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    Gateway,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// The gateway's `/mcp`; cancelling `shutdown` ends every session.
pub fn http_service(
    gateway: Gateway,
    any_host: bool,
    shutdown: tokio_util::sync::CancellationToken,
) -> HttpService {
    use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(crate::api::BODY_LIMIT);
    if any_host {
        config = config.disable_allowed_hosts();
    }
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(gateway.clone()),
        Arc::new(Default::default()),
        config,
    )
}
