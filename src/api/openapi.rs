//! `GET /openapi.json`: an OpenAPI 3.1 document of the API, rendered from the route table
//! (`super::routes`). Parameters, bodies and answers are generated (schemars) from the very
//! types the handlers read and write, so they cannot drift from what the code accepts.
//!
//! The gateway contract (what the agent POSTs to every `--gateway-url`) and a webhook
//! subscription's delivery are in `webhooks`.

use schemars::JsonSchema;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::error::ErrorEnvelope;
use super::routes::{Auth, Route, table};

/// The schemas of the document: each type once, under `components/schemas`.
pub struct Schemas {
    generator: SchemaGenerator,
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas::new()
    }
}

impl Schemas {
    pub fn new() -> Schemas {
        let generator = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .into_generator();
        Schemas { generator }
    }

    /// A `$ref` to `T`'s schema (added to `components/schemas`).
    pub fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// Every schema referenced so far, for `components/schemas`.
    pub fn definitions(mut self) -> Map<String, Value> {
        self.generator.take_definitions(true)
    }

    /// The query parameters a handler deserialises `T` from, one per field.
    pub fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
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
}

/// One route as an OpenAPI operation.
fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let op = &route.doc;
    let method = route.method.as_str().to_ascii_lowercase();
    let path = route.path;
    let mut parameters: Vec<Value> = path_params(path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
                "description": match name {
                    "commit" => "a commit id or a prefix of at least 4 hex characters",
                    _ if path.starts_with("/rollouts") => "a rollout id",
                    _ => "a server id from the manifest",
                },
            })
        })
        .collect();
    if let Some(query) = op.query {
        parameters.extend(query(schemas));
    }
    let body = op.body.map(|b| b(schemas));
    let answer = (op.answer)(schemas);
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
    if op.ok != 204 {
        ok["content"] = json!({ op.content: { "schema": answer } });
    }
    responses.insert(op.ok.to_string(), ok);
    if !parameters.is_empty() || body.is_some() {
        responses.insert(
            "400".into(),
            error_response("malformed input (`VALIDATION_FAILED`, `BAD_REQUEST`)"),
        );
    }
    if route.auth != Auth::Open {
        let mut unauthorized = error_response("no key or a wrong key (`UNAUTHORIZED`)");
        unauthorized["headers"]["WWW-Authenticate"] = json!({
            "description": "The challenge (RFC 6750): `Bearer realm=\"mcp-orchestration\"`, \
                            with `error=\"invalid_token\"` for a wrong key.",
            "schema": { "type": "string" },
        });
        responses.insert("401".into(), unauthorized);
    }
    if path.contains('{') {
        responses.insert(
            "404".into(),
            error_response("no such server, rollout or revision"),
        );
    }
    if body.is_some() || method == "post" {
        responses.insert(
            "413".into(),
            error_response("a body over 1 MiB (`PAYLOAD_TOO_LARGE`)"),
        );
    }
    responses.insert(
        "default".into(),
        error_response("any other error, in the same envelope"),
    );
    let security = match route.auth {
        Auth::Open => json!([]),
        Auth::Read => json!([{}, { "bearer": [] }, { "api_key": [] }]),
        Auth::Write => json!([{ "bearer": [] }, { "api_key": [] }]),
    };
    let mut operation = json!({
        "operationId": operation_id(&method, path),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
        "security": security,
    });
    if !op.description.is_empty() {
        operation["description"] = json!(op.description);
    }
    if let Some(body) = body {
        operation["requestBody"] = json!({
            "required": op.body_required,
            "content": { "application/json": { "schema": body } },
        });
    }
    operation
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

/// The document: every route of the table, the gateway contract, the schemas.
pub fn document() -> Value {
    let mut schemas = Schemas::new();
    schemas.schema::<ErrorEnvelope>();
    let payload = schemas.schema::<crate::publish::Payload>();
    let delivery = schemas.schema::<crate::subscriptions::Delivery>();
    let mut paths = Map::new();
    for route in table() {
        let operation = operation(&route, &mut schemas);
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    let schemas = schemas.definitions();
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
        "paths": paths,
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
            "subscription-delivery": {
                "post": {
                    "summary": "What the agent POSTs to a webhook subscription's URL",
                    "description": "One event of a kind the subscription names, one at a time \
                                    in event-id order. Verify X-MCP-Orchestration-Signature \
                                    (sha256= and the hex HMAC-SHA256 of the raw body keyed \
                                    with the subscription's secret) before trusting the body. \
                                    Any 2xx acknowledges; otherwise the same delivery (same \
                                    id) is tried again with doubling waits, and after the \
                                    last try it is a dead letter (GET /v1/dead-letters).",
                    "parameters": [
                        { "name": "X-MCP-Orchestration-Delivery", "in": "header", "required": true,
                          "schema": { "type": "string" }, "description": "The delivery id (`<subscription>:<event id>`)." },
                        { "name": "X-MCP-Orchestration-Event", "in": "header", "required": true,
                          "schema": { "type": "string" }, "description": "The event's kind." },
                        { "name": "X-MCP-Orchestration-Attempt", "in": "header", "required": true,
                          "schema": { "type": "integer", "minimum": 1 }, "description": "Which try, from 1." },
                        { "name": "X-MCP-Orchestration-Signature", "in": "header", "required": true,
                          "schema": { "type": "string", "pattern": "^sha256=[0-9a-f]{64}$" },
                          "description": "The HMAC-SHA256 of the body with the subscription's secret." },
                    ],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": delivery } },
                    },
                    "responses": { "200": { "description": "taken (any 2xx)" } },
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
    fn every_route_of_the_table_is_one_operation() {
        let doc = document();
        let routes = table();
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|ops| ops.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, routes.len(), "a method and path listed twice");
        for r in &routes {
            let method = r.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][r.path][&method].is_object(),
                "{method} {}",
                r.path
            );
            // Only MCP is served by something other than a handler of the table.
            assert_eq!(r.handler.is_none(), r.path == super::super::MCP_PATH);
        }
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
