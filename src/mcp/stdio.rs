//! `mcp-orchestration mcp` and `mcp-orchestration gateway`: an MCP server on stdio, for
//! desktop clients that speak only stdio, whose tools are those of an MCP endpoint of a
//! running agent: its operator tools (`/mcp` on the API's listener) or its gateway's (`/mcp`
//! on the gateway's listener for the whole fleet, `/profiles/{id}/mcp` for a profile,
//! `Endpoint::gateway`). It forwards `tools/list` and `tools/call` over streamable HTTP, says
//! what the endpoint says it is, passes the endpoint's `tools/list_changed` on, and
//! implements no tool itself, so the two can never disagree.
//!
//! Stdout is the protocol: nothing here prints, and logs go to stderr.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerConfig,
};
use rmcp::service::{
    ClientInitializeError, NotificationContext, RequestContext, ServerInitializeError,
};
use rmcp::transport::DynamicTransportError;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::AuthRequiredError;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{
    ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt,
};
use serde_json::Value;
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
        source: Cause,
    },
    /// The desktop client went away or spoke something else before the handshake ended.
    #[error("the MCP client on stdio did not complete the handshake")]
    Stdio(#[source] Cause),
}

/// An rmcp error in plain words (see [`plain`]): what went wrong, without rmcp's Rust type
/// names, which mean nothing to the user reading a desktop client's log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(String);

/// Describes an rmcp error in plain words. rmcp names a transport by its Rust type
/// (`Transport [rmcp::transport::worker::WorkerTransport<…>] error: …`): the transport is
/// skipped for the error it carries, and the agent's error envelope in an HTTP answer is
/// reduced to its message.
fn plain(error: &(dyn std::error::Error + 'static)) -> String {
    // A 401 with a challenge: its description is the agent's reason.
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(auth) = e.downcast_ref::<AuthRequiredError>() {
            let challenge = &auth.www_authenticate_header;
            let description = challenge
                .split_once("error_description=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or("the agent needs an API key", |(d, _)| d);
            return format!("HTTP 401 Unauthorized: {description}");
        }
        cause = e.source();
    }
    if let Some(e) = error.downcast_ref::<DynamicTransportError>() {
        return plain(e.error.as_ref());
    }
    if let Some(ServiceError::TransportSend(e)) = error.downcast_ref::<ServiceError>() {
        return plain(e.error.as_ref());
    }
    if let Some(ClientInitializeError::TransportError { error, context }) =
        error.downcast_ref::<ClientInitializeError>()
    {
        return format!("{} (when trying to {context})", plain(error));
    }
    if let Some(ServerInitializeError::TransportError { error, context }) =
        error.downcast_ref::<ServerInitializeError>()
    {
        return format!("{} (when trying to {context})", plain(error));
    }
    without_type_names(&envelope_message(&error.to_string()))
}

/// `… HTTP 401 Unauthorized: {"error":{"message":"…",…}}` → `… HTTP 401 Unauthorized: …`.
fn envelope_message(text: &str) -> String {
    let Some(start) = text.find("{\"error\"") else {
        return text.to_owned();
    };
    let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let Some(Ok(envelope)) = values.next() else {
        return text.to_owned();
    };
    let end = start + values.byte_offset();
    match envelope.pointer("/error/message").and_then(Value::as_str) {
        Some(message) => format!("{}{message}{}", &text[..start], &text[end..]),
        None => text.to_owned(),
    }
}

/// Drops anything that reads like a Rust path (`[a::b::C<…>] `, `a::b::C<…>`), whatever
/// rmcp wraps it in: a safety net for errors [`plain`] does not know.
fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("::") {
        // The path starts after the last separator before `::`.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |j| j + 1);
        // It ends where its generics close and no further `::` follows.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, c) in rest[start..].char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth = depth.saturating_sub(1),
                c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                    end = start + j;
                    break;
                }
                _ => {}
            }
        }
        let mut before = &rest[..start];
        let mut after = &rest[end..];
        // `[path]` and `[path] ` go as a whole.
        if before.ends_with('[') && after.starts_with(']') {
            before = &before[..before.len() - 1];
            after = after[1..].strip_prefix(' ').unwrap_or(&after[1..]);
        }
        out.push_str(before);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// An MCP endpoint of a running agent: the URL its sessions go to, and the base of its
/// listener, whose `/health` says whether anything answers there at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://127.0.0.1:7071/profiles/dev/mcp`.
    pub url: String,
    /// `http://127.0.0.1:7071`.
    pub base: String,
}

/// Why a gateway URL and a profile do not name one endpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("`{url}` is not an http:// or https:// URL")]
    NotHttp { url: String },
    #[error(
        "`{url}` is the endpoint of {serves}, not of profile `{profile}`: give the gateway's \
         address (`--url http://HOST:PORT`) with `--profile {profile}`, or the profile's own \
         endpoint"
    )]
    OtherProfile {
        url: String,
        serves: String,
        profile: String,
    },
    #[error("`{profile}` is not a profile name")]
    BadProfile { profile: String },
}

impl Endpoint {
    /// The agent's operator tools: `{base}/mcp` on its API listener.
    pub fn agent(base_url: &str) -> Endpoint {
        let base = base_url.trim_end_matches('/').to_owned();
        Endpoint {
            url: format!("{base}/mcp"),
            base,
        }
    }

    /// A gateway endpoint from `url` and `profile`. `url` is either the gateway's address
    /// (`http://127.0.0.1:7071`: the endpoint is then `/mcp`, or `/profiles/{profile}/mcp`)
    /// or a whole endpoint ending in `/mcp` (used as it is; a `profile` given with it must
    /// be the one it serves).
    pub fn gateway(url: &str, profile: Option<&str>) -> Result<Endpoint, EndpointError> {
        let url = url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(EndpointError::NotHttp {
                url: url.to_owned(),
            });
        }
        if let Some(p) = profile
            && (p.is_empty() || p.contains(['/', '?', '#']) || p.chars().any(char::is_control))
        {
            return Err(EndpointError::BadProfile {
                profile: p.to_owned(),
            });
        }
        let path_of = crate::clients::service::path_of_profile;
        let Some(before) = url.strip_suffix("/mcp").filter(|b| b.contains("://")) else {
            let profile = profile.unwrap_or(crate::manifest::DEFAULT_PROFILE);
            return Ok(Endpoint {
                url: format!("{url}{}", path_of(profile)),
                base: url.to_owned(),
            });
        };
        // What the endpoint serves: a profile, one server, or the whole fleet.
        let inner = |kind: &str| {
            let (base, rest) = before.rsplit_once(kind)?;
            (!rest.is_empty() && !rest.contains('/')).then_some((base, rest))
        };
        let (base, serves) = if let Some((base, p)) = inner("/profiles/") {
            (base, Served::Profile(p))
        } else if let Some((base, s)) = inner("/servers/") {
            (base, Served::Server(s))
        } else {
            (before, Served::Profile(crate::manifest::DEFAULT_PROFILE))
        };
        if let Some(p) = profile
            && serves != Served::Profile(p)
        {
            return Err(EndpointError::OtherProfile {
                url: url.to_owned(),
                serves: match serves {
                    Served::Profile(q) => format!("profile `{q}`"),
                    Served::Server(s) => format!("server `{s}` alone"),
                },
                profile: p.to_owned(),
            });
        }
        Ok(Endpoint {
            url: url.to_owned(),
            base: base.to_owned(),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Served<'a> {
    Profile(&'a str),
    Server(&'a str),
}

/// Serves the tools of `endpoint` on stdin/stdout until the client closes stdin.
/// `key_hint` says which key is sent or where none was found, for when the agent refuses it.
pub async fn serve_stdio(
    endpoint: &Endpoint,
    api_key: Option<String>,
    key_hint: String,
) -> Result<(), BridgeError> {
    let base = endpoint.base.clone();
    reachable(&base).await?;
    // A restarted agent has forgotten our session; a new one is opened transparently, so
    // the desktop client never needs restarting with the agent.
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.url.clone())
        .reinit_on_expired_session(true);
    if let Some(key) = api_key {
        config = config.auth_header(key);
    }
    let desktop = Arc::new(tokio::sync::OnceCell::new());
    let upstream = Upstream {
        desktop: desktop.clone(),
    };
    let client = upstream
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|e| BridgeError::Refused {
            url: endpoint.url.clone(),
            hint: key_hint,
            source: Cause(plain(&e)),
        })?;
    info!(endpoint = %endpoint.url, "serving the endpoint's MCP tools on stdio");

    let info = match client.peer_info() {
        Some(peer) => {
            // Only what the bridge forwards: tools, prompts and resources (and their
            // `list_changed`), without resource subscriptions.
            let mut capabilities = rmcp::model::ServerCapabilities::default();
            capabilities.tools = peer.capabilities.tools.clone();
            capabilities.prompts = peer.capabilities.prompts.clone();
            capabilities.resources = peer.capabilities.resources.clone().map(|mut r| {
                r.subscribe = None;
                r
            });
            let mut info = ServerConfig::new(capabilities);
            if let Some(implementation) = peer.server_info.clone() {
                info = info.with_server_info(implementation);
            }
            if let Some(instructions) = peer.instructions.clone() {
                info = info.with_instructions(instructions);
            }
            info
        }
        None => super::server_config(),
    };
    let bridge = Bridge {
        agent: client.peer().clone(),
        url: base,
        info,
    };
    let server = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| BridgeError::Stdio(Cause(plain(&e))))?;
    let _ = desktop.set(server.peer().clone());
    if let Err(e) = server.waiting().await {
        warn!(error = %plain(&e), "the stdio session ended abnormally");
    }
    if let Err(e) = client.cancel().await {
        warn!(error = %plain(&e), "cannot close the session with the agent");
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

/// The HTTP side: hears the endpoint's `list_changed` and tells the desktop client.
struct Upstream {
    desktop: Arc<tokio::sync::OnceCell<Peer<RoleServer>>>,
}

impl ClientHandler for Upstream {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-orchestration-stdio", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(desktop) = self.desktop.get()
            && let Err(e) = desktop.notify_tool_list_changed().await
        {
            warn!(error = %plain(&e), "cannot tell the stdio client its tools changed");
        }
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(desktop) = self.desktop.get()
            && let Err(e) = desktop.notify_prompt_list_changed().await
        {
            warn!(error = %plain(&e), "cannot tell the stdio client its prompts changed");
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(desktop) = self.desktop.get()
            && let Err(e) = desktop.notify_resource_list_changed().await
        {
            warn!(error = %plain(&e), "cannot tell the stdio client its resources changed");
        }
    }
}

/// The stdio side: the endpoint's tools, forwarded.
#[derive(Clone)]
struct Bridge {
    agent: Peer<RoleClient>,
    url: String,
    /// What the endpoint said it is (name, version, capabilities, instructions).
    info: ServerConfig,
}

impl Bridge {
    fn lost(&self, e: &ServiceError) -> String {
        format!(
            "AGENT_UNREACHABLE: the agent at {} did not answer: {}",
            self.url,
            plain(e)
        )
    }

    /// The endpoint's protocol error as is; a lost connection in words.
    fn relay(&self, e: ServiceError) -> ErrorData {
        match e {
            ServiceError::McpError(e) => e,
            other => ErrorData::internal_error(self.lost(&other), None),
        }
    }
}

/// Only the cursor travels: the client's own `_meta` belongs to its session with us.
fn page(request: Option<PaginatedRequestParams>) -> Option<PaginatedRequestParams> {
    Some(PaginatedRequestParams::default().with_cursor(request.and_then(|r| r.cursor)))
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.agent
            .list_tools(page(request))
            .await
            .map_err(|e| self.relay(e))
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.agent
            .list_prompts(page(request))
            .await
            .map_err(|e| self.relay(e))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.agent
            .get_prompt_once(request)
            .await
            .map_err(|e| self.relay(e))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.agent
            .list_resources(page(request))
            .await
            .map_err(|e| self.relay(e))
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.agent
            .list_resource_templates(page(request))
            .await
            .map_err(|e| self.relay(e))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.agent
            .read_resource_once(request)
            .await
            .map_err(|e| self.relay(e))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The whole request travels: a multi-round exchange's answers are in it.
        match self.agent.call_tool_once(request).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_url_and_a_profile_name_one_endpoint() {
        let gw = |url: &str, profile: Option<&str>| Endpoint::gateway(url, profile);
        let at = |url: &str, base: &str| {
            Ok(Endpoint {
                url: url.to_owned(),
                base: base.to_owned(),
            })
        };
        let base = "http://127.0.0.1:7071";
        // The gateway's address: its whole fleet, or a profile.
        assert_eq!(gw(base, None), at("http://127.0.0.1:7071/mcp", base));
        assert_eq!(
            gw("http://127.0.0.1:7071/", None),
            at("http://127.0.0.1:7071/mcp", base)
        );
        assert_eq!(
            gw(base, Some("default")),
            at("http://127.0.0.1:7071/mcp", base)
        );
        assert_eq!(
            gw(base, Some("dev")),
            at("http://127.0.0.1:7071/profiles/dev/mcp", base)
        );
        // A whole endpoint is used as it is (what a client entry holds).
        let dev = "http://127.0.0.1:7071/profiles/dev/mcp";
        assert_eq!(gw(dev, Some("dev")), at(dev, base));
        assert_eq!(gw(dev, None), at(dev, base));
        assert_eq!(
            gw("https://gw.example/prefix/mcp", None),
            at("https://gw.example/prefix/mcp", "https://gw.example/prefix")
        );
        let one = "http://127.0.0.1:7071/servers/gh/mcp";
        assert_eq!(gw(one, None), at(one, base));
        assert_eq!(
            gw("http://127.0.0.1:7071/mcp", Some("default")),
            at("http://127.0.0.1:7071/mcp", base)
        );
        // A profile that is not the endpoint's is refused, not silently ignored.
        for (url, profile) in [
            (dev, "ops"),
            ("http://127.0.0.1:7071/mcp", "dev"),
            (one, "default"),
        ] {
            assert!(
                matches!(
                    gw(url, Some(profile)),
                    Err(EndpointError::OtherProfile { .. })
                ),
                "{url} {profile}"
            );
        }
        assert!(matches!(
            gw("127.0.0.1:7071", None),
            Err(EndpointError::NotHttp { .. })
        ));
        assert!(matches!(
            gw(base, Some("a/b")),
            Err(EndpointError::BadProfile { .. })
        ));
        assert_eq!(
            Endpoint::agent("http://127.0.0.1:7070/"),
            Endpoint {
                url: "http://127.0.0.1:7070/mcp".into(),
                base: "http://127.0.0.1:7070".into()
            }
        );
    }

    #[test]
    fn rust_type_names_are_not_part_of_what_the_user_reads() {
        assert_eq!(
            without_type_names(
                "Transport [rmcp::transport::worker::WorkerTransport<rmcp::transport::\
                 streamable_http_client::StreamableHttpClientWorker<reqwest::async_impl::\
                 client::Client>>] error: connection refused"
            ),
            "Transport error: connection refused"
        );
        assert_eq!(
            without_type_names("no path here: a, b [c]"),
            "no path here: a, b [c]"
        );
        assert_eq!(
            without_type_names("failed in std::io::Error, then"),
            "failed in , then"
        );
    }

    #[test]
    fn an_error_envelope_in_an_http_answer_is_reduced_to_its_message() {
        let text = r#"unexpected server response: HTTP 401 Unauthorized: {"error":{"code":"UNAUTHORIZED","message":"the API key is not valid","details":null}}, when x"#;
        assert_eq!(
            envelope_message(text),
            "unexpected server response: HTTP 401 Unauthorized: the API key is not valid, when x"
        );
        assert_eq!(envelope_message("{\"error\" broken"), "{\"error\" broken");
    }
}
