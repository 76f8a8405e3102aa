//! The one route table: each route's method, path, handler, who may call it, and how it
//! is documented. The router, the auth layer, the 404/405 answers and `GET /openapi.json`
//! are all built from it, so none of them can disagree with another.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Value, json};

use super::openapi::Schemas;
use super::{ApiState, events, webhook};
use crate::fleet;

/// Where the MCP tools are served (streamable HTTP: POST, GET and DELETE).
pub const MCP_PATH: &str = "/mcp";

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No key, ever (the webhook has its own HMAC).
    Open,
    /// A key when the agent listens beyond loopback.
    Read,
    /// Always a key.
    Write,
}

/// A schema, generated from the type a handler reads or writes.
pub type Schema = fn(&mut Schemas) -> Value;

/// How a route is documented.
pub struct Doc {
    pub summary: &'static str,
    pub description: &'static str,
    pub tag: &'static str,
    /// The query parameters (one per field of the type the handler reads them into).
    pub query: Option<fn(&mut Schemas) -> Vec<Value>>,
    pub body: Option<Schema>,
    /// Whether the route refuses a request without a body.
    pub body_required: bool,
    /// The success status and what it carries.
    pub ok: u16,
    pub answer: Schema,
    pub content: &'static str,
}

impl Default for Doc {
    fn default() -> Self {
        Doc {
            summary: "",
            description: "",
            tag: "servers",
            query: None,
            body: None,
            body_required: false,
            ok: 200,
            answer: |_| json!({ "type": "object" }),
            content: "application/json",
        }
    }
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// `None` for the MCP service, which the agent hands to the router.
    pub handler: Option<MethodRouter<Arc<ApiState>>>,
    pub auth: Auth,
    pub doc: Doc,
}

fn route(
    method: Method,
    path: &'static str,
    handler: MethodRouter<Arc<ApiState>>,
    auth: Auth,
    doc: Doc,
) -> Route {
    Route {
        method,
        path,
        handler: Some(handler),
        auth,
        doc,
    }
}

/// Every route the API serves.
pub fn table() -> Vec<Route> {
    use super::{
        EventsQuery, Limit, OverrideRequest, RollbackRequest, deploy, health, health_events,
        health_override, health_status, metrics, openapi_json, resume, revision, revisions,
        rollback, rollout, server, server_health, server_health_events, server_rollouts, servers,
        stop,
    };
    use Auth::{Open, Read, Write};
    let one_server = || Doc {
        summary: "One server",
        answer: |s| s.schema::<fleet::ServerView>(),
        ..Doc::default()
    };
    let page = |summary: &'static str, content: &'static str| Doc {
        summary,
        tag: "status page",
        answer: |_| json!({ "type": "string" }),
        content,
        ..Doc::default()
    };
    let mut all = vec![
        route(
            Method::GET,
            "/",
            get(super::page::asset),
            Open,
            page(
                "The status page (it reads the API with the operator's key)",
                "text/html",
            ),
        ),
        route(
            Method::GET,
            "/ui/app.js",
            get(super::page::asset),
            Open,
            page("The status page's script", "text/javascript"),
        ),
        route(
            Method::GET,
            "/ui/app.css",
            get(super::page::asset),
            Open,
            page("The status page's style sheet", "text/css"),
        ),
        route(
            Method::GET,
            "/health",
            get(health),
            Open,
            Doc {
                summary: "The agent's own health (the health standard's format)",
                tag: "agent",
                answer: |s| s.schema::<super::AgentHealth>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/openapi.json",
            get(openapi_json),
            Open,
            Doc {
                summary: "This document",
                tag: "agent",
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers",
            get(servers),
            Read,
            Doc {
                summary: "The fleet: what a gateway needs to route, per server",
                description: "Each server carries its endpoint and transport, running and desired \
                          version, deployment state, and health with since when and why.",
                answer: |s| s.schema::<fleet::FleetView>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}",
            get(server),
            Read,
            one_server(),
        ),
        route(
            Method::DELETE,
            "/servers/{id}",
            delete(stop),
            Write,
            Doc {
                summary: "Stop a server and keep it stopped until it is deployed again",
                tag: "operations",
                answer: |s| s.schema::<fleet::Stopped>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}/status",
            get(server),
            Read,
            one_server(),
        ),
        route(
            Method::POST,
            "/servers/{id}/deploy",
            post(deploy),
            Write,
            Doc {
                summary: "Lift a stop, retry a failed version, converge now",
                tag: "operations",
                ok: 202,
                answer: |s| s.schema::<fleet::DeployRequested>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}/rollouts",
            get(server_rollouts),
            Read,
            Doc {
                summary: "The server's rollouts, newest first",
                tag: "rollouts",
                query: Some(|s| s.query::<Limit>()),
                answer: |s| s.schema::<fleet::RolloutPage>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/servers/{id}/rollback",
            post(rollback),
            Write,
            Doc {
                summary: "Roll back to the previous (or a given) version and hold it there",
                description: "Auto-updates stay paused until `POST /servers/{id}/rollout/resume`.",
                tag: "operations",
                body: Some(|s| s.schema::<RollbackRequest>()),
                ok: 202,
                answer: |s| s.schema::<fleet::RolledBack>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/servers/{id}/rollout/resume",
            post(resume),
            Write,
            Doc {
                summary: "Lift an operator's rollback",
                tag: "operations",
                answer: |s| s.schema::<fleet::Resumed>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/servers/{id}/rollout/retry",
            post(deploy),
            Write,
            Doc {
                summary: "Forget the server's failed versions and converge now",
                tag: "operations",
                ok: 202,
                answer: |s| s.schema::<fleet::DeployRequested>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/rollouts/{id}",
            get(rollout),
            Read,
            Doc {
                summary: "One rollout with its timeline and the probes of its health gate",
                tag: "rollouts",
                answer: |s| s.schema::<fleet::RolloutDetail>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}/health",
            get(server_health),
            Read,
            Doc {
                summary: "Health: state, since when and why, last probe, recent recovery attempts",
                description: "`monitored` tells the two shapes apart: a server with an instance to \
                          probe has its full health, one without (not started yet, stopped, or \
                          unable to run here) only `state: unknown` and the reason.",
                tag: "health",
                answer: |s| s.schema::<fleet::HealthReport>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}/health/history",
            get(super::server_health_history),
            Read,
            Doc {
                summary: "The last hour of the server's probes: per 5 s, the slowest probe and the failures",
                tag: "health",
                answer: |s| s.schema::<fleet::HealthHistory>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/servers/{id}/health/events",
            get(server_health_events),
            Read,
            Doc {
                summary: "The server's health events, newest first",
                tag: "health",
                // The server is the path's here.
                query: Some(|s| {
                    s.query::<EventsQuery>()
                        .into_iter()
                        .filter(|p| p["name"] != "server")
                        .collect()
                }),
                answer: |s| s.schema::<fleet::HealthEventPage>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/servers/{id}/health/override",
            post(health_override),
            Write,
            Doc {
                summary: "Show a health state for a bounded time (recorded as an override)",
                tag: "health",
                body: Some(|s| s.schema::<OverrideRequest>()),
                body_required: true,
                answer: |s| s.schema::<fleet::Overridden>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/servers/{id}/restart",
            post(super::restart),
            Write,
            Doc {
                summary: "A fresh instance; recovery starts over",
                tag: "operations",
                ok: 202,
                answer: |s| s.schema::<fleet::RestartRequested>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/health/status",
            get(health_status),
            Read,
            Doc {
                summary: "Every monitored server's health, and counts by state",
                tag: "health",
                answer: |s| s.schema::<fleet::HealthStatus>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/health/events",
            get(health_events),
            Read,
            Doc {
                summary: "Health events of every server, newest first",
                tag: "health",
                query: Some(|s| s.query::<EventsQuery>()),
                answer: |s| s.schema::<fleet::HealthEventPage>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/events",
            get(events::stream),
            Read,
            Doc {
                summary: "Every state change, live, as Server-Sent Events",
                description: "Each SSE event has `id:` (the event id, only growing), `event:` (the kind: \
                          `run.started`, `run.finished`, `rollout.started`, `rollout.step`, \
                          `rollout.finished`, `health.transition`, `health.recovery`, \
                          `health.override`, ...) and `data:` (the event as JSON). Notes about the stream \
                          itself come without an id: `gap` (events after Last-Event-ID were \
                          pruned; data: after, next, message) and `reset` (Last-Event-ID is \
                          newer than the log; data: after, latest, message). A comment is sent \
                          every 15 s; the stream ends when the agent shuts down.",
                tag: "events",
                query: Some(|s| {
                    let mut params = s.query::<events::StreamQuery>();
                    params.push(json!({
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": false,
                    "schema": { "type": "integer", "minimum": 0 },
                    "description": "Resume after this event id: every retained event after it is sent first.",
                }));
                    params
                }),
                answer: |s| {
                    let event = s.schema::<crate::store::Event>();
                    json!({ "type": "string", "description": "text/event-stream; each data line is an Event", "contentSchema": event })
                },
                content: "text/event-stream",
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/events/history",
            get(events::history),
            Read,
            Doc {
                summary: "The retained event log, oldest first",
                tag: "events",
                query: Some(|s| s.query::<events::HistoryQuery>()),
                answer: |s| s.schema::<fleet::EventPage>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/metrics",
            get(metrics),
            Read,
            Doc {
                summary: "Prometheus metrics (text format 0.0.4)",
                tag: "agent",
                answer: |_| json!({ "type": "string" }),
                content: "text/plain",
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/revisions",
            get(revisions),
            Read,
            Doc {
                summary: "Runs (one per commit seen), newest first",
                tag: "revisions",
                query: Some(|s| s.query::<Limit>()),
                answer: |s| s.schema::<fleet::RevisionPage>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/plan",
            post(super::plan),
            Read,
            Doc {
                summary: "What a manifest would change against the running fleet (changes nothing)",
                description: "The body names a commit of the watched repository (`commit`) or \
                          carries the files of a working copy (`files`). The plan is made as \
                          the sync loop makes a new commit's: validated with the agent's trust \
                          policy, versions resolved from the registry's tags as last polled, \
                          against what the runtime lists now.",
                tag: "revisions",
                body: Some(|s| s.schema::<fleet::PlanRequest>()),
                body_required: true,
                answer: |s| s.schema::<fleet::PlanReport>(),
                ..Doc::default()
            },
        ),
        route(
            Method::GET,
            "/revisions/{commit}",
            get(revision),
            Read,
            Doc {
                summary: "The newest run of a commit",
                tag: "revisions",
                answer: |s| s.schema::<crate::store::RunRecord>(),
                ..Doc::default()
            },
        ),
        route(
            Method::POST,
            "/webhooks/git",
            post(webhook::push),
            Open,
            Doc {
                summary: "A push notification from the git host: fetch now",
                description: "When a webhook secret is set, `X-Hub-Signature-256` (GitHub) or \
                          `X-Gitea-Signature` must be the body's HMAC-SHA256.",
                tag: "agent",
                body: Some(|_| json!({ "type": "object" })),
                ok: 202,
                answer: |s| s.schema::<webhook::Answer>(),
                ..Doc::default()
            },
        ),
    ];
    all.extend(config_routes());
    all.extend(subscription_routes());
    // MCP carries mutating tools on every method (a `GET` opens a session's stream), so
    // it always needs a key.
    for (method, summary, content, ok) in [
        (
            Method::POST,
            "MCP over streamable HTTP: a JSON-RPC message (initialize, tools/list, tools/call)",
            "text/event-stream",
            200,
        ),
        (
            Method::GET,
            "MCP over streamable HTTP: a session's stream of server messages",
            "text/event-stream",
            200,
        ),
        (
            Method::DELETE,
            "MCP over streamable HTTP: end a session (204 once it has ended)",
            "application/json",
            204,
        ),
    ] {
        let post = method == Method::POST;
        all.push(Route {
            method,
            path: MCP_PATH,
            handler: None,
            auth: Write,
            doc: Doc {
                summary,
                description: "The tools: list_servers, server_status, deploy_server, stop_server, \
                              restart_server, health_check, health_events, rollout_history, \
                              rollback_server, resume_server; and for client configurations \
                              list_clients, list_profiles, get_config, diff_config, \
                              add_server_to_config, remove_server_from_config, view_draft_config, \
                              clear_draft_config, validate_config, publish_config, deploy_config, \
                              list_available_servers, describe_server, initialize_keys; and for \
                              webhooks subscribe_webhook, list_webhooks, delete_webhook, \
                              list_dead_letters. Always \
                              needs a key, whatever the method.",
                tag: "mcp",
                body: post.then_some(
                    (|_| json!({ "type": "object", "description": "a JSON-RPC 2.0 message" }))
                        as Schema,
                ),
                ok,
                answer: |_| json!({}),
                content,
                ..Doc::default()
            },
        });
    }
    all
}

/// Whether `path` is an instance of the route `template` (`/servers/{id}`); the MCP
/// service also owns everything below its path.
pub fn matches(template: &str, path: &str) -> bool {
    if template == MCP_PATH {
        return path == MCP_PATH || path.starts_with("/mcp/");
    }
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The methods served at `path` with who may call each (HEAD as GET), or `None` for a
/// path not served at all.
pub fn at(path: &str) -> Option<Vec<(Method, Auth)>> {
    static TABLE: std::sync::OnceLock<Vec<(Method, &'static str, Auth)>> =
        std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        table()
            .into_iter()
            .map(|r| (r.method, r.path, r.auth))
            .collect()
    });
    let matching: Vec<&(Method, &str, Auth)> = table
        .iter()
        .filter(|(_, template, _)| matches(template, path))
        .collect();
    // As the router matches: a literal segment wins over a parameter where templates part
    // (`/v1/webhooks/subscribe` is not `/v1/webhooks/{id}`).
    let literals = |template: &str| -> Vec<bool> {
        template
            .split('/')
            .map(|seg| !(seg.starts_with('{') && seg.ends_with('}')))
            .collect()
    };
    let best = matching.iter().map(|(_, t, _)| literals(t)).max();
    let mut methods: Vec<(Method, Auth)> = matching
        .iter()
        .filter(|(_, t, _)| Some(literals(t)) == best)
        .map(|(m, _, a)| (m.clone(), *a))
        .collect();
    if methods.is_empty() {
        return None;
    }
    if let Some((_, auth)) = methods.iter().find(|(m, _)| *m == Method::GET).cloned() {
        methods.push((Method::HEAD, auth));
    }
    Some(methods)
}

/// Webhook subscriptions to the event log (`subscriptions`).
fn subscription_routes() -> Vec<Route> {
    use super::subscriptions as h;
    use crate::subscriptions as s;
    use Auth::{Read, Write};
    let doc = |summary: &'static str, answer: Schema| Doc {
        summary,
        tag: "subscriptions",
        answer,
        ..Doc::default()
    };
    vec![
        route(
            Method::POST,
            "/v1/webhooks/subscribe",
            post(h::subscribe),
            Write,
            Doc {
                description: "From the next event on, each event of the kinds named (`run.*`, \
                              `rollout.finished`, `health.*`, `hold.*`, `*`) is POSTed to `url` \
                              as JSON `{delivery_id, subscription_id, event}`, one at a time in \
                              event-id order, with `X-MCP-Orchestration-Delivery` (the same on \
                              every try), `X-MCP-Orchestration-Event` (the kind) and \
                              `X-MCP-Orchestration-Signature: sha256=<hex HMAC-SHA256 of the \
                              body with the secret>`. A delivery is tried until a 2xx answer, \
                              with a doubling wait, and after the last try recorded as a dead \
                              letter. The URL must be under one of the trust policy's \
                              `allowed_notification_urls` (409 URL_NOT_ALLOWED otherwise).",
                body: Some(|s| s.schema::<s::SubscribeRequest>()),
                body_required: true,
                ok: 201,
                ..doc("Subscribe a URL to events", |s| {
                    s.schema::<s::SubscriptionView>()
                })
            },
        ),
        route(
            Method::GET,
            "/v1/webhooks",
            get(h::list),
            Read,
            doc(
                "The webhook subscriptions: URL, event kinds, cursor, dead letters (never the secret)",
                |s| s.schema::<s::SubscriptionList>(),
            ),
        ),
        route(
            Method::DELETE,
            "/v1/webhooks/{id}",
            delete(h::delete),
            Write,
            doc(
                "Delete a subscription: nothing more is delivered to it (its dead letters stay)",
                |s| s.schema::<s::Unsubscribed>(),
            ),
        ),
        route(
            Method::GET,
            "/v1/dead-letters",
            get(h::dead_letters),
            Read,
            Doc {
                query: Some(|s| s.query::<h::DeadLetterQuery>()),
                ..doc(
                    "Deliveries given up on after the last try (subscriptions' and notification channels'), newest first",
                    |s| s.schema::<s::DeadLetterPage>(),
                )
            },
        ),
    ]
}

/// The seed's `/v1/` routes for client configurations (`clients::service`).
fn config_routes() -> Vec<Route> {
    use super::configs as c;
    use crate::clients::service as cs;
    use Auth::{Read, Write};
    let doc = |summary: &'static str, answer: Schema| Doc {
        summary,
        tag: "client configurations",
        answer,
        ..Doc::default()
    };
    vec![
        route(
            Method::GET,
            "/v1/clients",
            get(c::clients),
            Read,
            doc(
                "The MCP clients whose configuration files the agent writes, and where each keeps its file",
                |s| s.schema::<cs::ClientList>(),
            ),
        ),
        route(
            Method::GET,
            "/v1/clients/{client_id}/profiles",
            get(c::profiles),
            Read,
            doc(
                "The profiles a client can be configured with (`default` is the whole fleet)",
                |s| s.schema::<cs::ProfileList>(),
            ),
        ),
        route(
            Method::GET,
            "/v1/config/{client_id}/{profile}",
            get(c::config),
            Read,
            doc(
                "The configuration in force: the latest published, or the entry pointing at the profile on the gateway",
                |s| s.schema::<cs::ConfigView>(),
            ),
        ),
        route(
            Method::GET,
            "/v1/config/{client_id}/{profile}/artifact",
            get(c::latest_artifact),
            Read,
            doc(
                "The latest published artifact as signed (envelope, payload, signature, id)",
                |_| json!({ "type": "object" }),
            ),
        ),
        route(
            Method::GET,
            "/v1/artifacts/{artifact_id}",
            get(c::artifact),
            Read,
            doc(
                "One published artifact as signed",
                |_| json!({ "type": "object" }),
            ),
        ),
        // Always keyed: without a payload it reads a client file on the agent's host.
        route(
            Method::POST,
            "/v1/config/diff",
            post(c::diff),
            Write,
            Doc {
                body: Some(|s| s.schema::<cs::DiffRequest>()),
                body_required: true,
                ..doc(
                    "Compare a configuration (a payload, or the client's file on the agent's host) with the latest published one, field by field",
                    |s| s.schema::<cs::DiffReport>(),
                )
            },
        ),
        route(
            Method::POST,
            "/v1/config/{client_id}/{profile}/draft/add",
            post(c::draft_add),
            Write,
            Doc {
                body: Some(|s| s.schema::<cs::AddEntry>()),
                body_required: true,
                ..doc(
                    "Add an entry to the draft: a fleet server, a profile, or an entry of the client's own shape",
                    |s| s.schema::<cs::DraftView>(),
                )
            },
        ),
        route(
            Method::POST,
            "/v1/config/{client_id}/{profile}/draft/remove",
            post(c::draft_remove),
            Write,
            Doc {
                body: Some(|s| s.schema::<c::RemoveRequest>()),
                body_required: true,
                ..doc("Remove an entry from the draft, by name", |s| {
                    s.schema::<cs::DraftView>()
                })
            },
        ),
        route(
            Method::GET,
            "/v1/config/{client_id}/{profile}/draft",
            get(c::draft),
            Read,
            doc(
                "The draft (`exists: false` and what it would start from when there is none)",
                |s| s.schema::<cs::DraftView>(),
            ),
        ),
        route(
            Method::DELETE,
            "/v1/config/{client_id}/{profile}/draft",
            delete(c::clear_draft),
            Write,
            doc("Throw the draft away", |s| s.schema::<cs::DraftCleared>()),
        ),
        route(
            Method::POST,
            "/v1/config/{client_id}/{profile}/validate",
            post(c::validate),
            Read,
            doc(
                "Validate the draft (or the configuration in force): every problem with its code and place",
                |s| s.schema::<cs::ValidationReport>(),
            ),
        ),
        route(
            Method::POST,
            "/v1/config/{client_id}/{profile}/publish",
            post(c::publish),
            Write,
            Doc {
                ok: 201,
                ..doc(
                    "Sign the draft (or the configuration in force) into an immutable artifact (409 CONFIG_INVALID when it does not validate, 409 CONFLICT without a signing key)",
                    |s| s.schema::<cs::Published>(),
                )
            },
        ),
        route(
            Method::POST,
            "/v1/config/{client_id}/{profile}/deploy",
            post(c::deploy),
            Write,
            Doc {
                body: Some(|s| s.schema::<cs::DeployRequest>()),
                ..doc(
                    "Write the latest (or a given) artifact into the client's file on the agent's host (below its home), changing only its entries (409 with a CLIENT_FILE_* or PROJECT_DIR_* code when the file cannot be changed; it is left as it was)",
                    |s| s.schema::<cs::DeployReport>(),
                )
            },
        ),
        route(
            Method::GET,
            "/v1/servers",
            get(c::servers),
            Read,
            doc(
                "The fleet's servers a configuration can include, with their gateway URLs",
                |s| s.schema::<cs::AvailableServers>(),
            ),
        ),
        route(
            Method::GET,
            "/v1/servers/{server_id}",
            get(c::server),
            Read,
            doc("One server as a configuration sees it", |s| {
                s.schema::<cs::AvailableServer>()
            }),
        ),
        route(
            Method::GET,
            "/v1/keys",
            get(c::keys),
            Read,
            doc("The public keys artifacts are signed with", |s| {
                s.schema::<cs::KeysView>()
            }),
        ),
        route(
            Method::POST,
            "/v1/keys/initialize",
            post(c::initialize_keys),
            Write,
            doc(
                "Create the signing key if there is none (idempotent)",
                |s| s.schema::<cs::KeysView>(),
            ),
        ),
        route(
            Method::POST,
            "/v1/keys/rotate",
            post(c::rotate_keys),
            Write,
            doc(
                "A new signing key; artifacts signed by the old ones stay verifiable",
                |s| s.schema::<cs::KeysView>(),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_templates_and_mcp_owns_its_subtree() {
        assert!(matches("/servers/{id}", "/servers/a"));
        assert!(!matches("/servers/{id}", "/servers/"));
        assert!(!matches("/servers/{id}", "/servers/a/b"));
        assert!(matches(MCP_PATH, "/mcp/"));
        assert!(!matches(MCP_PATH, "/mcpx"));
    }

    #[test]
    fn who_may_call_what_comes_from_the_table() {
        let auth = |method: Method, path: &str| {
            at(path)
                .unwrap()
                .into_iter()
                .find(|(m, _)| *m == method)
                .map(|(_, a)| a)
        };
        assert_eq!(auth(Method::GET, "/health"), Some(Auth::Open));
        assert_eq!(auth(Method::HEAD, "/health"), Some(Auth::Open));
        assert_eq!(auth(Method::POST, "/webhooks/git"), Some(Auth::Open));
        assert_eq!(auth(Method::GET, "/servers/x"), Some(Auth::Read));
        assert_eq!(auth(Method::DELETE, "/servers/x"), Some(Auth::Write));
        // MCP needs a key on every method.
        for m in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(auth(m, "/mcp"), Some(Auth::Write));
        }
        assert_eq!(auth(Method::PUT, "/servers/x"), None);
        assert!(at("/nowhere").is_none());
    }
}
