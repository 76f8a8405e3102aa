//! The tools themselves: typed arguments, descriptions for the model, and a call into
//! [`Control`] each. Results are the API's JSON (as text and structured content).
//!
//! Failures the caller can act on are tool results marked as errors, never protocol
//! errors, because clients show a model the former and hide the latter: a [`ControlError`]
//! (`SERVER_NOT_FOUND`, `VALIDATION_FAILED`, ...) with its code and message, and, as rmcp
//! does on its own since MCP 2025-11-25 (SEP-1303), arguments that do not fit the schema,
//! which get the code `VALIDATION_FAILED` here like every other error. Only an unknown
//! tool is a protocol error (invalid params).

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use crate::clients::service::{
    AddCustom, AddEntry, AddProfile, AddServer, Configs, DeployRequest, DiffRequest,
};
use crate::fleet::{self, Control, ControlError};
use crate::subscriptions::{SubscribeRequest, Subscriptions};

/// The tools of one agent. rmcp asks for one value per MCP session; clones share the
/// state and the router.
#[derive(Clone)]
pub struct Tools {
    control: Arc<Control>,
    configs: Arc<Configs>,
    subscriptions: Arc<Subscriptions>,
    tool_router: ToolRouter<Tools>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanArgs {
    /// A commit of the watched repository: an id, an abbreviation of one, or a branch of
    /// the remote (`main`, `main~1`).
    #[serde(default)]
    pub commit: Option<String>,
    /// Or the files of a working copy: the manifest, its `policies/` and `trust-policy.yaml`.
    #[serde(default)]
    pub files: Option<crate::fleet::PlanFiles>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientArgs {
    /// An MCP client: claude-desktop, claude-code, cursor, vscode, windsurf, zed,
    /// gemini-cli or codex (list_clients shows them).
    pub client_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigArgs {
    /// An MCP client (list_clients).
    pub client_id: String,
    /// A profile: `default` (the whole fleet) or one of the manifest's (list_profiles).
    pub profile: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddArgs {
    pub client_id: String,
    /// The configuration's profile.
    pub profile: String,
    /// A server of the fleet to add, reached through the gateway.
    #[serde(default)]
    pub server_id: Option<String>,
    /// A profile to add as one entry, reached through the gateway.
    #[serde(default)]
    pub target_profile: Option<String>,
    /// An entry in the client's own shape (a custom server); needs `name`.
    #[serde(default)]
    pub entry: Option<serde_json::Value>,
    /// The entry's name in the client's file.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    pub client_id: String,
    pub profile: String,
    /// The entry's name.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    pub client_id: String,
    pub profile: String,
    /// A project directory on the agent's host (the client's project file there);
    /// default: the client's user file.
    #[serde(default)]
    pub project_dir: Option<String>,
    /// The artifact to deploy; default: the latest published.
    #[serde(default)]
    pub artifact: Option<String>,
    /// Replace entries of the same names that the agent did not write.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerArgs {
    /// The server's id, as in the manifest (`list_servers` shows them all).
    pub server_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckArgs {
    /// One server's id; leave it out for every monitored server and counts by state.
    #[serde(default)]
    pub server_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthEventsArgs {
    /// Only this server's events (an unknown id is an error); every server's when left out.
    #[serde(default)]
    pub server_id: Option<String>,
    /// Only events with a larger `id`: pass the largest id seen to get what happened since.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub after: Option<i64>,
    /// How many events, newest first (default 50, at most 1000).
    #[serde(default)]
    #[schemars(range(min = 1, max = fleet::EVENTS_LIMIT.1))]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutHistoryArgs {
    /// The server's id, as in the manifest.
    pub server_id: String,
    /// How many rollouts, newest first (default 20, at most 500).
    #[serde(default)]
    #[schemars(range(min = 1, max = fleet::ROLLOUTS_LIMIT.1))]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackArgs {
    /// The server's id, as in the manifest.
    pub server_id: String,
    /// The version to go back to, e.g. `1.1.0`; by default the last version that rolled
    /// out successfully before the one running now.
    #[serde(default)]
    pub to: Option<String>,
    /// Allow a `to` version that never rolled out successfully on this server.
    #[serde(default)]
    pub force: bool,
}

/// The tool's answer: the operation's JSON, or its error for the model to read.
fn reply<T: Serialize>(result: Result<T, ControlError>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => serde_json::to_value(value)
            .map(CallToolResult::structured)
            .map_err(|e| ErrorData::internal_error(format!("cannot encode the result: {e}"), None)),
        Err(e) => Ok(tool_error(&e)),
    }
}

fn tool_error(e: &ControlError) -> CallToolResult {
    error_result(e.code(), &e.to_string(), e.details())
}

fn error_result(code: &str, message: &str, details: serde_json::Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!("{code}: {message}"))]);
    result.structured_content = Some(json!({
        "error": { "code": code, "message": message, "details": details }
    }));
    result
}

#[tool_router]
impl Tools {
    pub fn new(
        control: Arc<Control>,
        configs: Arc<Configs>,
        subscriptions: Arc<Subscriptions>,
    ) -> Tools {
        Tools {
            control,
            configs,
            subscriptions,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List every MCP server of the applied manifest: desired and running \
            version, deployment state (running, pending, failed, stopped, removing) and why, \
            live health, endpoint, and any version held by a rollback or waiting as an \
            update. Also the applied git revision and any error fetching the repository.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_servers(&self) -> Result<CallToolResult, ErrorData> {
        reply(Ok(self.control.fleet_live()))
    }

    #[tool(
        description = "What a manifest would change in the running fleet, changing nothing: \
            per server deploy, update (from and to version, the fields that changed), remove, \
            keep or leave alone, with the versions the update policies resolve to now, or the \
            validation errors that would reject it. Give `commit` (of the watched repository) \
            or `files` (a working copy's manifest, policies and trust policy).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn plan(
        &self,
        Parameters(args): Parameters<PlanArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        use crate::fleet::PlanRequest;
        let request = match (args.commit, args.files) {
            (Some(commit), None) => PlanRequest::Commit { commit },
            (None, Some(files)) => PlanRequest::Files { files },
            _ => {
                return reply::<()>(Err(ControlError::Invalid(
                    "give either `commit` or `files`, not both or neither".to_owned(),
                )));
            }
        };
        reply(self.control.plan(request).await)
    }

    #[tool(
        description = "One server's status: desired and running version, deployment state \
            and reason, live health, endpoint, instance and revision.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn server_status(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.control.server(&args.server_id))
    }

    #[tool(
        description = "Deploy a server again: lifts an operator's stop and forgets versions \
            that failed, then converges now. Returns once requested; follow progress with \
            server_status.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn deploy_server(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.control.deploy(&args.server_id).await)
    }

    #[tool(
        description = "Stop a server: its instances are stopped and removed, and it stays \
            stopped (syncs leave it alone) until deploy_server.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn stop_server(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.control.stop(&args.server_id).await)
    }

    #[tool(
        description = "Restart a server: a fresh instance replaces the running one and the \
            recovery count starts over. Runs in the background; returns once under way.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn restart_server(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.control.restart(&args.server_id).await)
    }

    #[tool(
        description = "Health as the agent's monitor sees it. For one server: state \
            (unknown, starting, healthy, degraded, unhealthy, failed), since when and why, \
            the last probe, consecutive successes and failures, and recovery attempts since \
            the last transition. Without server_id: every monitored server and counts by \
            state.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn health_check(
        &self,
        Parameters(args): Parameters<HealthCheckArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match args.server_id {
            Some(id) => reply(self.control.server_health(&id).await),
            None => reply(Ok(self.control.health_status())),
        }
    }

    #[tool(
        description = "Health events, newest first: transitions between health states, \
            recovery attempts and operators' overrides, each with its time and detail.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn health_events(
        &self,
        Parameters(args): Parameters<HealthEventsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let HealthEventsArgs {
            server_id,
            after,
            limit,
        } = args;
        match server_id {
            Some(id) => reply(self.control.server_health_events(&id, after, limit).await),
            None => reply(self.control.health_events(None, after, limit).await),
        }
    }

    #[tool(
        description = "A server's rollouts, newest first: what triggered each (commit, \
            registry, operator, reconcile, recovery), from and to which version, the outcome and why.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn rollout_history(
        &self,
        Parameters(args): Parameters<RolloutHistoryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.control
                .server_rollouts(&args.server_id, args.limit)
                .await,
        )
    }

    #[tool(
        description = "Roll a server back to an earlier version (by default the last one \
            that rolled out successfully before the current one) and hold it there: \
            auto-update is paused for it until resume_server.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn rollback_server(
        &self,
        Parameters(args): Parameters<RollbackArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.control
                .rollback(&args.server_id, args.to.as_deref(), args.force)
                .await,
        )
    }

    #[tool(
        description = "Lift a rollback_server hold: the server follows its update policy \
            again and converges now. `resumed` is false when nothing was held.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn resume_server(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.control.resume(&args.server_id).await)
    }

    #[tool(
        description = "The MCP clients whose configuration files the agent writes: file \
            format, where the file is on the agent's host, and the documentation each fact \
            was checked against.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_clients(&self) -> Result<CallToolResult, ErrorData> {
        reply(Ok(self.configs.clients()))
    }

    #[tool(
        description = "The profiles a client can be configured with: `default` (the whole \
            fleet) and the manifest's, each with its servers, gateway URL, latest published \
            configuration and whether a draft exists.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_profiles(
        &self,
        Parameters(args): Parameters<ClientArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.profiles(&args.client_id).await)
    }

    #[tool(
        description = "The configuration in force for a client and profile: the latest \
            published (signed) one, or the entry pointing at the profile on the gateway.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_config(
        &self,
        Parameters(args): Parameters<ConfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.config(&args.client_id, &args.profile).await)
    }

    #[tool(
        description = "Compare a configuration (given as `payload`, or the client's file on \
            the agent's host) with the latest published one, field by field: up_to_date, \
            outdated, diverged or not_deployed.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn diff_config(
        &self,
        Parameters(args): Parameters<DiffRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.diff(args).await)
    }

    #[tool(
        description = "Add an entry to the draft of a client's configuration: a fleet server \
            (server_id), a profile (target_profile), or an entry of the client's own shape \
            (entry, with name). The draft is kept by the agent until published or cleared.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn add_server_to_config(
        &self,
        Parameters(args): Parameters<AddArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let add = match (args.server_id, args.target_profile, args.entry, args.name) {
            (Some(server), None, None, name) => AddEntry::Server(AddServer { server, name }),
            (None, Some(profile), None, name) => AddEntry::Profile(AddProfile { profile, name }),
            (None, None, Some(serde_json::Value::Object(entry)), Some(name)) => {
                AddEntry::Entry(AddCustom { entry, name })
            }
            _ => {
                return reply::<()>(Err(ControlError::Invalid(
                    "give exactly one of `server_id`, `target_profile` or `entry` (an object, \
                     with `name`)"
                        .to_owned(),
                )));
            }
        };
        reply(self.configs.add(&args.client_id, &args.profile, add).await)
    }

    #[tool(
        description = "Remove an entry, by name, from the draft of a client's configuration.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn remove_server_from_config(
        &self,
        Parameters(args): Parameters<RemoveArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.configs
                .remove(&args.client_id, &args.profile, &args.name)
                .await,
        )
    }

    #[tool(
        description = "The draft of a client's configuration (`exists: false` and what a draft \
            would start from when there is none).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn view_draft_config(
        &self,
        Parameters(args): Parameters<ConfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.draft(&args.client_id, &args.profile).await)
    }

    #[tool(
        description = "Throw the draft of a client's configuration away.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn clear_draft_config(
        &self,
        Parameters(args): Parameters<ConfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.configs
                .clear_draft(&args.client_id, &args.profile)
                .await,
        )
    }

    #[tool(
        description = "Check the draft (or the configuration in force): errors such as \
            EMPTY_CONFIG, MISSING_COMMAND, MISSING_URL, INVALID_TYPE, TOO_MANY_SERVERS, \
            UNRESOLVED_PLACEHOLDER and SECRET_IN_CLEAR, each with where it is.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn validate_config(
        &self,
        Parameters(args): Parameters<ConfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.validate(&args.client_id, &args.profile).await)
    }

    #[tool(
        description = "Publish the draft (or the configuration in force) as a signed, \
            immutable artifact: refused unless it validates, or when no signing key exists \
            (initialize_keys).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn publish_config(
        &self,
        Parameters(args): Parameters<ConfigArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.publish(&args.client_id, &args.profile).await)
    }

    #[tool(
        description = "Write the latest published configuration (or a given artifact) into \
            the client's file on the agent's host: only the managed entries change, a backup \
            is kept, and the signature is checked first.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn deploy_config(
        &self,
        Parameters(args): Parameters<DeployArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = DeployRequest {
            project_dir: args.project_dir,
            artifact: args.artifact,
            force: args.force,
        };
        reply(
            self.configs
                .deploy(&args.client_id, &args.profile, request)
                .await,
        )
    }

    #[tool(
        description = "The fleet's servers a client configuration can include: version, \
            health, tools, the profiles that show them and their gateway URL.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_available_servers(&self) -> Result<CallToolResult, ErrorData> {
        reply(Ok(self.configs.servers()))
    }

    #[tool(
        description = "One server of the fleet as a client configuration sees it.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn describe_server(
        &self,
        Parameters(args): Parameters<ServerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.server(&args.server_id))
    }

    #[tool(
        description = "Create the agent's signing key for configuration artifacts, if it has \
            none; returns the public keys clients verify with.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn initialize_keys(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.configs.initialize_keys().await)
    }

    #[tool(
        description = "Subscribe a URL to the agent's events (runs, rollouts, health \
            transitions, recoveries, holds): each event of the kinds named (`run.*`, \
            `rollout.finished`, `health.*`, `hold.*`, `*`) is POSTed to it as JSON, in order, \
            signed with HMAC-SHA256 of the body under `secret` (at least 16 characters), \
            retried with backoff and recorded as a dead letter after the last try. The URL \
            must be one the trust policy allows for notifications.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn subscribe_webhook(
        &self,
        Parameters(args): Parameters<SubscribeRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.subscriptions
                .subscribe(args)
                .await
                .map_err(ControlError::from),
        )
    }

    #[tool(
        description = "The webhook subscriptions: id, URL, event kinds, the last event \
            delivered (cursor) and how many deliveries were given up on. Never the secret.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_webhooks(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.subscriptions.list().await.map_err(ControlError::from))
    }

    #[tool(
        description = "Delete a webhook subscription: nothing more is delivered to it.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn delete_webhook(
        &self,
        Parameters(args): Parameters<WebhookArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.subscriptions
                .delete(&args.subscription_id)
                .await
                .map_err(ControlError::from),
        )
    }

    #[tool(
        description = "Deliveries given up on after their last try, newest first: of one \
            subscription, or of all (notification channels' included), with the body sent \
            and the last error.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_dead_letters(
        &self,
        Parameters(args): Parameters<DeadLetterArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.subscriptions
                .dead_letters(args.subscription_id.as_deref(), args.limit)
                .await
                .map_err(ControlError::from),
        )
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookArgs {
    /// A subscription's id (list_webhooks).
    pub subscription_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterArgs {
    /// Only this subscription's; all when not given.
    pub subscription_id: Option<String>,
    /// How many, newest first (default 50, at most 1000).
    #[schemars(range(min = 1, max = crate::subscriptions::DEAD_LETTERS_LIMIT.1))]
    pub limit: Option<usize>,
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        super::server_config()
    }

    // Written out (rather than generated) to put each call in its own span.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let span = tracing::info_span!("mcp_tool", name = %request.name);
        let name = request.name.clone();
        let call = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(call).instrument(span).await?;
        Ok(with_error_code(response, &name))
    }
}

/// Gives rmcp's own tool errors the documented shape. Every error of ours carries its code
/// in structured content ([`tool_error`]); one without it is rmcp's report of arguments
/// that do not fit the schema (`failed to deserialize parameters: …`), which becomes a
/// `VALIDATION_FAILED` error in plain words.
fn with_error_code(response: CallToolResponse, tool: &str) -> CallToolResponse {
    let CallToolResponse::Complete(result) = &response else {
        return response;
    };
    if result.is_error != Some(true) || result.structured_content.is_some() {
        return response;
    }
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let text = text.join(" ");
    let text = text
        .strip_prefix("failed to deserialize parameters:")
        .unwrap_or(&text)
        .trim();
    let message = format!("invalid arguments for `{tool}`: {}", plain_types(text));
    error_result("VALIDATION_FAILED", &message, json!({ "tool": tool })).into()
}

/// serde names the Rust type it expected (`expected usize`); a model reads JSON types.
fn plain_types(text: &str) -> String {
    let mut text = text.to_owned();
    for (rust, json) in [
        ("usize", "a non-negative integer"),
        ("u64", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("i64", "an integer"),
        ("i32", "an integer"),
        ("f64", "a number"),
    ] {
        text = text.replace(&format!("expected {rust}"), &format!("expected {json}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_become_tool_errors_with_their_code_and_message() {
        let r = reply::<()>(Err(ControlError::server_not_found("nope"))).unwrap();
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            r.content[0].as_text().unwrap().text,
            "SERVER_NOT_FOUND: no server `nope` in the applied manifest"
        );
        assert_eq!(
            r.structured_content.unwrap(),
            json!({ "error": {
                "code": "SERVER_NOT_FOUND",
                "message": "no server `nope` in the applied manifest",
                "details": { "server_id": "nope" },
            }})
        );
    }

    #[test]
    fn argument_errors_carry_the_documented_code_in_plain_words() {
        let rmcp = CallToolResult::error(vec![ContentBlock::text(
            "failed to deserialize parameters: invalid value: integer `-1`, expected usize",
        )]);
        let CallToolResponse::Complete(r) = with_error_code(rmcp.into(), "rollout_history") else {
            panic!("a complete result");
        };
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            r.content[0].as_text().unwrap().text,
            "VALIDATION_FAILED: invalid arguments for `rollout_history`: invalid value: \
             integer `-1`, expected a non-negative integer"
        );
        assert_eq!(
            r.structured_content.unwrap()["error"]["code"],
            "VALIDATION_FAILED"
        );
        // Our own errors, and successes, pass unchanged.
        let ours = reply::<()>(Err(ControlError::server_not_found("x"))).unwrap();
        let CallToolResponse::Complete(r) = with_error_code(ours.clone().into(), "t") else {
            panic!("a complete result");
        };
        assert_eq!(r, ours);
    }

    #[test]
    fn results_are_json_text_and_structured_content_alike() {
        let r = reply(Ok(json!({ "server_id": "a", "held": true }))).unwrap();
        assert_eq!(r.is_error, Some(false));
        let text: serde_json::Value =
            serde_json::from_str(&r.content[0].as_text().unwrap().text).unwrap();
        assert_eq!(Some(text), r.structured_content);
    }

    #[test]
    fn server_arguments_are_required_and_nothing_else_is_accepted() {
        let tools = Tools::tool_router().list_all();
        let status = tools.iter().find(|t| t.name == "server_status").unwrap();
        assert_eq!(status.input_schema["required"], json!(["server_id"]));
        assert_eq!(status.input_schema["additionalProperties"], json!(false));
        let rollback = tools.iter().find(|t| t.name == "rollback_server").unwrap();
        assert_eq!(rollback.input_schema["required"], json!(["server_id"]));
    }
}
