//! `GET /openapi.json`: an OpenAPI 3.1 document of the API. Parameters, bodies and answers
//! are generated (schemars) from the very types the handlers read and write, so they cannot
//! drift from what the code accepts; the list of operations is compared with
//! [`super::routes`] by a test, so no route goes undocumented.
//!
//! The gateway contract (what the agent POSTs to every `--gateway-url`) is in `webhooks`.

use schemars::JsonSchema;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::error::ErrorEnvelope;
use crate::fleet::{FleetView, ServerView};
use crate::health::ServerHealth;
use crate::store::{Event, HealthEvent, RolloutProbe, RolloutRecord, RolloutStep, RunRecord};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// No key, ever.
    Open,
    /// A key when the agent listens beyond loopback.
    Read,
    /// Always a key.
    Write,
}

/// One operation, before it is rendered.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    description: &'static str,
    tag: &'static str,
    auth: Auth,
    query: Vec<Value>,
    body: Option<Value>,
    /// Whether the operation refuses a request without a body.
    body_required: bool,
    /// Status and the schema of the answer (JSON unless `content` says otherwise).
    ok: (u16, Value),
    content: &'static str,
}

impl Default for Op {
    fn default() -> Self {
        Op {
            method: "get",
            path: "/",
            summary: "",
            description: "",
            tag: "servers",
            auth: Auth::Read,
            query: Vec::new(),
            body: None,
            body_required: false,
            ok: (200, json!({ "type": "object" })),
            content: "application/json",
        }
    }
}

struct Doc {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

impl Doc {
    fn new() -> Doc {
        let generator = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .into_generator();
        Doc {
            generator,
            paths: Map::new(),
        }
    }

    /// A `$ref` to `T`'s schema (added to `components/schemas`).
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// The query parameters a handler deserialises `T` from, one per field.
    fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
        let root = self.generator.root_schema_for::<T>().to_value();
        let required: Vec<&str> = root["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(props) = root["properties"].as_object() else {
            return Vec::new();
        };
        props
            .iter()
            .map(|(name, schema)| {
                let mut schema = schema.clone();
                let description = schema
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .unwrap_or(Value::Null);
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": schema,
                });
                if !description.is_null() {
                    p["description"] = description;
                }
                p
            })
            .collect()
    }

    fn add(&mut self, op: Op) {
        let mut parameters: Vec<Value> = path_params(op.path)
            .into_iter()
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": { "type": "string" },
                    "description": match name {
                        "commit" => "a commit id or a prefix of at least 4 hex characters",
                        _ if op.path.starts_with("/rollouts") => "a rollout id",
                        _ => "a server id from the manifest",
                    },
                })
            })
            .collect();
        parameters.extend(op.query.iter().cloned());
        let error = json!({ "$ref": "#/components/schemas/ErrorEnvelope" });
        let error_response = |what: &str| {
            json!({
                "description": what,
                "headers": { "x-request-id": { "$ref": "#/components/headers/RequestId" } },
                "content": { "application/json": { "schema": error } },
            })
        };
        let mut responses = Map::new();
        let mut ok = json!({
            "description": "success",
            "headers": { "x-request-id": { "$ref": "#/components/headers/RequestId" } },
        });
        // A 204 has no body to describe.
        if op.ok.0 != 204 {
            ok["content"] = json!({ op.content: { "schema": op.ok.1 } });
        }
        responses.insert(op.ok.0.to_string(), ok);
        if !parameters.is_empty() || op.body.is_some() {
            responses.insert(
                "400".into(),
                error_response("malformed input (`VALIDATION_FAILED`, `BAD_REQUEST`)"),
            );
        }
        if op.auth != Auth::Open {
            let mut unauthorized = error_response("no key or a wrong key (`UNAUTHORIZED`)");
            unauthorized["headers"]["WWW-Authenticate"] = json!({
                "description": "The challenge (RFC 6750): `Bearer realm=\"mcp-orchestration\"`, \
                                with `error=\"invalid_token\"` for a wrong key.",
                "schema": { "type": "string" },
            });
            responses.insert("401".into(), unauthorized);
        }
        if op.path.contains('{') {
            responses.insert(
                "404".into(),
                error_response("no such server, rollout or revision"),
            );
        }
        if op.body.is_some() || op.method == "post" {
            responses.insert(
                "413".into(),
                error_response("a body over 1 MiB (`PAYLOAD_TOO_LARGE`)"),
            );
        }
        responses.insert(
            "default".into(),
            error_response("any other error, in the same envelope"),
        );
        let security = match op.auth {
            Auth::Open => json!([]),
            Auth::Read => json!([{}, { "bearer": [] }, { "api_key": [] }]),
            Auth::Write => json!([{ "bearer": [] }, { "api_key": [] }]),
        };
        let mut operation = json!({
            "operationId": operation_id(op.method, op.path),
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
            "security": security,
        });
        if !op.description.is_empty() {
            operation["description"] = json!(op.description);
        }
        if let Some(body) = op.body {
            operation["requestBody"] = json!({
                "required": op.body_required,
                "content": { "application/json": { "schema": body } },
            });
        }
        let entry = self
            .paths
            .entry(op.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// `get_servers_id_health`: unique, stable, derived from the route.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.push_str(
            &seg.trim_matches(|c| c == '{' || c == '}')
                .replace(['.', '-'], "_"),
        );
    }
    id
}

fn object(props: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    json!({ "type": "object", "properties": properties })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// The document, built once per process.
pub fn document() -> Value {
    let mut d = Doc::new();
    let fleet = d.schema::<FleetView>();
    let server = d.schema::<ServerView>();
    let run = d.schema::<RunRecord>();
    let rollout = d.schema::<RolloutRecord>();
    let step = d.schema::<RolloutStep>();
    let probe = d.schema::<RolloutProbe>();
    let health = d.schema::<ServerHealth>();
    let health_event = d.schema::<HealthEvent>();
    let event = d.schema::<Event>();
    d.schema::<ErrorEnvelope>();
    let payload = d.schema::<crate::publish::Payload>();
    let accepted = |what: &str| object(&[("server_id", string()), (what, string())]);

    d.add(Op {
        path: "/health",
        summary: "The agent's own health (the health standard's format)",
        tag: "agent",
        auth: Auth::Open,
        ok: (
            200,
            object(&[
                ("status", json!({ "enum": ["healthy", "degraded"] })),
                ("version", string()),
                ("uptime_seconds", json!({ "type": "number" })),
                ("runtime", string()),
                ("applied_revision", json!({ "type": ["string", "null"] })),
                ("source_error", json!({ "type": ["string", "null"] })),
                ("runtime_error", json!({ "type": ["string", "null"] })),
                ("store_error", json!({ "type": ["string", "null"] })),
            ]),
        ),
        ..Op::default()
    });
    d.add(Op {
        path: "/openapi.json",
        summary: "This document",
        tag: "agent",
        auth: Auth::Open,
        ..Op::default()
    });
    d.add(Op {
        path: "/servers",
        summary: "The fleet: what a gateway needs to route, per server",
        description: "Each server carries its endpoint and transport, running and desired \
                      version, deployment state, and health with since when and why.",
        ok: (200, fleet),
        ..Op::default()
    });
    for path in ["/servers/{id}", "/servers/{id}/status"] {
        d.add(Op {
            path,
            summary: "One server",
            ok: (200, server.clone()),
            ..Op::default()
        });
    }
    d.add(Op {
        method: "delete",
        path: "/servers/{id}",
        summary: "Stop a server and keep it stopped until it is deployed again",
        tag: "operations",
        auth: Auth::Write,
        ok: (
            200,
            object(&[
                ("server_id", string()),
                ("stopped_instances", json!({ "type": "integer" })),
                ("held", json!({ "type": "boolean" })),
            ]),
        ),
        ..Op::default()
    });
    d.add(Op {
        method: "post",
        path: "/servers/{id}/deploy",
        summary: "Lift a stop, retry a failed version, converge now",
        tag: "operations",
        auth: Auth::Write,
        ok: (202, accepted("deploy")),
        ..Op::default()
    });
    d.add(Op {
        method: "post",
        path: "/servers/{id}/rollout/retry",
        summary: "Forget the server's failed versions and converge now",
        tag: "operations",
        auth: Auth::Write,
        ok: (202, accepted("deploy")),
        ..Op::default()
    });
    let limit = d.query::<super::Limit>();
    d.add(Op {
        path: "/servers/{id}/rollouts",
        summary: "The server's rollouts, newest first",
        tag: "rollouts",
        query: limit.clone(),
        ok: (
            200,
            object(&[
                ("server_id", string()),
                ("rollouts", array(rollout.clone())),
            ]),
        ),
        ..Op::default()
    });
    let rollback = d.schema::<super::RollbackRequest>();
    d.add(Op {
        method: "post",
        path: "/servers/{id}/rollback",
        summary: "Roll back to the previous (or a given) version and hold it there",
        description: "Auto-updates stay paused until `POST /servers/{id}/rollout/resume`.",
        tag: "operations",
        auth: Auth::Write,
        body: Some(rollback),
        ok: (
            202,
            object(&[
                ("server_id", string()),
                ("rollback_to", string()),
                ("auto_update", string()),
            ]),
        ),
        ..Op::default()
    });
    d.add(Op {
        method: "post",
        path: "/servers/{id}/rollout/resume",
        summary: "Lift an operator's rollback",
        tag: "operations",
        auth: Auth::Write,
        ok: (
            200,
            object(&[
                ("server_id", string()),
                ("resumed", json!({ "type": "boolean" })),
            ]),
        ),
        ..Op::default()
    });
    let timeline = json!({ "allOf": [
        rollout.clone(),
        object(&[("steps", array(step)), ("probes", array(probe))]),
    ] });
    d.add(Op {
        path: "/rollouts/{id}",
        summary: "One rollout with its timeline and the probes of its health gate",
        tag: "rollouts",
        ok: (200, timeline),
        ..Op::default()
    });
    let unmonitored = d.schema::<crate::fleet::UnmonitoredHealth>();
    let mut monitored = object(&[
        ("monitored", json!({ "const": true })),
        ("recovery", array(health_event.clone())),
    ]);
    monitored["required"] = json!(["monitored", "recovery"]);
    d.add(Op {
        path: "/servers/{id}/health",
        summary: "Health: state, since when and why, last probe, recent recovery attempts",
        description: "`monitored` tells the two shapes apart: a server with an instance to \
                      probe has its full health, one without (not started yet, stopped, or \
                      unable to run here) only `state: unknown` and the reason.",
        tag: "health",
        ok: (
            200,
            json!({ "oneOf": [
                { "allOf": [health.clone(), monitored] },
                unmonitored,
            ] }),
        ),
        ..Op::default()
    });
    let events_query = d.query::<super::EventsQuery>();
    let server_events_query: Vec<Value> = events_query
        .iter()
        .filter(|p| p["name"] != "server")
        .cloned()
        .collect();
    d.add(Op {
        path: "/servers/{id}/health/events",
        summary: "The server's health events, newest first",
        tag: "health",
        query: server_events_query,
        ok: (
            200,
            object(&[
                ("server_id", string()),
                ("events", array(health_event.clone())),
            ]),
        ),
        ..Op::default()
    });
    let override_body = d.schema::<super::OverrideRequest>();
    d.add(Op {
        method: "post",
        path: "/servers/{id}/health/override",
        summary: "Show a health state for a bounded time (recorded as an override)",
        tag: "health",
        auth: Auth::Write,
        body: Some(override_body),
        body_required: true,
        ok: (
            200,
            object(&[
                ("server_id", string()),
                ("state", string()),
                ("until", string()),
            ]),
        ),
        ..Op::default()
    });
    d.add(Op {
        method: "post",
        path: "/servers/{id}/restart",
        summary: "A fresh instance; recovery starts over",
        tag: "operations",
        auth: Auth::Write,
        ok: (202, accepted("restart")),
        ..Op::default()
    });
    d.add(Op {
        path: "/health/status",
        summary: "Every monitored server's health, and counts by state",
        tag: "health",
        ok: (
            200,
            object(&[
                ("servers", array(health)),
                (
                    "counts",
                    json!({ "type": "object", "additionalProperties": { "type": "integer" } }),
                ),
            ]),
        ),
        ..Op::default()
    });
    d.add(Op {
        path: "/health/events",
        summary: "Health events of every server, newest first",
        tag: "health",
        query: events_query,
        ok: (200, object(&[("events", array(health_event))])),
        ..Op::default()
    });
    let stream_query = d.query::<super::events::StreamQuery>();
    let mut stream_params = stream_query;
    stream_params.push(json!({
        "name": "Last-Event-ID",
        "in": "header",
        "required": false,
        "schema": { "type": "integer", "minimum": 0 },
        "description": "Resume after this event id: every retained event after it is sent first.",
    }));
    d.add(Op {
        path: "/events",
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
        query: stream_params,
        ok: (200, json!({ "type": "string", "description": "text/event-stream; each data line is an Event", "contentSchema": event.clone() })),
        content: "text/event-stream",
        ..Op::default()
    });
    let history_query = d.query::<super::events::HistoryQuery>();
    d.add(Op {
        path: "/events/history",
        summary: "The retained event log, oldest first",
        tag: "events",
        query: history_query,
        ok: (200, object(&[("events", array(event))])),
        ..Op::default()
    });
    d.add(Op {
        path: "/metrics",
        summary: "Prometheus metrics (text format 0.0.4)",
        tag: "agent",
        ok: (200, string()),
        content: "text/plain",
        ..Op::default()
    });
    d.add(Op {
        path: "/revisions",
        summary: "Runs (one per commit seen), newest first",
        tag: "revisions",
        query: limit,
        ok: (200, object(&[("revisions", array(run.clone()))])),
        ..Op::default()
    });
    d.add(Op {
        path: "/revisions/{commit}",
        summary: "The newest run of a commit",
        tag: "revisions",
        ok: (200, run),
        ..Op::default()
    });
    d.add(Op {
        method: "post",
        path: "/webhooks/git",
        summary: "A push notification from the git host: fetch now",
        description: "When a webhook secret is set, `X-Hub-Signature-256` (GitHub) or \
                      `X-Gitea-Signature` must be the body's HMAC-SHA256.",
        tag: "agent",
        auth: Auth::Open,
        body: Some(json!({ "type": "object" })),
        ok: (202, json!({ "type": "object" })),
        ..Op::default()
    });

    for (method, summary, content, status) in [
        (
            "post",
            "MCP over streamable HTTP: a JSON-RPC message (initialize, tools/list, tools/call)",
            "text/event-stream",
            200,
        ),
        (
            "get",
            "MCP over streamable HTTP: a session's stream of server messages",
            "text/event-stream",
            200,
        ),
        (
            "delete",
            "MCP over streamable HTTP: end a session (204 once it has ended)",
            "application/json",
            204,
        ),
    ] {
        d.add(Op {
            method,
            path: super::MCP_PATH,
            summary,
            description: "The tools: list_servers, server_status, deploy_server, stop_server, \
                          restart_server, health_check, health_events, rollout_history, \
                          rollback_server, resume_server. Always needs a key, whatever the method.",
            tag: "mcp",
            auth: Auth::Write,
            body: (method == "post")
                .then(|| json!({ "type": "object", "description": "a JSON-RPC 2.0 message" })),
            ok: (status, json!({})),
            content,
            ..Op::default()
        });
    }

    let schemas = d.generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mcp-orchestration agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Status for operators and the MCP gateway, operator actions, \
                            history, and live events. JSON with snake_case keys and ISO 8601 \
                            timestamps; every error is an ErrorEnvelope and every response \
                            carries x-request-id.",
        },
        "paths": d.paths,
        "webhooks": {
            "backend-set": {
                "post": {
                    "summary": "What the agent POSTs to every --gateway-url",
                    "description": "The full backend set, on start and on every change that \
                                    affects routing. Apply a payload only if its sequence is \
                                    higher than the last applied; an absent backend is \
                                    removed. Any 2xx acknowledges; otherwise the agent \
                                    retries with backoff, always with the newest state.",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": payload } },
                    },
                    "responses": { "200": { "description": "applied (or ignored as stale)" } },
                },
            },
        },
        "components": {
            "schemas": schemas,
            "headers": {
                "RequestId": {
                    "description": "The request's id: the client's x-request-id when given, else a new one.",
                    "schema": { "type": "string" },
                },
            },
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "api_key": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let doc = document();
        let served: BTreeSet<(String, String)> = super::super::served()
            .into_iter()
            .map(|(m, p)| (m.as_str().to_ascii_lowercase(), p.to_owned()))
            .collect();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from OpenAPI: {undocumented:?}"
        );
        assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
    }

    #[test]
    fn the_document_carries_the_limits_the_handlers_enforce() {
        use crate::fleet::{EVENTS_LIMIT, ROLLOUTS_LIMIT};
        let doc = document();
        let param = |path: &str, name: &str| -> Value {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} has no `{name}`"))["schema"]
                .clone()
        };
        for (path, (default, max)) in [
            ("/revisions", ROLLOUTS_LIMIT),
            ("/servers/{id}/rollouts", ROLLOUTS_LIMIT),
            ("/health/events", EVENTS_LIMIT),
            ("/servers/{id}/health/events", EVENTS_LIMIT),
            ("/events/history", EVENTS_LIMIT),
        ] {
            let limit = param(path, "limit");
            assert_eq!(
                (&limit["minimum"], &limit["maximum"], &limit["default"]),
                (&json!(1), &json!(max), &json!(default)),
                "{path}"
            );
        }
        for path in ["/health/events", "/events/history", "/events"] {
            assert_eq!(param(path, "after")["minimum"], 0, "{path}");
        }
        assert_eq!(
            param("/events", "backlog")["maximum"],
            json!(super::super::events::MAX_BACKLOG)
        );
        let o = &doc["components"]["schemas"]["OverrideRequest"]["properties"];
        assert_eq!(o["duration_seconds"]["maximum"], json!(86_400.0));
        assert_eq!(o["duration_seconds"]["exclusiveMinimum"], 0);
        assert_eq!(
            o["state"]["enum"],
            json!(["healthy", "degraded", "unhealthy"])
        );
        let to = &doc["components"]["schemas"]["RollbackRequest"]["properties"]["to"];
        assert!(to["pattern"].is_string());
    }

    #[test]
    fn the_document_is_self_consistent() {
        let doc = document();
        let text = doc.to_string();
        // Every reference resolves.
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let pointer = target.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
        let mut ids = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
                // Every `{param}` of the path is declared.
                for name in path_params(path) {
                    assert!(
                        op["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["in"] == "path" && p["name"] == name),
                        "{method} {path}: {name}"
                    );
                }
                assert!(!op["summary"].as_str().unwrap().is_empty());
            }
        }
        // The query parameters are the handlers' own fields.
        let revisions = &doc["paths"]["/revisions"]["get"]["parameters"];
        assert_eq!(revisions[0]["name"], "limit");
        let stream = &doc["paths"]["/events"]["get"]["parameters"];
        let names: BTreeSet<&str> = stream
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["after", "backlog", "kind", "server", "Last-Event-ID"])
        );
        assert!(
            doc.pointer("/components/schemas/ServerView/properties/endpoint")
                .is_some()
        );
    }
}
