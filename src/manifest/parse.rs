//! Decoding a manifest's located YAML tree into [`Manifest`], reporting every problem found
//! in a single server or field along the way. Checks that compare servers with each other or
//! need policies live in `validate`.

use std::collections::BTreeMap;

use semver::{Version, VersionReq};

use super::decode::{Decoder, Object, index, join};
use super::types::*;
use super::yaml::{Node, Value};

pub const MANIFEST_FIELDS: &[&str] = &["version", "servers", "profiles"];
pub const PROFILE_FIELDS: &[&str] = &["id", "description", "servers"];
pub const PROFILE_SERVER_FIELDS: &[&str] = &["id", "tools"];
pub const SERVER_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "repository",
    "version",
    "transport",
    "mcp_path",
    "docker",
    "process",
    "config_requirements",
    "health_check",
    "recovery",
    "restart_policy",
    "update_policy",
    "version_strategy",
    "depends_on",
];
/// Fields a v1.0 manifest may not use on a server.
pub const V1_1_SERVER_FIELDS: &[&str] = &[
    "health_check",
    "recovery",
    "restart_policy",
    "update_policy",
];
pub const DOCKER_FIELDS: &[&str] = &[
    "image",
    "port",
    "host_port",
    "env",
    "resources",
    "replicas",
    "placement",
];
/// Docker fields a manifest before 1.2 may not use: only a scheduling runtime honours them.
pub const V1_2_DOCKER_FIELDS: &[&str] = &["replicas", "placement"];
pub const PLACEMENT_FIELDS: &[&str] = &["constraints", "max_replicas_per_node"];
/// The most replicas of one server a manifest may ask for.
pub const MAX_REPLICAS: u32 = 64;
pub const RESOURCES_FIELDS: &[&str] = &["memory_mb", "cpus"];
pub const PROCESS_FIELDS: &[&str] = &["command", "args", "env"];
pub const REQUIREMENT_FIELDS: &[&str] = &["name", "required", "secret", "description", "value"];
pub const HEALTH_FIELDS: &[&str] = &[
    "probe",
    "endpoint",
    "interval_seconds",
    "timeout_seconds",
    "failure_threshold",
    "success_threshold",
];
pub const RECOVERY_FIELDS: &[&str] = &["max_attempts", "backoff_seconds", "backoff_multiplier"];
pub const POLICY_FIELDS: &[&str] = &[
    "auto_update",
    "version_strategy",
    "constraint",
    "allow",
    "allow_prerelease",
    "rollback_on_failure",
    "notification_channel",
    "progress_deadline_seconds",
    "allow_breaking_tool_changes",
];

/// Decodes the whole document. Servers with problems are still returned (with defaults in
/// place of bad values) so cross-server checks can run; the decoder's diagnostics decide
/// whether the result may be used.
pub fn manifest(d: &mut Decoder, root: &Node) -> Option<Manifest> {
    let obj = d.object(root, "", MANIFEST_FIELDS)?;
    let version = d.required(&obj, "version").and_then(|n| {
        let text = d.string(n, "version")?;
        match text.as_str() {
            "1.0" => Some(SchemaVersion::V1_0),
            "1.1" => Some(SchemaVersion::V1_1),
            "1.2" => Some(SchemaVersion::V1_2),
            other => {
                d.error(
                    "version",
                    format!(
                        "unsupported schema version `{other}`; this agent reads \"1.0\", \"1.1\" and \"1.2\""
                    ),
                );
                None
            }
        }
    });
    let version = version.unwrap_or(SchemaVersion::V1_2);
    let mut servers = Vec::new();
    if let Some(list) = d
        .required(&obj, "servers")
        .and_then(|n| d.list(n, "servers"))
    {
        for (i, node) in list.iter().enumerate() {
            if let Some(s) = server(d, node, &index("servers", i), version) {
                servers.push(s);
            }
        }
    }
    let mut profiles = Vec::new();
    if let Some(node) = obj.get("profiles") {
        if version < SchemaVersion::V1_2 {
            d.error(
                "profiles",
                "`profiles` needs schema version \"1.2\"; set `version: \"1.2\"` at the top of the manifest",
            );
        } else if let Some(list) = d.list(node, "profiles") {
            for (i, node) in list.iter().enumerate() {
                if let Some(p) = profile(d, node, &index("profiles", i)) {
                    profiles.push(p);
                }
            }
        }
    }
    Some(Manifest {
        version,
        servers,
        profiles,
    })
}

/// One profile. Which servers exist is checked in `validate`, with the others.
fn profile(d: &mut Decoder, node: &Node, path: &str) -> Option<Profile> {
    let obj = d.object(node, path, PROFILE_FIELDS)?;
    let id = d
        .required(&obj, "id")
        .and_then(|n| d.string(n, &join(path, "id")))?;
    if id == DEFAULT_PROFILE {
        d.error(
            &join(path, "id"),
            "`default` is the profile of the whole fleet and cannot be redefined; give this profile another id",
        );
    } else if let Err(why) = check_id(&id) {
        d.error(&join(path, "id"), why.replace("server id", "profile id"));
    }
    let description = obj
        .get("description")
        .and_then(|n| d.string(n, &join(path, "description")));
    let mut servers = Vec::new();
    let list_path = join(path, "servers");
    if let Some(list) = d
        .required(&obj, "servers")
        .and_then(|n| d.list(n, &list_path))
    {
        if list.is_empty() {
            d.error(&list_path, "a profile needs at least one server");
        }
        for (i, node) in list.iter().enumerate() {
            let at = index(&list_path, i);
            // A bare id shows every tool of the server; a mapping can narrow them.
            if let Value::Scalar { .. } = node.value {
                if let Some(id) = d.string(node, &at) {
                    servers.push(ProfileServer { id, tools: None });
                }
                continue;
            }
            let Some(obj) = d.object(node, &at, PROFILE_SERVER_FIELDS) else {
                continue;
            };
            let Some(id) = d
                .required(&obj, "id")
                .and_then(|n| d.string(n, &join(&at, "id")))
            else {
                continue;
            };
            let tools = obj
                .get("tools")
                .and_then(|n| d.string_list(n, &join(&at, "tools")));
            if let Some(tools) = &tools {
                if tools.is_empty() {
                    d.error(
                        &join(&at, "tools"),
                        "an empty tool list would show nothing of this server; leave `tools` out to show all of them, or remove the server from the profile",
                    );
                }
                for (j, t) in tools.iter().enumerate() {
                    if t.is_empty() || t.chars().any(char::is_whitespace) {
                        d.error(
                            &index(&join(&at, "tools"), j),
                            format!("`{t}` is not a tool name: names have no spaces"),
                        );
                    }
                }
            }
            servers.push(ProfileServer { id, tools });
        }
    }
    Some(Profile {
        id,
        description,
        servers,
    })
}

fn server(d: &mut Decoder, node: &Node, path: &str, schema: SchemaVersion) -> Option<Server> {
    let obj = d.object(node, path, SERVER_FIELDS)?;
    let id = d
        .required(&obj, "id")
        .and_then(|n| d.string(n, &join(path, "id")));
    if let Some(id) = &id
        && let Err(why) = check_id(id)
    {
        d.error(&join(path, "id"), why);
    }
    let text = |d: &mut Decoder, f: &str| obj.get(f).and_then(|n| d.string(n, &join(path, f)));
    let name = text(d, "name");
    let description = text(d, "description");
    let repository = text(d, "repository");
    let version = d
        .required(&obj, "version")
        .and_then(|n| semver_version(d, n, &join(path, "version")));
    let transport = obj
        .get("transport")
        .and_then(|n| d.choice(n, &join(path, "transport"), Transport::CHOICES))
        .unwrap_or(Transport::StreamableHttp);
    let mcp_path = match obj.get("mcp_path") {
        Some(n) => url_path(d, n, &join(path, "mcp_path")),
        None => None,
    }
    .unwrap_or_else(|| transport.default_path().to_owned());

    let docker = obj
        .get("docker")
        .and_then(|n| docker(d, n, &join(path, "docker"), schema));
    let process = obj
        .get("process")
        .and_then(|n| process(d, n, &join(path, "process")));
    if !obj.has("docker") && !obj.has("process") {
        d.error(
            path,
            "a server needs `docker` (an image to run) or `process` (a command to start), or both",
        );
    }
    let config_requirements = obj
        .get("config_requirements")
        .and_then(|n| requirements(d, n, &join(path, "config_requirements")))
        .unwrap_or_default();
    for (f, spec_env) in [
        ("docker", docker.as_ref().map(|s| &s.env)),
        ("process", process.as_ref().map(|s| &s.env)),
    ] {
        for r in config_requirements.iter().filter(|r| r.secret) {
            if spec_env.is_some_and(|env| env.contains_key(&r.name)) {
                d.error(
                    &join(path, &format!("{f}.env.{}", r.name)),
                    format!(
                        "`{}` is a secret: its value must come from the agent's environment or secrets file, not the manifest",
                        r.name
                    ),
                );
            }
        }
    }

    if schema == SchemaVersion::V1_0 {
        for f in V1_1_SERVER_FIELDS.iter().filter(|f| obj.has(f)) {
            d.error(
                &join(path, f),
                format!("`{f}` needs schema version \"1.1\"; set `version: \"1.1\"` at the top of the manifest"),
            );
        }
    } else if obj.has("version_strategy") {
        d.error(
            &join(path, "version_strategy"),
            "`version_strategy` on a server is schema 1.0; in 1.1 write `update_policy: { version_strategy: ... }` or name a policy",
        );
    }

    let health_check = obj
        .get("health_check")
        .and_then(|n| health_check(d, n, &join(path, "health_check")))
        .unwrap_or_default();
    let recovery = obj
        .get("recovery")
        .and_then(|n| recovery(d, n, &join(path, "recovery")))
        .unwrap_or_default();
    let restart_policy = obj
        .get("restart_policy")
        .and_then(|n| d.choice(n, &join(path, "restart_policy"), RestartPolicy::CHOICES))
        .unwrap_or(RestartPolicy::UnlessStopped);
    let update_policy = update_policy_ref(d, &obj, path, schema, version.as_ref());
    let depends_on = match obj.get("depends_on") {
        Some(_) if schema < SchemaVersion::V1_2 => {
            d.error(
                &join(path, "depends_on"),
                "`depends_on` needs schema version \"1.2\"; set `version: \"1.2\"` at the top of the manifest",
            );
            Vec::new()
        }
        Some(n) => d
            .string_list(n, &join(path, "depends_on"))
            .unwrap_or_default(),
        None => Vec::new(),
    };

    Some(Server {
        id: id.unwrap_or_default(),
        name,
        description,
        repository,
        version: version.unwrap_or_else(|| Version::new(0, 0, 0)),
        transport,
        mcp_path,
        docker,
        process,
        config_requirements,
        health_check,
        recovery,
        restart_policy,
        update_policy,
        depends_on,
    })
}

/// Server ids become container names and URL segments, hence the DNS-label shape.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid server id `{id}`: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or digit"
        ))
    }
}

fn semver_version(d: &mut Decoder, node: &Node, path: &str) -> Option<Version> {
    let text = d.string(node, path)?;
    let trimmed = text.strip_prefix('v').unwrap_or(&text);
    match Version::parse(trimmed) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(
                path,
                format!(
                    "`{text}` is not a semantic version (MAJOR.MINOR.PATCH, e.g. \"1.0.0\"): {e}"
                ),
            );
            None
        }
    }
}

fn url_path(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let text = d.string(node, path)?;
    if text.starts_with('/') && !text.contains(char::is_whitespace) {
        Some(text)
    } else {
        d.error(
            path,
            format!("`{text}` must be a URL path starting with `/`"),
        );
        None
    }
}

fn port(d: &mut Decoder, node: &Node, path: &str) -> Option<u16> {
    let p: u16 = d.integer(node, path, "a port number (1-65535)")?;
    if p == 0 {
        d.error(
            path,
            "port 0 is not a port; omit `host_port` to let the agent pick one",
        );
        return None;
    }
    Some(p)
}

fn env(d: &mut Decoder, node: &Node, path: &str) -> BTreeMap<String, String> {
    let env = d.string_map(node, path).unwrap_or_default();
    for name in env.keys() {
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            d.error(
                &join(path, name),
                format!("`{name}` is not a valid environment variable name (letters, digits, `_`)"),
            );
        }
    }
    env
}

fn docker(d: &mut Decoder, node: &Node, path: &str, version: SchemaVersion) -> Option<DockerSpec> {
    let obj = d.object(node, path, DOCKER_FIELDS)?;
    if version < SchemaVersion::V1_2 {
        for field in V1_2_DOCKER_FIELDS {
            if obj.get(field).is_some() {
                d.error(
                    &join(path, field),
                    format!("`{field}` needs schema version \"1.2\"; set `version: \"1.2\"` at the top of the manifest"),
                );
            }
        }
    }
    let replicas = match obj.get("replicas") {
        Some(n) => {
            let at = join(path, "replicas");
            match d.integer::<u32>(n, &at, "a number of replicas (1-64)") {
                Some(r) if (1..=MAX_REPLICAS).contains(&r) => r,
                Some(r) => {
                    d.error(&at, format!("{r} replicas: ask for 1 to {MAX_REPLICAS}"));
                    1
                }
                None => 1,
            }
        }
        None => 1,
    };
    let (constraints, max_per_node) = match obj.get("placement") {
        Some(n) => placement(d, n, &join(path, "placement")),
        None => (Vec::new(), None),
    };
    let image = d
        .required(&obj, "image")
        .and_then(|n| d.string(n, &join(path, "image")));
    if let Some(image) = &image
        && let Err(why) = check_image(image)
    {
        d.error(&join(path, "image"), why);
    }
    let container_port = d
        .required(&obj, "port")
        .and_then(|n| port(d, n, &join(path, "port")));
    let host_port = obj
        .get("host_port")
        .and_then(|n| port(d, n, &join(path, "host_port")));
    let env = obj
        .get("env")
        .map(|n| env(d, n, &join(path, "env")))
        .unwrap_or_default();
    let resources = match obj.get("resources") {
        Some(n) => resources(d, n, &join(path, "resources")),
        None => Resources::default(),
    };
    Some(DockerSpec {
        image: image.unwrap_or_default(),
        port: container_port.unwrap_or(8080),
        host_port,
        env,
        resources,
        replicas,
        constraints,
        max_per_node,
    })
}

/// `placement: { constraints: [...], max_replicas_per_node: N }`: Swarm's own constraint
/// expressions (`node.labels.zone==a`, `node.role!=manager`), checked for their shape here
/// so a typo is a located error rather than a service Swarm never places, and at most N of
/// the server's tasks on one node.
fn placement(d: &mut Decoder, node: &Node, path: &str) -> (Vec<String>, Option<u32>) {
    let Some(obj) = d.object(node, path, PLACEMENT_FIELDS) else {
        return (Vec::new(), None);
    };
    let max_per_node = obj.get("max_replicas_per_node").and_then(|n| {
        let at = join(path, "max_replicas_per_node");
        match d.integer::<u32>(n, &at, "a number of tasks (at least 1)") {
            Some(0) => {
                d.error(&at, "0 tasks per node places nothing; omit it for no limit");
                None
            }
            other => other,
        }
    });
    let at = join(path, "constraints");
    let list = obj
        .get("constraints")
        .and_then(|n| d.string_list(n, &at))
        .unwrap_or_default();
    for (i, c) in list.iter().enumerate() {
        if let Err(why) = check_placement(c) {
            d.error(&index(&at, i), why);
        }
    }
    (list, max_per_node)
}

/// A constraint is `ATTRIBUTE==VALUE` or `ATTRIBUTE!=VALUE` (Swarm's grammar).
pub fn check_placement(c: &str) -> Result<(), String> {
    let (attr, value) = c
        .split_once("==")
        .or_else(|| c.split_once("!="))
        .ok_or_else(|| {
            format!("`{c}` is not a placement constraint; write `ATTRIBUTE==VALUE` or `ATTRIBUTE!=VALUE`, e.g. `node.labels.zone==a`")
        })?;
    let attr = attr.trim();
    let known = [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
    ];
    let labelled = ["node.labels.", "engine.labels."]
        .iter()
        .any(|p| attr.strip_prefix(p).is_some_and(|l| !l.is_empty()));
    if !known.contains(&attr) && !labelled {
        return Err(format!(
            "`{attr}` is not an attribute Swarm places by; use one of {}, `node.labels.NAME` or `engine.labels.NAME`",
            known.map(|k| format!("`{k}`")).join(", ")
        ));
    }
    if value.trim().is_empty() {
        return Err(format!("`{c}` compares `{attr}` with nothing"));
    }
    Ok(())
}

/// The image names a repository; its tag is always the server's version, so a tag or digest
/// here would silently disagree with `version`.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty()
        || image.contains(char::is_whitespace)
        || image.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(format!(
            "`{image}` is not a valid image repository (lowercase, no spaces, e.g. ghcr.io/org/name)"
        ));
    }
    if image.contains('@') {
        return Err(format!(
            "`{image}` pins a digest; give the repository only, the agent resolves digests itself"
        ));
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    // A colon before the last `/` is a registry port (127.0.0.1:5000/x); after it, a tag.
    if image.contains('/') && last.contains(':') || !image.contains('/') && image.contains(':') {
        return Err(format!(
            "`{image}` carries a tag; give the repository only, the server's `version` is the tag"
        ));
    }
    Ok(())
}

fn resources(d: &mut Decoder, node: &Node, path: &str) -> Resources {
    let Some(obj) = d.object(node, path, RESOURCES_FIELDS) else {
        return Resources::default();
    };
    let memory_mb = obj
        .get("memory_mb")
        .and_then(|n| d.integer::<u64>(n, &join(path, "memory_mb"), "a whole number of MiB"))
        .filter(|m| {
            *m >= 4 || {
                d.error(
                    &join(path, "memory_mb"),
                    "memory_mb must be at least 4 (Docker's minimum)",
                );
                false
            }
        });
    let cpus = obj
        .get("cpus")
        .and_then(|n| d.number(n, &join(path, "cpus")))
        .filter(|c| {
            *c > 0.0 || {
                d.error(&join(path, "cpus"), "cpus must be greater than 0");
                false
            }
        });
    Resources { memory_mb, cpus }
}

fn process(d: &mut Decoder, node: &Node, path: &str) -> Option<ProcessSpec> {
    let obj = d.object(node, path, PROCESS_FIELDS)?;
    let command = d
        .required(&obj, "command")
        .and_then(|n| d.string(n, &join(path, "command")));
    if let Some(c) = &command
        && !c.starts_with('/')
    {
        d.error(
            &join(path, "command"),
            format!("`{c}` must be an absolute path, so the trust policy can tell where it lives"),
        );
    }
    let args = obj
        .get("args")
        .and_then(|n| d.string_list(n, &join(path, "args")))
        .unwrap_or_default();
    let env = obj
        .get("env")
        .map(|n| env(d, n, &join(path, "env")))
        .unwrap_or_default();
    let spec = ProcessSpec {
        command: command.unwrap_or_default(),
        args,
        env,
    };
    for (field, text) in std::iter::once(("command".to_owned(), &spec.command))
        .chain(
            spec.args
                .iter()
                .enumerate()
                .map(|(i, a)| (index("args", i), a)),
        )
        .chain(spec.env.iter().map(|(k, v)| (join("env", k), v)))
    {
        if let Some(bad) = unknown_placeholder(text) {
            d.error(
                &join(path, &field),
                format!(
                    "unknown placeholder `{{{bad}}}`; only {{version}} and {{port}} are substituted"
                ),
            );
        }
    }
    Some(spec)
}

fn unknown_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}')?;
        let name = &after[..end];
        if name != "version" && name != "port" {
            return Some(name);
        }
        rest = &after[end + 1..];
    }
    None
}

fn requirements(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<ConfigRequirement>> {
    let items = d.list(node, path)?;
    let mut out: Vec<ConfigRequirement> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(obj) = d.object(item, &p, REQUIREMENT_FIELDS) else {
            continue;
        };
        let Some(name) = d
            .required(&obj, "name")
            .and_then(|n| d.string(n, &join(&p, "name")))
        else {
            continue;
        };
        if out.iter().any(|r| r.name == name) {
            d.error(
                &join(&p, "name"),
                format!("config requirement `{name}` is listed twice"),
            );
        }
        let flag = |d: &mut Decoder, f: &str, default| {
            obj.get(f)
                .and_then(|n| d.bool(n, &join(&p, f)))
                .unwrap_or(default)
        };
        let required = flag(d, "required", true);
        let secret = flag(d, "secret", false);
        let description = obj
            .get("description")
            .and_then(|n| d.string(n, &join(&p, "description")));
        let value = obj
            .get("value")
            .and_then(|n| d.string(n, &join(&p, "value")));
        if secret && value.is_some() {
            d.error(
                &join(&p, "value"),
                format!("`{name}` is a secret: remove the value from the manifest and give it to the agent through its environment or secrets file"),
            );
        }
        out.push(ConfigRequirement {
            name,
            required,
            secret,
            description,
            value,
        });
    }
    Some(out)
}

fn positive_seconds(d: &mut Decoder, obj: &Object, field: &str, default: f64) -> Option<f64> {
    let Some(n) = obj.get(field) else {
        return Some(default);
    };
    let path = obj.field_path(field);
    let v = d.number(n, &path)?;
    if v <= 0.0 {
        d.error(
            &path,
            format!("{field} must be greater than 0 (fractions such as 0.2 are fine)"),
        );
        return None;
    }
    Some(v)
}

fn at_least_one(d: &mut Decoder, obj: &Object, field: &str, default: u32) -> Option<u32> {
    let Some(n) = obj.get(field) else {
        return Some(default);
    };
    let path = obj.field_path(field);
    let v: i64 = d.integer(n, &path, "a whole number")?;
    if v < 1 {
        d.error(&path, format!("{field} must be at least 1"));
        return None;
    }
    match u32::try_from(v) {
        Ok(v) => Some(v),
        Err(_) => {
            d.error(&path, format!("{field} is too large"));
            None
        }
    }
}

fn health_check(d: &mut Decoder, node: &Node, path: &str) -> Option<HealthCheck> {
    let obj = d.object(node, path, HEALTH_FIELDS)?;
    let defaults = HealthCheck::default();
    let probe = obj
        .get("probe")
        .and_then(|n| d.choice(n, &join(path, "probe"), ProbeKind::CHOICES))
        .unwrap_or(defaults.probe);
    let endpoint = obj
        .get("endpoint")
        .and_then(|n| url_path(d, n, &join(path, "endpoint")))
        .unwrap_or(defaults.endpoint);
    let interval = positive_seconds(d, &obj, "interval_seconds", defaults.interval_seconds);
    let timeout = positive_seconds(d, &obj, "timeout_seconds", defaults.timeout_seconds);
    if let (Some(i), Some(t)) = (interval, timeout)
        && t >= i
    {
        d.error(
            &join(path, "timeout_seconds"),
            format!("timeout_seconds ({t}) must be less than interval_seconds ({i}), or probes would overlap"),
        );
    }
    let failure_threshold = at_least_one(d, &obj, "failure_threshold", defaults.failure_threshold);
    let success_threshold = at_least_one(d, &obj, "success_threshold", defaults.success_threshold);
    Some(HealthCheck {
        probe,
        endpoint,
        interval_seconds: interval.unwrap_or(defaults.interval_seconds),
        timeout_seconds: timeout.unwrap_or(defaults.timeout_seconds),
        failure_threshold: failure_threshold.unwrap_or(defaults.failure_threshold),
        success_threshold: success_threshold.unwrap_or(defaults.success_threshold),
    })
}

fn recovery(d: &mut Decoder, node: &Node, path: &str) -> Option<Recovery> {
    let obj = d.object(node, path, RECOVERY_FIELDS)?;
    let defaults = Recovery::default();
    let max_attempts = match obj.get("max_attempts") {
        // Zero is meaningful: never try to recover, only report.
        Some(n) => d
            .integer::<u32>(n, &join(path, "max_attempts"), "a whole number")
            .unwrap_or(defaults.max_attempts),
        None => defaults.max_attempts,
    };
    let backoff_seconds = positive_seconds(d, &obj, "backoff_seconds", defaults.backoff_seconds);
    let multiplier = obj.get("backoff_multiplier").and_then(|n| {
        let p = join(path, "backoff_multiplier");
        let m = d.number(n, &p)?;
        if m < 1.0 {
            d.error(&p, "backoff_multiplier must be at least 1");
            return None;
        }
        Some(m)
    });
    Some(Recovery {
        max_attempts,
        backoff_seconds: backoff_seconds.unwrap_or(defaults.backoff_seconds),
        backoff_multiplier: multiplier.unwrap_or(defaults.backoff_multiplier),
    })
}

fn update_policy_ref(
    d: &mut Decoder,
    obj: &Object,
    path: &str,
    schema: SchemaVersion,
    version: Option<&Version>,
) -> UpdatePolicyRef {
    if schema == SchemaVersion::V1_0 {
        // Schema 1.0 put the strategy on the server itself; it maps onto an inline policy.
        let strategy = obj
            .get("version_strategy")
            .and_then(|n| d.choice(n, &join(path, "version_strategy"), VersionStrategy::CHOICES));
        return match strategy {
            None | Some(VersionStrategy::Pinned) => {
                UpdatePolicyRef::Named(DEFAULT_POLICY.to_owned())
            }
            Some(s) => UpdatePolicyRef::Inline(UpdatePolicy {
                auto_update: true,
                version_strategy: s,
                ..UpdatePolicy::pinned()
            }),
        };
    }
    let p = join(path, "update_policy");
    match obj.get("update_policy") {
        None => UpdatePolicyRef::Named(DEFAULT_POLICY.to_owned()),
        Some(n) if matches!(n.value, super::yaml::Value::Scalar { .. }) => {
            UpdatePolicyRef::Named(d.string(n, &p).unwrap_or_default())
        }
        Some(n) => match update_policy(d, n, &p, POLICY_FIELDS) {
            Some((policy, _)) => {
                check_constraint(d, &policy, version, &p);
                UpdatePolicyRef::Inline(policy)
            }
            None => UpdatePolicyRef::Inline(UpdatePolicy::pinned()),
        },
    }
}

/// Reports a semantic constraint that the server's own `version` does not satisfy: such a
/// server could never run the version its manifest names.
pub fn check_constraint(
    d: &mut Decoder,
    policy: &UpdatePolicy,
    version: Option<&Version>,
    path: &str,
) {
    if let (Some(req), Some(v)) = (&policy.constraint, version)
        && policy.version_strategy == VersionStrategy::Semantic
        && !req.matches(v)
    {
        d.error(
            &join(path, "constraint"),
            format!("the server's version {v} does not satisfy its own constraint `{req}`"),
        );
    }
}

/// Decodes an update policy mapping: inline in a manifest, or a file in `policies/` (which
/// passes a wider `allowed` list for its `name` and `description`). Returns the policy and
/// the mapping, so a caller can read its extra fields.
pub fn update_policy<'a>(
    d: &mut Decoder,
    node: &'a Node,
    path: &str,
    allowed: &[&str],
) -> Option<(UpdatePolicy, Object<'a>)> {
    let obj = d.object(node, path, allowed)?;
    let strategy = obj
        .get("version_strategy")
        .and_then(|n| d.choice(n, &join(path, "version_strategy"), VersionStrategy::CHOICES))
        .unwrap_or(VersionStrategy::Semantic);
    let flag = |d: &mut Decoder, f: &str, default: bool| {
        obj.get(f)
            .and_then(|n| d.bool(n, &join(path, f)))
            .unwrap_or(default)
    };
    let auto_update = flag(d, "auto_update", strategy != VersionStrategy::Pinned);
    let allow_prerelease = flag(d, "allow_prerelease", false);
    let rollback_on_failure = flag(d, "rollback_on_failure", true);
    let allow_breaking_tool_changes = flag(d, "allow_breaking_tool_changes", false);
    let constraint = obj.get("constraint").and_then(|n| {
        let p = join(path, "constraint");
        let text = d.string(n, &p)?;
        match VersionReq::parse(&text) {
            Ok(r) => Some(r),
            Err(e) => {
                d.error(
                    &p,
                    format!(
                        "`{text}` is not a semver requirement (e.g. \"^1.2\", \">=1.0, <2.0\"): {e}"
                    ),
                );
                None
            }
        }
    });
    let allow = obj
        .get("allow")
        .and_then(|n| d.choice(n, &join(path, "allow"), Allow::CHOICES));
    if obj.has("constraint") && obj.has("allow") {
        d.error(
            &join(path, "allow"),
            "give either `constraint` or `allow`, not both",
        );
    }
    if strategy != VersionStrategy::Semantic {
        for f in ["constraint", "allow"].into_iter().filter(|f| obj.has(f)) {
            d.error(
                &join(path, f),
                format!("`{f}` only applies to `version_strategy: semantic`"),
            );
        }
    }
    let notification_channel = obj.get("notification_channel").and_then(|n| {
        let p = join(path, "notification_channel");
        let url = d.string(n, &p)?;
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url)
        } else {
            d.error(
                &p,
                format!("`{url}` must be an http:// or https:// URL that accepts a JSON POST"),
            );
            None
        }
    });
    let progress_deadline_seconds =
        positive_seconds(d, &obj, "progress_deadline_seconds", 120.0).unwrap_or(120.0);
    Some((
        UpdatePolicy {
            auto_update,
            version_strategy: strategy,
            constraint,
            allow,
            allow_prerelease,
            rollback_on_failure,
            notification_channel,
            progress_deadline_seconds,
            allow_breaking_tool_changes,
        },
        obj,
    ))
}
