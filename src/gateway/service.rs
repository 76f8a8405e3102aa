//! The gateway's MCP server: every backend's tools, prompts, resources and resource
//! templates under one endpoint, each request routed by the backend's health (see
//! `route`).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, MetaObject, PaginatedRequestParams, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, RequestMetaObject, Resource, ResourceContents,
    ResourceTemplate, ServerCapabilities, ServerConfig, ServerNotification, SubscriptionFilter,
    Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_client::StreamableHttpError;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceError};
use serde_json::json;
use tracing::debug;

use super::backends::Backends;
use super::http::BackendHttpError;
use super::metrics::{GatewayMetrics, Outcome};
use super::naming::{qualified, resource_uri, server_of, split_resource_uri};
use super::route::{Route, route};
use crate::fleet::Control;

/// How long a call that could not reach its instance waits for the gateway to switch to
/// the instance that replaces it.
const REROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a client session's notification task looks whether the session ended.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

const INSTRUCTIONS: &str = "The mcp-orchestration gateway: the tools and prompts of every \
    MCP server of this fleet, named {server}_{name}, and its resources under \
    mcp-orchestration://{server}/{uri}. A tool whose server is down answers \
    BACKEND_UNHEALTHY with the server, since when, and what to do.";

/// One client session's handler; clones share the control layer and the backends.
#[derive(Clone)]
pub struct Gateway {
    control: Arc<Control>,
    backends: Backends,
    metrics: Arc<GatewayMetrics>,
    /// What this endpoint shows; `None` is `default`, the whole fleet.
    scope: Option<Scope>,
}

/// A part of the fleet one endpoint shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A profile of the applied manifest (`/profiles/{id}/mcp`).
    Profile(String),
    /// One server (`/servers/{id}/mcp`).
    Server(String),
}

/// Which servers and tools one endpoint shows.
enum Shown {
    All,
    Profile(crate::manifest::Profile),
    /// The profile is no longer in the applied manifest: nothing.
    Nothing,
}

impl Shown {
    fn server(&self, server: &str) -> bool {
        match self {
            Shown::All => true,
            Shown::Profile(p) => p.shows_server(server),
            Shown::Nothing => false,
        }
    }

    fn tool(&self, server: &str, tool: &str) -> bool {
        match self {
            Shown::All => true,
            Shown::Profile(p) => p.shows_tool(server, tool),
            Shown::Nothing => false,
        }
    }
}

impl Gateway {
    pub fn new(control: Arc<Control>, backends: Backends, metrics: Arc<GatewayMetrics>) -> Gateway {
        Gateway {
            control,
            backends,
            metrics,
            scope: None,
        }
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The same gateway showing only `scope`.
    pub fn scoped(&self, scope: Scope) -> Gateway {
        Gateway {
            scope: Some(scope),
            ..self.clone()
        }
    }

    /// What this endpoint shows now (a commit may change a profile, or remove a server).
    fn shown(&self) -> Shown {
        match &self.scope {
            None => Shown::All,
            Some(Scope::Profile(id)) => self
                .control
                .view
                .profile(id)
                .map_or(Shown::Nothing, Shown::Profile),
            Some(Scope::Server(id)) if self.control.view.has_server(id) => {
                Shown::Profile(crate::manifest::Profile {
                    id: id.clone(),
                    description: None,
                    servers: vec![crate::manifest::ProfileServer {
                        id: id.clone(),
                        tools: None,
                    }],
                })
            }
            Some(Scope::Server(_)) => Shown::Nothing,
        }
    }

    /// Every tool the gateway serves, under its gateway name: the tools of each server of
    /// the fleet view whose backend has been listed (the last instance's while it is down),
    /// as far as the profile shows them.
    pub fn catalog(&self) -> Vec<Tool> {
        let in_view = self.control.view.server_ids();
        let shown = self.shown();
        let mut tools = Vec::new();
        for (server, backend) in self.backends.all() {
            if !in_view.contains(&server) || !shown.server(&server) {
                continue;
            }
            tools.extend(
                backend
                    .served(&server)
                    .filter(|(_, tool)| shown.tool(&server, &tool.name))
                    .map(|(name, tool)| {
                        let mut tool = tool.clone();
                        tool.name = name.into();
                        tool
                    }),
            );
        }
        tools
    }

    /// The gateway names of the tools `server` contributes to this endpoint.
    fn tools_of(&self, server: &str) -> Vec<String> {
        let shown = self.shown();
        self.backends
            .get(server)
            .map(|b| {
                b.served(server)
                    .filter(|(_, tool)| shown.tool(server, &tool.name))
                    .map(|(name, _)| name)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The backends of the servers in the fleet view that this endpoint shows, by server
    /// id.
    fn in_view(&self) -> Vec<(String, super::backends::Backend)> {
        let in_view = self.control.view.server_ids();
        let shown = self.shown();
        let mut all = self.backends.all();
        all.retain(|(server, _)| in_view.contains(server) && shown.server(server));
        all
    }

    /// Every prompt, under its gateway name.
    fn prompts(&self) -> Vec<Prompt> {
        let mut prompts = Vec::new();
        for (server, backend) in self.in_view() {
            prompts.extend(backend.served_prompts(&server).map(|(name, prompt)| {
                let mut prompt = prompt.clone();
                prompt.name = name;
                prompt
            }));
        }
        prompts
    }

    /// Every resource, under its gateway URI and name.
    fn resources(&self) -> Vec<Resource> {
        let mut resources = Vec::new();
        for (server, backend) in self.in_view() {
            resources.extend(backend.offer.resources.iter().map(|r| {
                let mut r = r.clone();
                r.uri = resource_uri(&server, &r.uri);
                r.name = qualified(&server, &r.name);
                r
            }));
        }
        resources
    }

    /// Every resource template, under its gateway URI template and name.
    fn templates(&self) -> Vec<ResourceTemplate> {
        let mut templates = Vec::new();
        for (server, backend) in self.in_view() {
            templates.extend(backend.offer.templates.iter().map(|t| {
                let mut t = t.clone();
                t.uri_template = resource_uri(&server, &t.uri_template);
                t.name = qualified(&server, &t.name);
                t
            }));
        }
        templates
    }

    /// What a client sees, per kind, to tell when each changed.
    fn seen(&self) -> Seen {
        Seen {
            tools: self.catalog_names(),
            prompts: self.prompts().into_iter().map(|p| p.name).collect(),
            resources: self
                .resources()
                .into_iter()
                .map(|r| r.uri)
                .chain(self.templates().into_iter().map(|t| t.uri_template))
                .collect(),
        }
    }

    /// The backend to send a prompt or resource request for `server` to, or the error
    /// that says why there is none.
    fn reachable(
        &self,
        server: &str,
        unknown: impl Fn() -> ErrorData,
    ) -> Result<(super::backends::Backend, super::backends::InFlight), ErrorData> {
        if !self.shown().server(server) {
            return Err(unknown());
        }
        let view = self.control.server_live(server).ok_or_else(&unknown)?;
        if let Route::Unhealthy(why) = route(&view) {
            let answer = why.answer(self.tools_of(server));
            let text = serde_json::to_value(&answer.content).unwrap_or_default()[0]["text"]
                .as_str()
                .unwrap_or("BACKEND_UNHEALTHY")
                .to_owned();
            return Err(ErrorData::internal_error(text, answer.structured_content));
        }
        self.backends.checkout(server).ok_or_else(|| {
            ErrorData::internal_error(
                format!(
                    "BACKEND_UNAVAILABLE: the gateway has no session with '{server}' yet; retry in a moment"
                ),
                Some(json!({ "error": "BACKEND_UNAVAILABLE", "backend": server })),
            )
        })
    }
}

/// What a `list_changed` is about.
#[derive(Clone, Copy)]
enum Kind {
    Tools,
    Prompts,
    Resources,
}

impl Gateway {
    /// Calls `notify` for each kind whose list changed, each time what the backends
    /// offer changes (debounced), until `ended` or `notify` says the client is gone.
    async fn tell_changes<F>(
        &self,
        ended: impl std::future::Future<Output = ()>,
        notify: impl Fn(Kind) -> F,
    ) where
        F: std::future::Future<Output = bool>,
    {
        let mut generation = self.backends.watch();
        // A commit can change what a profile shows without any backend changing.
        let mut fleet = self.control.view.subscribe();
        let mut seen = self.seen();
        tokio::pin!(ended);
        loop {
            tokio::select! {
                _ = &mut ended => return,
                changed = generation.changed() => if changed.is_err() { return },
                changed = fleet.changed() => if changed.is_err() { return },
            }
            // Changes come in bursts (a switch relists a server): debounce.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            generation.borrow_and_update();
            fleet.borrow_and_update();
            let now = self.seen();
            for (kind, changed) in [
                (Kind::Tools, now.tools != seen.tools),
                (Kind::Prompts, now.prompts != seen.prompts),
                (Kind::Resources, now.resources != seen.resources),
            ] {
                if changed && !notify(kind).await {
                    return;
                }
            }
            seen = now;
        }
    }
}

/// The names (or URIs) a client was last shown.
#[derive(PartialEq)]
struct Seen {
    tools: Vec<String>,
    prompts: Vec<String>,
    resources: Vec<String>,
}

/// A backend's error for a prompt or resource request, as the client gets it: its own
/// protocol error as is, a transport failure in words.
fn relay(server: &str, e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        e => ErrorData::internal_error(
            format!(
                "BACKEND_UNREACHABLE: '{server}' did not answer: {}",
                crate::error_text::chain(&e)
            ),
            Some(json!({ "error": "BACKEND_UNREACHABLE", "backend": server })),
        ),
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_list_changed()
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
        let gateway = self.clone();
        tokio::spawn(async move {
            let closed = {
                let peer = peer.clone();
                async move {
                    // A session that ended takes its task with it, without waiting for
                    // the next change.
                    while !peer.is_transport_closed() {
                        tokio::time::sleep(SESSION_CHECK).await;
                    }
                }
            };
            gateway
                .tell_changes(closed, |kind| {
                    let peer = peer.clone();
                    async move {
                        match kind {
                            Kind::Tools => peer.notify_tool_list_changed().await,
                            Kind::Prompts => peer.notify_prompt_list_changed().await,
                            Kind::Resources => peer.notify_resource_list_changed().await,
                        }
                        .is_ok()
                    }
                })
                .await;
        });
    }

    /// A client on a revision without sessions (2026-07-28 on) asks for `list_changed`
    /// on a subscription: the three kinds the gateway sends, no resource updates.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let sink = context.sink().clone();
        let accepted = context.accepted().clone();
        self.tell_changes(context.cancelled(), |kind| {
            let sink = sink.clone();
            let wanted = match kind {
                Kind::Tools => accepted.tools_list_changed,
                Kind::Prompts => accepted.prompts_list_changed,
                Kind::Resources => accepted.resources_list_changed,
            } == Some(true);
            async move {
                if !wanted {
                    return true;
                }
                let notification = match kind {
                    Kind::Tools => {
                        ServerNotification::ToolListChangedNotification(Default::default())
                    }
                    Kind::Prompts => {
                        ServerNotification::PromptListChangedNotification(Default::default())
                    }
                    Kind::Resources => {
                        ServerNotification::ResourceListChangedNotification(Default::default())
                    }
                };
                sink.send(notification).await.is_ok()
            }
        })
        .await;
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(self.prompts()))
    }

    async fn get_prompt(
        &self,
        mut request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let name = request.name.clone();
        let unknown = || {
            ErrorData::invalid_params(
                format!("unknown prompt `{name}`: prompts/list names the prompts of this gateway"),
                Some(json!({ "prompt": name })),
            )
        };
        let server = server_of(&name).ok_or_else(unknown)?;
        let (backend, _in_flight) = self.reachable(server, unknown)?;
        for_backend(&mut request.meta, &context);
        request.name = backend
            .offer
            .prompt_names
            .backend(&name)
            .ok_or_else(unknown)?
            .to_owned();
        backend
            .peer
            .get_prompt_once(request)
            .await
            .map_err(|e| relay(server, e))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(self.resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            self.templates(),
        ))
    }

    async fn read_resource(
        &self,
        mut request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let unknown = || {
            ErrorData::resource_not_found(
                format!(
                    "no resource `{uri}`: resources/list and resources/templates/list name the resources of this gateway"
                ),
                Some(json!({ "uri": uri })),
            )
        };
        let (server, own) = split_resource_uri(&uri).ok_or_else(unknown)?;
        let (backend, _in_flight) = self.reachable(server, unknown)?;
        for_backend(&mut request.meta, &context);
        request.uri = own.to_owned();
        let answer = backend
            .peer
            .read_resource_once(request)
            .await
            .map_err(|e| relay(server, e))?;
        // The contents name the URI the client asked for, not the backend's.
        Ok(match answer {
            ReadResourceResponse::Complete(mut result) => {
                for contents in &mut result.contents {
                    match contents {
                        ResourceContents::TextResourceContents { uri, .. }
                        | ResourceContents::BlobResourceContents { uri, .. } => {
                            *uri = resource_uri(server, uri);
                        }
                        // A kind of contents added later keeps the backend's URI.
                        _ => {}
                    }
                }
                ReadResourceResponse::Complete(result)
            }
            other => other,
        })
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
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        use rmcp::model::RequestParamsMeta;
        for_backend(&mut request.meta, &context);
        let progress = request
            .progress_token()
            .map(|token| super::progress::Progress::to_session(token, context.peer.clone()));
        // A call its client cancels is dropped, which tells the backend.
        tokio::select! {
            answer = self.call(request, super::client_session(&context), progress) => answer,
            () = context.ct.cancelled() => Err(cancelled()),
        }
    }
}

impl Gateway {
    /// A `tools/call` of the client session `client_session` (none on a revision without
    /// sessions): routed by the backend's health to its instance, its progress (if the
    /// client asked for it) to `progress`. Both ways a call comes in (rmcp's session,
    /// `shortcut`) end here.
    pub(super) async fn call(
        &self,
        request: CallToolRequestParams,
        client_session: Option<&str>,
        progress: Option<super::progress::Progress>,
    ) -> Result<CallToolResponse, ErrorData> {
        let progress = progress.as_ref();
        let name = request.name.to_string();
        let unknown = || {
            ErrorData::invalid_params(
                format!("unknown tool `{name}`: tools/list names the tools of this gateway"),
                Some(json!({ "tool": name })),
            )
        };
        let server = server_of(&name).ok_or_else(unknown)?;
        let shown = self.shown();
        if !shown.server(server) {
            return Err(unknown());
        }
        let Some(view) = self.control.server_live(server) else {
            return Err(unknown());
        };
        // Counted in flight from here, so a drain waits for this call before the instance
        // stops. With several tasks (Swarm replicas), the client's own among the healthy.
        let healthy = super::spread::healthy_endpoints(&view);
        let checked_out = self.backends.checkout_for(
            server,
            super::spread::affinity(client_session),
            |endpoint| {
                crate::runtime::endpoint_addr(endpoint).is_some_and(|a| healthy.contains(&a))
            },
        );
        let backend_name = checked_out
            .as_ref()
            .and_then(|(b, _)| b.offer.names.backend(&name).map(str::to_owned));
        if checked_out.is_some()
            && backend_name
                .as_deref()
                .is_none_or(|tool| !shown.tool(server, tool))
        {
            return Err(unknown());
        }
        let warning = match route(&view) {
            Route::Unhealthy(why) => {
                self.metrics.call(server, Outcome::BackendUnhealthy, None);
                return Ok(why.answer(self.tools_of(server)).into());
            }
            Route::Call { warning, .. } => warning,
        };
        let (Some((mut backend, mut in_flight)), Some(backend_name)) = (checked_out, backend_name)
        else {
            // Running, but its session is not open yet (it just started).
            self.metrics.call(server, Outcome::BackendUnavailable, None);
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "BACKEND_UNAVAILABLE: the gateway has no session with '{server}' yet; retry in a moment"
            ))])
            .into());
        };
        // The whole request travels (its `_meta`, a multi-round exchange's answers); only
        // the name is the backend's own.
        let mut params = request;
        params.name = backend_name.into();
        without_protocol_keys(&mut params.meta);
        let started = std::time::Instant::now();
        let mut first = self
            .unless_dropped(server, backend.call_tool(params.clone(), progress))
            .await;
        // A replica that did not take the call (its node went away before its next probe,
        // or it forgot the session): once to the routed task, which then stands for it.
        if backend.replica
            && let Err(e) = &first
            && (never_delivered(e) || session_expired(e))
            && let Some((routed, guard)) = self.backends.checkout(server)
        {
            if session_expired(e) {
                self.backends.expired(server, backend.session);
            }
            debug!(%server, replica = %backend.endpoint, error = %crate::error_text::chain(e), "the call goes to the routed task");
            self.metrics.rerouted();
            (backend, in_flight) = (routed, guard);
            first = self
                .unless_dropped(server, backend.call_tool(params.clone(), progress))
                .await;
        }
        let answer = match first {
            Err(e) if never_delivered(&e) || session_expired(&e) => {
                // The call cannot have run: the instance's port is closed (it stopped, a
                // drain that ran out, or died), or it no longer knows the gateway's
                // session (it restarted in place). It goes once to the session that
                // replaces this one, if there is one within a moment. An instance under
                // its health gate (a fixed port's next version) is not reached anew.
                drop(in_flight);
                let starting = self
                    .control
                    .server_live(server)
                    .is_some_and(|v| v.health == Some(crate::health::HealthState::Starting));
                if session_expired(&e) && !starting {
                    self.backends.expired(server, backend.session);
                }
                let successor = self
                    .backends
                    .successor(server, backend.session, REROUTE_WAIT);
                let next =
                    self.unless_dropped(server, successor)
                        .await
                        .and_then(|(next, guard)| {
                            let name = next.offer.names.backend(&name)?.to_owned();
                            // The successor's mapping is held to the same profile.
                            shown.tool(server, &name).then_some((next, guard, name))
                        });
                let Some((next, _in_flight, next_name)) = next else {
                    self.metrics.call(server, Outcome::Unreachable, None);
                    return Ok(not_run(server, &e));
                };
                self.metrics.rerouted();
                params.name = next_name.into();
                match self
                    .unless_dropped(server, next.call_tool(params, progress))
                    .await
                {
                    Err(again) if never_delivered(&again) || session_expired(&again) => {
                        self.metrics.call(server, Outcome::Unreachable, None);
                        return Ok(not_run(server, &again));
                    }
                    other => other,
                }
            }
            other => other,
        };
        let took = Some(started.elapsed());
        match answer {
            Ok(CallToolResponse::Complete(mut result)) => {
                let outcome = if result.is_error == Some(true) {
                    Outcome::ToolError
                } else {
                    Outcome::Ok
                };
                self.metrics.call(server, outcome, took);
                if let Some(warning) = warning {
                    let meta = result.meta.get_or_insert_with(MetaObject::new);
                    meta.0
                        .insert("mcp-orchestration/warning".into(), json!(warning));
                }
                Ok(result.into())
            }
            Ok(other) => {
                self.metrics.call(server, Outcome::Ok, took);
                Ok(other)
            }
            // The backend's own protocol error (bad arguments...) reaches the client as is.
            Err(ServiceError::McpError(e)) => {
                self.metrics.call(server, Outcome::ProtocolError, took);
                Err(e)
            }
            Err(e) => {
                self.metrics.call(server, Outcome::Unreachable, None);
                Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "BACKEND_UNREACHABLE: '{server}' did not answer; the call may or may not have run: {}",
                    crate::error_text::chain(&e)
                ))])
                .into())
            }
        }
    }
}

impl Gateway {
    /// `work` for a call to `server`; a call dropped while it waits (its client cancelled
    /// it or went away) is counted as cancelled.
    async fn unless_dropped<T>(&self, server: &str, work: impl Future<Output = T>) -> T {
        let waiting = Waiting {
            metrics: &self.metrics,
            server: Some(server),
        };
        let done = work.await;
        waiting.done();
        done
    }
}

/// A call waiting for its backend; dropped before it is done, the call is counted
/// cancelled.
struct Waiting<'a> {
    metrics: &'a GatewayMetrics,
    server: Option<&'a str>,
}

impl Waiting<'_> {
    fn done(mut self) {
        self.server = None;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(server) = self.server {
            self.metrics.call(server, Outcome::Cancelled, None);
        }
    }
}

/// A request's `_meta` as it goes on to a backend: with what rmcp handed over in the
/// context (it takes `_meta` out of the request it hands the handler).
fn for_backend(meta: &mut Option<RequestMetaObject>, context: &RequestContext<RoleServer>) {
    if !context.meta.is_empty() {
        meta.get_or_insert_with(Default::default)
            .extend(context.meta.clone());
    }
    without_protocol_keys(meta);
}

/// `meta` without the keys of the protocol itself (2026-07-28's revision, client info and
/// capabilities): those are the gateway's with its client, and the backend has its own
/// with the gateway.
fn without_protocol_keys(meta: &mut Option<RequestMetaObject>) {
    if let Some(keys) = meta.as_mut() {
        keys.retain(|key, _| !key.starts_with("io.modelcontextprotocol/"));
        if keys.is_empty() {
            *meta = None;
        }
    }
}

/// The answer to a call its client cancelled, which the client ignores (rmcp does not
/// even send it).
pub(super) fn cancelled() -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode(REQUEST_CANCELLED),
        "the call was cancelled by its client",
        None,
    )
}

/// JSON-RPC's code for a cancelled request (as the Language Server Protocol has it; MCP
/// names none).
const REQUEST_CANCELLED: i32 = -32800;

/// The answer to a call that is known not to have run.
fn not_run(server: &str, e: &ServiceError) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "BACKEND_UNREACHABLE: the call did not reach '{server}' (it was not run): {}",
        crate::error_text::chain(e)
    ))])
    .into()
}

/// The HTTP client's own failure inside `e`, if that is what it is. rmcp hands it back
/// inside its transport error, without a source chain through it, so each level is looked
/// at.
fn http_failure(e: &ServiceError) -> Option<&StreamableHttpError<BackendHttpError>> {
    let ServiceError::TransportSend(e) = e else {
        return None;
    };
    let mut level: Option<&(dyn std::error::Error + 'static)> = Some(e.error.as_ref());
    while let Some(err) = level {
        if let Some(failure) = err.downcast_ref::<StreamableHttpError<BackendHttpError>>() {
            return Some(failure);
        }
        level = err.source();
    }
    None
}

/// Whether the backend answered the request with HTTP 404 on the gateway's session: it
/// does not know the session, so it did not run the request.
pub(super) fn session_expired(e: &ServiceError) -> bool {
    matches!(http_failure(e), Some(StreamableHttpError::SessionExpired))
}

/// Whether a request failed before it reached the backend: no connection could be made.
pub(super) fn never_delivered(e: &ServiceError) -> bool {
    matches!(http_failure(e), Some(StreamableHttpError::Client(http)) if http.never_sent())
}

impl Gateway {
    fn catalog_names(&self) -> Vec<String> {
        self.catalog()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect()
    }
}

pub use super::sessions::SignedSessions as Sessions;

/// How many client sessions are open.
pub async fn open_sessions(sessions: &Sessions) -> usize {
    sessions.open().await
}

/// What `/mcp` on the gateway's listener is.
pub type HttpService =
    rmcp::transport::streamable_http_server::StreamableHttpService<Gateway, Sessions>;

/// The gateway's `/mcp` over `sessions`, which `store` lets outlive the agent; cancelling
/// `shutdown` ends every session.
pub fn http_service(
    gateway: Gateway,
    sessions: Arc<Sessions>,
    store: Arc<super::sessions::SessionFiles>,
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
    config.session_store = Some(store);
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(gateway.clone()),
        sessions,
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_gets_the_requests_meta_without_the_protocols_own_keys() {
        let meta = |value: serde_json::Value| {
            let serde_json::Value::Object(map) = value else {
                unreachable!()
            };
            Some(RequestMetaObject::from(map))
        };
        let mut carried = meta(json!({
            "progressToken": 7,
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": { "name": "c", "version": "1" },
        }));
        without_protocol_keys(&mut carried);
        assert_eq!(
            carried,
            meta(json!({
                "progressToken": 7,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            }))
        );
        let mut only_protocol = meta(json!({ "io.modelcontextprotocol/logLevel": "debug" }));
        without_protocol_keys(&mut only_protocol);
        assert_eq!(only_protocol, None, "nothing left is no `_meta` at all");
    }
}
