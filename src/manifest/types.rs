//! The manifest's schema as Rust values: what the rest of the agent works with once a
//! manifest has been decoded and checked. Defaults are applied here, so downstream code
//! never has to know which fields an operator left out.

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use serde::Serialize;

/// Schema versions this agent reads. 1.1 adds health checks, restart and update policies;
/// 1.2 adds profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SchemaVersion {
    #[serde(rename = "1.0")]
    V1_0,
    #[serde(rename = "1.1")]
    V1_1,
    #[serde(rename = "1.2")]
    V1_2,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    pub version: SchemaVersion,
    pub servers: Vec<Server>,
    /// Views of the fleet for clients (schema 1.2); `default`, the whole fleet, is implied.
    pub profiles: Vec<Profile>,
}

impl Manifest {
    pub fn server(&self, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }
}

/// The profile every manifest has: the whole fleet. A manifest cannot redefine it.
pub const DEFAULT_PROFILE: &str = "default";

/// A view of the fleet that a client sees through the gateway (its own path,
/// `/profiles/{id}/mcp`): some servers, and of each all tools or some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Profile {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub servers: Vec<ProfileServer>,
}

/// One server of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ProfileServer {
    pub id: String,
    /// The server's own tool names the profile shows; absent: all of them. Prompts and
    /// resources of the server are always shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

impl Profile {
    /// The whole fleet of `manifest`, as the implied `default` profile.
    pub fn whole_fleet(manifest: &Manifest) -> Profile {
        Profile {
            id: DEFAULT_PROFILE.to_owned(),
            description: Some("Every server of the fleet".to_owned()),
            servers: manifest
                .servers
                .iter()
                .map(|s| ProfileServer {
                    id: s.id.clone(),
                    tools: None,
                })
                .collect(),
        }
    }

    /// Whether the profile shows `server` at all.
    pub fn shows_server(&self, server: &str) -> bool {
        self.servers.iter().any(|s| s.id == server)
    }

    /// Whether the profile shows the tool `tool` (the server's own name) of `server`.
    pub fn shows_tool(&self, server: &str, tool: &str) -> bool {
        self.servers
            .iter()
            .find(|s| s.id == server)
            .is_some_and(|s| s.tools.as_ref().is_none_or(|t| t.iter().any(|t| t == tool)))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Server {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub repository: Option<String>,
    /// The version to run (pinned) or the floor the update policy starts from.
    pub version: Version,
    pub transport: Transport,
    pub mcp_path: String,
    pub docker: Option<DockerSpec>,
    pub process: Option<ProcessSpec>,
    pub config_requirements: Vec<ConfigRequirement>,
    pub health_check: HealthCheck,
    pub recovery: Recovery,
    pub restart_policy: RestartPolicy,
    pub update_policy: UpdatePolicyRef,
    /// Servers that must be healthy before this one is started or upgraded (schema 1.2);
    /// removals go the other way.
    pub depends_on: Vec<String>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    StreamableHttp,
    Sse,
}

impl Transport {
    pub const CHOICES: &[(&str, Transport)] = &[
        ("streamable-http", Transport::StreamableHttp),
        ("sse", Transport::Sse),
    ];

    /// The manifest's spelling: `streamable-http` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
        }
    }

    pub fn default_path(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "/mcp",
            Transport::Sse => "/sse",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DockerSpec {
    /// Repository without tag or digest: the tag is the server's version.
    pub image: String,
    /// The container port serving MCP and the health endpoint.
    pub port: u16,
    /// A fixed port on 127.0.0.1; `None` lets the agent pick a free one.
    pub host_port: Option<u16>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    /// Tasks to run (schema 1.2); more than one needs a runtime that schedules (Swarm).
    pub replicas: u32,
    /// Swarm placement constraints (schema 1.2), e.g. `node.labels.zone==a`.
    pub constraints: Vec<String>,
    /// At most this many of the server's tasks on one node (schema 1.2, Swarm).
    pub max_per_node: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessSpec {
    /// Absolute path; `{version}` and `{port}` are substituted before it is started.
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigRequirement {
    pub name: String,
    pub required: bool,
    /// Secret values come from the agent's environment or secrets file, never the manifest.
    pub secret: bool,
    pub description: Option<String>,
    /// An inline value, only for requirements that are not secret.
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET endpoint`, judged by the health standard.
    Http,
    /// The port accepts a TCP connection.
    Tcp,
    /// An MCP request (`ping`) succeeds.
    Mcp,
}

impl ProbeKind {
    pub const CHOICES: &[(&str, ProbeKind)] = &[
        ("http", ProbeKind::Http),
        ("tcp", ProbeKind::Tcp),
        ("mcp", ProbeKind::Mcp),
    ];
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    pub endpoint: String,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            probe: ProbeKind::Http,
            endpoint: "/health".to_owned(),
            interval_seconds: 30.0,
            timeout_seconds: 5.0,
            failure_threshold: 3,
            success_threshold: 2,
        }
    }
}

/// How an unhealthy server is brought back: attempt `n` (from 0) waits
/// `backoff_seconds * backoff_multiplier^n` first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recovery {
    pub max_attempts: u32,
    pub backoff_seconds: f64,
    pub backoff_multiplier: f64,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            max_attempts: 3,
            backoff_seconds: 30.0,
            backoff_multiplier: 2.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    UnlessStopped,
}

impl RestartPolicy {
    pub const CHOICES: &[(&str, RestartPolicy)] = &[
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("unless-stopped", RestartPolicy::UnlessStopped),
    ];
}

/// A server's update policy: a name from `policies/`, or the policy written inline.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UpdatePolicyRef {
    Named(String),
    Inline(UpdatePolicy),
}

/// The default when a manifest says nothing: run exactly the version it names.
pub const DEFAULT_POLICY: &str = "pinned";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStrategy {
    /// Run exactly `version`.
    Pinned,
    /// The highest stable semver tag in the registry.
    Latest,
    /// The highest tag matching the constraint.
    Semantic,
}

impl VersionStrategy {
    pub const CHOICES: &[(&str, VersionStrategy)] = &[
        ("pinned", VersionStrategy::Pinned),
        ("latest", VersionStrategy::Latest),
        ("semantic", VersionStrategy::Semantic),
    ];
}

/// Shorthand for a constraint relative to the server's `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Allow {
    /// `>=version, <major.minor+1.0`
    Patch,
    /// `>=version, <major+1.0.0` (also for 0.x: minor bumps are allowed, unlike `^0.x`)
    Minor,
    /// `>=version`
    Major,
}

impl Allow {
    pub const CHOICES: &[(&str, Allow)] = &[
        ("patch", Allow::Patch),
        ("minor", Allow::Minor),
        ("major", Allow::Major),
    ];

    pub fn requirement(self, v: &Version) -> VersionReq {
        let text = match self {
            Allow::Patch => format!(">={v}, <{}.{}.0", v.major, v.minor + 1),
            Allow::Minor => format!(">={v}, <{}.0.0", v.major + 1),
            Allow::Major => format!(">={v}"),
        };
        // Built from a valid version, so it always parses; `STAR` is only a safe fallback.
        VersionReq::parse(&text).unwrap_or(VersionReq::STAR)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpdatePolicy {
    pub auto_update: bool,
    pub version_strategy: VersionStrategy,
    pub constraint: Option<VersionReq>,
    pub allow: Option<Allow>,
    pub allow_prerelease: bool,
    pub rollback_on_failure: bool,
    pub notification_channel: Option<String>,
    pub progress_deadline_seconds: f64,
    /// Lets a version through the tool-set guard that removes a tool or refuses calls
    /// the running version accepted.
    pub allow_breaking_tool_changes: bool,
}

impl UpdatePolicy {
    pub fn pinned() -> Self {
        UpdatePolicy {
            auto_update: false,
            version_strategy: VersionStrategy::Pinned,
            constraint: None,
            allow: None,
            allow_prerelease: false,
            rollback_on_failure: true,
            notification_channel: None,
            progress_deadline_seconds: 120.0,
            allow_breaking_tool_changes: false,
        }
    }

    /// The semver requirement a semantic policy enforces for a server at `version`.
    pub fn effective_constraint(&self, version: &Version) -> Option<VersionReq> {
        match self.version_strategy {
            VersionStrategy::Semantic => Some(match (&self.constraint, self.allow) {
                (Some(c), _) => c.clone(),
                (None, Some(a)) => a.requirement(version),
                (None, None) => {
                    VersionReq::parse(&format!("^{version}")).unwrap_or(VersionReq::STAR)
                }
            }),
            VersionStrategy::Pinned | VersionStrategy::Latest => None,
        }
    }
}
