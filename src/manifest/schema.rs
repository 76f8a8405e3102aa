//! The JSON Schema of `ecosystem-manifest.yaml`, for editors and CI outside the agent.
//!
//! Written out by hand because the decoder is hand-written too; a test keeps the two in
//! step by comparing every object's properties with the decoder's field lists.

use serde_json::{Value, json};

const ID_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
const SEMVER_PATTERN: &str =
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

fn update_policy() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "How the server follows new versions published in its registry.",
        "properties": {
            "auto_update": { "type": "boolean", "description": "Act on new versions (true) or only report them (false). Default: true unless pinned." },
            "version_strategy": { "enum": ["pinned", "latest", "semantic"], "default": "semantic",
                "description": "pinned: run exactly `version`; latest: highest stable semver tag; semantic: highest tag matching `constraint` (or `allow`)." },
            "constraint": { "type": "string", "description": "A semver requirement such as \"^1.2\" or \">=1.0, <2.0\". Default for semantic: ^{version}." },
            "allow": { "enum": ["patch", "minor", "major"], "description": "Shorthand relative to `version`: patch = <MAJOR.MINOR+1, minor = <MAJOR+1, major = any newer." },
            "allow_prerelease": { "type": "boolean", "default": false },
            "rollback_on_failure": { "type": "boolean", "default": true },
            "notification_channel": { "type": "string", "pattern": "^https?://", "description": "A URL that receives a JSON POST when a rollout fails or is rolled back." },
            "progress_deadline_seconds": { "type": "number", "exclusiveMinimum": 0, "default": 120 },
            "allow_breaking_tool_changes": { "type": "boolean", "default": false, "description": "Let through a version that removes a tool or whose input schema refuses calls the running version accepted (the tool-set guard)." }
        }
    })
}

/// The schema, as a JSON value.
pub fn json_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/liminalcommons/mcp-orchestration/ecosystem-manifest.schema.json",
        "title": "ecosystem-manifest.yaml",
        "description": "The MCP servers an mcp-orchestration agent keeps running (schema 1.0, 1.1 and 1.2).",
        "type": "object",
        "additionalProperties": false,
        "required": ["version", "servers"],
        "properties": {
            "version": { "enum": ["1.0", "1.1", "1.2", 1.0, 1.1, 1.2], "description": "Schema version; 1.1 adds health_check, recovery, restart_policy and update_policy; 1.2 adds profiles. Unquoted (a YAML number) reads the same." },
            "servers": { "type": "array", "items": { "$ref": "#/$defs/server" } },
            "profiles": { "type": "array", "items": { "$ref": "#/$defs/profile" },
                "description": "Schema 1.2: views of the fleet that clients reach at the gateway's /profiles/{id}/mcp. `default`, the whole fleet, is implied." }
        },
        "$defs": {
            "profile": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "servers"],
                "properties": {
                    "id": { "type": "string", "pattern": ID_PATTERN, "not": { "const": "default" }, "description": "Unique; the gateway serves the profile at /profiles/{id}/mcp." },
                    "description": { "type": "string" },
                    "servers": { "type": "array", "minItems": 1, "items": { "oneOf": [
                        { "type": "string", "pattern": ID_PATTERN, "description": "A server id: all of its tools." },
                        { "$ref": "#/$defs/profile_server" }
                    ] } }
                }
            },
            "profile_server": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id"],
                "properties": {
                    "id": { "type": "string", "pattern": ID_PATTERN },
                    "tools": { "type": "array", "minItems": 1, "items": { "type": "string" }, "description": "The server's own tool names to show; default: all." }
                }
            },
            "server": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "version"],
                "anyOf": [ { "required": ["docker"] }, { "required": ["process"] } ],
                "properties": {
                    "id": { "type": "string", "pattern": ID_PATTERN, "description": "Unique; becomes container names and URL segments." },
                    "name": { "type": "string" },
                    "description": { "type": "string" },
                    "repository": { "type": "string" },
                    "version": { "type": "string", "pattern": SEMVER_PATTERN, "description": "The version to run (pinned) or the floor (semantic)." },
                    "transport": { "enum": ["streamable-http", "sse"], "default": "streamable-http" },
                    "mcp_path": { "type": "string", "pattern": "^/", "description": "Default: /mcp for streamable-http, /sse for sse." },
                    "docker": { "$ref": "#/$defs/docker" },
                    "process": { "$ref": "#/$defs/process" },
                    "config_requirements": { "type": "array", "items": { "$ref": "#/$defs/config_requirement" } },
                    "health_check": { "$ref": "#/$defs/health_check" },
                    "recovery": { "$ref": "#/$defs/recovery" },
                    "restart_policy": { "enum": ["always", "on-failure", "unless-stopped"], "default": "unless-stopped" },
                    "update_policy": {
                        "default": "pinned",
                        "oneOf": [
                            { "type": "string", "description": "A named policy: pinned, standard, conservative, latest, or one in the repo's policies/." },
                            { "$ref": "#/$defs/update_policy" }
                        ]
                    },
                    "version_strategy": { "enum": ["pinned", "latest", "semantic"], "description": "Schema 1.0 only; in 1.1 use update_policy." },
                    "depends_on": {
                        "type": "array",
                        "items": { "type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$" },
                        "uniqueItems": true,
                        "description": "Schema 1.2. Ids of servers that must be healthy before this one is started or upgraded; removals go in reverse order."
                    }
                }
            },
            "docker": {
                "type": "object",
                "additionalProperties": false,
                "required": ["image", "port"],
                "properties": {
                    "image": { "type": "string", "pattern": "^[^@A-Z\\s]+$", "description": "Repository without tag or digest; the tag is the server's version." },
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "Container port serving MCP and the health endpoint." },
                    "host_port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "Fixed port on 127.0.0.1; omit to let the agent pick a free one (enables zero-downtime upgrades)." },
                    "env": { "$ref": "#/$defs/env" },
                    "resources": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "memory_mb": { "type": "integer", "minimum": 4 },
                            "cpus": { "type": "number", "exclusiveMinimum": 0 }
                        }
                    },
                    "replicas": { "type": "integer", "minimum": 1, "maximum": 64, "description": "Schema 1.2. Tasks to run; more than one needs the swarm runtime." },
                    "placement": {
                        "type": "object",
                        "additionalProperties": false,
                        "description": "Schema 1.2. Where Swarm may run the server's tasks; needs the swarm runtime.",
                        "properties": {
                            "constraints": {
                                "type": "array",
                                "items": { "type": "string", "pattern": "^[^=!]+(==|!=).+$" },
                                "description": "Swarm constraint expressions, e.g. node.labels.zone==a"
                            },
                            "max_replicas_per_node": { "type": "integer", "minimum": 1, "description": "At most this many of the server's tasks on one node." }
                        }
                    }
                }
            },
            "process": {
                "type": "object",
                "additionalProperties": false,
                "required": ["command"],
                "properties": {
                    "command": { "type": "string", "pattern": "^/", "description": "Absolute path; {version} and {port} are substituted. Must lie in a directory the trust policy allows." },
                    "args": { "type": "array", "items": { "type": "string" } },
                    "env": { "$ref": "#/$defs/env" }
                }
            },
            "env": {
                "type": "object",
                "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
                "additionalProperties": { "type": ["string", "number", "boolean"] }
            },
            "config_requirement": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": { "type": "string" },
                    "required": { "type": "boolean", "default": true },
                    "secret": { "type": "boolean", "default": false, "description": "Secret values come from the agent's environment or secrets file, never the manifest." },
                    "description": { "type": "string" },
                    "value": { "type": "string", "description": "Inline value; not allowed for secrets." }
                }
            },
            "health_check": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "probe": { "enum": ["http", "tcp", "mcp"], "default": "http" },
                    "endpoint": { "type": "string", "pattern": "^/", "default": "/health" },
                    "interval_seconds": { "type": "number", "exclusiveMinimum": 0, "default": 30 },
                    "timeout_seconds": { "type": "number", "exclusiveMinimum": 0, "default": 5, "description": "Must be less than interval_seconds." },
                    "failure_threshold": { "type": "integer", "minimum": 1, "default": 3 },
                    "success_threshold": { "type": "integer", "minimum": 1, "default": 2 }
                }
            },
            "recovery": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "max_attempts": { "type": "integer", "minimum": 0, "default": 3 },
                    "backoff_seconds": { "type": "number", "exclusiveMinimum": 0, "default": 30 },
                    "backoff_multiplier": { "type": "number", "minimum": 1, "default": 2 }
                }
            },
            "update_policy": update_policy()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse::*;

    fn properties(schema: &Value, pointer: &str) -> Vec<String> {
        let mut keys: Vec<String> = schema
            .pointer(pointer)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no object at {pointer}"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_and_decoder_know_the_same_fields() {
        let s = json_schema();
        for (pointer, fields) in [
            ("/properties", MANIFEST_FIELDS),
            ("/$defs/profile/properties", PROFILE_FIELDS),
            ("/$defs/profile_server/properties", PROFILE_SERVER_FIELDS),
            ("/$defs/server/properties", SERVER_FIELDS),
            ("/$defs/docker/properties", DOCKER_FIELDS),
            (
                "/$defs/docker/properties/resources/properties",
                RESOURCES_FIELDS,
            ),
            ("/$defs/process/properties", PROCESS_FIELDS),
            ("/$defs/config_requirement/properties", REQUIREMENT_FIELDS),
            ("/$defs/health_check/properties", HEALTH_FIELDS),
            ("/$defs/recovery/properties", RECOVERY_FIELDS),
            ("/$defs/update_policy/properties", POLICY_FIELDS),
        ] {
            assert_eq!(properties(&s, pointer), sorted(fields), "at {pointer}");
        }
    }

    /// Whether `value` is in `allowed` as JSON Schema's `enum` compares: numbers by value.
    fn in_enum(allowed: &[Value], value: &Value) -> bool {
        allowed.iter().any(|a| match (a.as_f64(), value.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == value,
        })
    }

    #[test]
    fn schema_and_decoder_agree_on_schema_versions_quoted_or_not() {
        let s = json_schema();
        let allowed = s["properties"]["version"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        // Integers (`version: 1`) are left out: JSON, and so an editor's schema check,
        // cannot tell 1 from 1.0.
        for text in [
            "\"1.0\"", "\"1.1\"", "1.0", "1.1", "'1.1'", "\"1.2\"", "1.2", "2.0", "\"\"", "true",
        ] {
            let yaml = format!("version: {text}\nservers: []\n");
            // What an editor validates: the YAML as JSON.
            let as_json: Value = serde_yaml::from_str(&yaml).unwrap();
            let by_schema = in_enum(&allowed, &as_json["version"]);
            let files = crate::manifest::RepoFiles {
                manifest: crate::manifest::TextFile::new("m.yaml", yaml),
                policies: Vec::new(),
                trust: None,
            };
            let by_decoder =
                crate::manifest::check(&files, &crate::manifest::policy::TrustPolicy::shipped())
                    .is_ok();
            assert_eq!(by_schema, by_decoder, "`version: {text}`");
        }
    }
}
