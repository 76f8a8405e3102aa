//! The example MCP server: a tiny streamable-HTTP MCP server that implements the
//! health standard (`GET /health`) the agent probes. The quickstart deploys it and the
//! integration tests use it as the fleet member whose behaviour they control.
//!
//! Tests need to make a running server look sick, hang or crash without restarting it,
//! hence the `/admin/*` endpoints. They are unauthenticated on purpose: this is a test
//! fixture, not something to expose.
//!
//! ```text
//! example-server --port PORT [--host 127.0.0.1] [--version 1.0.0] [--health MODE]
//!   GET  /health               {"status", "version", "uptime_seconds"}; 503 when unhealthy
//!   GET  /admin/health         current mode
//!   POST /admin/health/{mode}  healthy | degraded | unhealthy | hang
//!   POST /admin/exit/{code}    exit with `code` right after answering
//!   GET  /admin/calls          {"sleeping", "sleeps_cancelled"}: `sleep` calls running, and
//!                              those their client cancelled
//!   POST /mcp                  MCP (streamable HTTP): tools `echo`, `server_version`,
//!                              `sleep` (answers after `ms`, with the version that answered:
//!                              a call that is in flight while the server is replaced; with
//!                              a progress token, progress after each quarter; a cancelled
//!                              one answers at once); the
//!                              prompt `greet`; the resource `example://version` and the
//!                              template `example://echo/{text}`
//!
//! To exercise the gateway's tool-set guard, a version can break its clients:
//!   --drop-tool NAME   (EXAMPLE_SERVER_DROP_TOOLS=a,b) does not offer that tool
//!   --strict-echo      (EXAMPLE_SERVER_STRICT_ECHO=true) `echo` requires a new `times`
//! and `--protocol 2026-07-28` (EXAMPLE_SERVER_PROTOCOL) speaks only that revision.
//! ```

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::{Parser, ValueEnum};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
        PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        RequestMetaObject, Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities,
        ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// How long shutdown may take before we stop waiting for open connections. A hanging
/// `/health` request or an idle SSE stream would otherwise keep the process alive.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Delay before `/admin/exit` exits, so the caller gets its response first.
const EXIT_DELAY: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
/// Example MCP server implementing the health standard.
// `--version` is the version this server *reports*, so clap must not claim the flag.
#[command(name = "example-server", disable_version_flag = true)]
struct Args {
    /// Port to listen on (0 picks a free one; the start-up line shows which).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Version reported by /health and MCP server info.
    #[arg(long, env = "EXAMPLE_SERVER_VERSION", default_value = "1.0.0")]
    version: String,
    /// Initial health mode; change it at runtime with POST /admin/health/{mode}.
    #[arg(long, env = "EXAMPLE_SERVER_HEALTH", value_enum, default_value_t = HealthMode::Healthy)]
    health: HealthMode,
    /// A file whose content (a mode name), while it exists, overrides the mode: it survives
    /// restarts, so tests can keep every instance of a server broken.
    #[arg(long, env = "EXAMPLE_SERVER_HEALTH_FILE")]
    health_file: Option<std::path::PathBuf>,
    /// Tools not to offer (a version that removes a tool).
    #[arg(
        long = "drop-tool",
        env = "EXAMPLE_SERVER_DROP_TOOLS",
        value_delimiter = ','
    )]
    drop_tools: Vec<String>,
    /// `echo` requires a `times` argument (a version whose schema refuses earlier calls).
    #[arg(long, env = "EXAMPLE_SERVER_STRICT_ECHO")]
    strict_echo: bool,
    /// Speak only this MCP revision: `2026-07-28` refuses `initialize` (clients must use
    /// `server/discover`); by default every revision rmcp knows.
    #[arg(long, env = "EXAMPLE_SERVER_PROTOCOL")]
    protocol: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[repr(u8)]
enum HealthMode {
    Healthy,
    Degraded,
    Unhealthy,
    /// Accept `/health` requests but never answer them.
    Hang,
}

impl HealthMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Hang => "hang",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Degraded,
            2 => Self::Unhealthy,
            3 => Self::Hang,
            _ => Self::Healthy,
        }
    }
}

struct AppState {
    version: String,
    started: Instant,
    // An atomic rather than a Mutex so request paths have no lock to poison or unwrap.
    mode: AtomicU8,
    health_file: Option<std::path::PathBuf>,
}

impl AppState {
    fn mode(&self) -> HealthMode {
        let forced = self
            .health_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| HealthMode::from_str(text.trim(), true).ok());
        forced.unwrap_or_else(|| HealthMode::from_u8(self.mode.load(Ordering::Relaxed)))
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let mode = state.mode();
    if mode == HealthMode::Hang {
        // Holding the connection open is the point: the prober must hit its own timeout.
        std::future::pending::<()>().await;
    }
    let code = if mode == HealthMode::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": mode.as_str(),
        "version": state.version,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
    });
    (code, Json(body)).into_response()
}

async fn get_mode(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "mode": state.mode().as_str() }))
}

async fn set_mode(State(state): State<Arc<AppState>>, Path(mode): Path<String>) -> Response {
    match HealthMode::from_str(&mode, false) {
        Ok(mode) => {
            state.mode.store(mode as u8, Ordering::Relaxed);
            eprintln!("example-server: health mode set to {}", mode.as_str());
            Json(json!({ "mode": mode.as_str() })).into_response()
        }
        Err(_) => bad_request(format!(
            "unknown health mode {mode:?}; expected healthy, degraded, unhealthy or hang"
        )),
    }
}

async fn exit(Path(code): Path<String>) -> Response {
    let Ok(code) = code.parse::<i32>() else {
        return bad_request(format!("exit code must be an integer, got {code:?}"));
    };
    eprintln!("example-server: exiting with code {code} as requested");
    tokio::spawn(async move {
        tokio::time::sleep(EXIT_DELAY).await;
        std::process::exit(code);
    });
    Json(json!({ "exiting": code })).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// The MCP side. One instance per MCP session; rmcp calls the factory for each.
#[derive(Clone)]
struct ExampleMcp {
    version: String,
    protocol: Option<ProtocolVersion>,
    tool_router: ToolRouter<Self>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct StrictEchoArgs {
    /// Text to send back.
    text: String,
    /// How many times.
    times: u32,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct SleepArgs {
    /// How long to wait before answering, in milliseconds (at most 60,000).
    ms: u64,
}

/// What the tools look like: which are left out, whether `echo` is the strict one; and
/// the only protocol revision spoken, if one is forced.
#[derive(Clone, Default)]
struct ToolChanges {
    drop: Vec<String>,
    strict_echo: bool,
    protocol: Option<ProtocolVersion>,
}

#[tool_router]
impl ExampleMcp {
    fn new(version: String, changes: &ToolChanges) -> Self {
        let mut tool_router = Self::tool_router();
        if changes.strict_echo {
            tool_router.remove_route("echo");
            tool_router.merge(Self::strict_router());
        }
        for name in &changes.drop {
            tool_router.remove_route(name);
        }
        Self {
            version,
            protocol: changes.protocol.clone(),
            tool_router,
        }
    }

    #[tool(description = "Return the given text unchanged")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Return the version this server is running")]
    fn server_version(&self) -> String {
        self.version.clone()
    }

    #[tool(description = "Wait `ms` milliseconds, then return the version that answered")]
    async fn sleep(
        &self,
        Parameters(SleepArgs { ms }): Parameters<SleepArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> String {
        let whole = Duration::from_millis(ms.min(60_000));
        SLEEPING.fetch_add(1, Ordering::Relaxed);
        let _awake = Awake;
        let sleep = async {
            match meta.get_progress_token() {
                None => tokio::time::sleep(whole).await,
                // Asked for progress: a notification after each quarter of the wait.
                Some(token) => {
                    for quarter in 1..=PROGRESS_STEPS {
                        tokio::time::sleep(whole / PROGRESS_STEPS).await;
                        let progress =
                            ProgressNotificationParam::new(token.clone(), quarter.into())
                                .with_total(PROGRESS_STEPS.into())
                                .with_message(format!(
                                    "{quarter} of {PROGRESS_STEPS} quarters slept"
                                ));
                        let _ = peer.notify_progress(progress).await;
                    }
                }
            }
        };
        tokio::select! {
            () = sleep => format!("slept {ms} ms on {}", self.version),
            () = cancelled.cancelled() => {
                SLEEPS_CANCELLED.fetch_add(1, Ordering::Relaxed);
                "cancelled".to_owned()
            }
        }
    }
}

#[tool_router(router = strict_router)]
impl ExampleMcp {
    #[tool(name = "echo", description = "Return the given text `times` times")]
    fn strict_echo(
        &self,
        Parameters(StrictEchoArgs { text, times }): Parameters<StrictEchoArgs>,
    ) -> String {
        text.repeat(times.min(100) as usize)
    }
}

/// How many `sleep` calls are running, and how many their client cancelled
/// (`GET /admin/calls`).
static SLEEPING: AtomicU64 = AtomicU64::new(0);
static SLEEPS_CANCELLED: AtomicU64 = AtomicU64::new(0);

/// A `sleep` call that ended, however it ended.
struct Awake;

impl Drop for Awake {
    fn drop(&mut self) {
        SLEEPING.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn calls() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "sleeping": SLEEPING.load(Ordering::Relaxed),
        "sleeps_cancelled": SLEEPS_CANCELLED.load(Ordering::Relaxed),
    }))
}

/// How many notifications `sleep` sends when asked for its progress.
const PROGRESS_STEPS: u32 = 4;

const VERSION_RESOURCE: &str = "example://version";
/// The resource template `example://echo/{text}` reads back `text`.
const ECHO_RESOURCE: &str = "example://echo/";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ExampleMcp {
    // Written out rather than generated by `#[tool_handler(version = ...)]`, because the
    // version is chosen at run time, not compile time.
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("example-server", self.version.clone()))
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        match &self.protocol {
            Some(only) => std::borrow::Cow::Owned(vec![only.clone()]),
            None => std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greet",
            Some("Greet someone by name"),
            Some(vec![
                PromptArgument::new("name")
                    .with_description("Who to greet")
                    .with_required(true),
            ]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("name"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| ErrorData::invalid_params("`name` is required", None))?;
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Say hello to {name} from example-server {}.", self.version),
        )])
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(VERSION_RESOURCE, "version")
                .with_description("The version this server runs")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{ECHO_RESOURCE}{{text}}"), "echo")
                .with_description("The text in the URI, back"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some(text) = request.uri.strip_prefix(ECHO_RESOURCE) {
            return Ok(ReadResourceResult::new(vec![ResourceContents::text(
                text.to_owned(),
                request.uri.clone(),
            )])
            .into());
        }
        if request.uri != VERSION_RESOURCE {
            return Err(ErrorData::resource_not_found(
                format!("no resource `{}`", request.uri),
                None,
            ));
        }
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            self.version.clone(),
            VERSION_RESOURCE,
        )])
        .into())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                eprintln!("example-server: cannot listen for SIGTERM ({err}); only SIGINT works");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = Args::parse();

    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "example-server: cannot listen on {}:{}: {err}",
                args.host, args.port
            );
            return ExitCode::from(2);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("example-server: cannot read the bound address: {err}");
            return ExitCode::from(2);
        }
    };

    let state = Arc::new(AppState {
        version: args.version.clone(),
        started: Instant::now(),
        mode: AtomicU8::new(args.health as u8),
        health_file: args.health_file.clone(),
    });

    // Cancelling this ends every open MCP session, so their SSE streams do not hold
    // graceful shutdown open.
    let shutdown = CancellationToken::new();
    let mut mcp_config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    if !addr.ip().is_loopback() {
        // rmcp only accepts loopback `Host` headers by default (DNS-rebinding guard). In
        // a container the agent reaches us by container name or IP, so that would reject
        // every MCP request.
        mcp_config = mcp_config.disable_allowed_hosts();
    }
    let version = args.version.clone();
    let protocol = match args.protocol.as_deref() {
        None => None,
        Some(p) => match ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .find(|v| v.as_str() == p)
        {
            Some(v) => Some(v.clone()),
            None => {
                eprintln!("example-server: unknown MCP revision `{p}`");
                return ExitCode::from(2);
            }
        },
    };
    let changes = ToolChanges {
        drop: args.drop_tools.clone(),
        strict_echo: args.strict_echo,
        protocol,
    };
    let mcp = StreamableHttpService::new(
        move || Ok(ExampleMcp::new(version.clone(), &changes)),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );

    let app = Router::new()
        .route("/health", get(health))
        .route("/admin/health", get(get_mode))
        .route("/admin/health/{mode}", post(set_mode))
        .route("/admin/exit/{code}", post(exit))
        .route("/admin/calls", get(calls))
        .with_state(state)
        .nest_service("/mcp", mcp);

    eprintln!(
        "example-server {} listening on http://{addr} (health: {})",
        args.version,
        args.health.as_str()
    );

    let graceful = {
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            eprintln!("example-server: shutting down");
            shutdown.cancel();
            tokio::spawn(async {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                eprintln!(
                    "example-server: connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"
                );
                std::process::exit(0);
            });
        }
    };

    match axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-server: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
