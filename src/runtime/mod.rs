//! Running server instances: the `Runtime` trait and its three implementations, Docker
//! (bollard), Docker Swarm services (bollard, against a manager) and local child processes
//! (tokio::process).
//!
//! A runtime starts, lists, stops and removes *instances* (one container or process each)
//! and labels them so a restarted agent can adopt what it started. It never decides what
//! should run; `reconcile` does.

pub mod docker;
pub mod process;
pub mod swarm;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use semver::Version;
use serde::Serialize;

use crate::manifest::{ProcessSpec, Resources, RestartPolicy};

/// Label keys that mark what the agent owns. Containers without `managed=true` are never
/// touched.
pub mod labels {
    pub const MANAGED: &str = "io.mcp-orchestration.managed";
    pub const SERVER: &str = "io.mcp-orchestration.server";
    pub const VERSION: &str = "io.mcp-orchestration.version";
    pub const REVISION: &str = "io.mcp-orchestration.revision";
    /// Fingerprint of the spec an instance was started from; a change means "update".
    pub const SPEC: &str = "io.mcp-orchestration.spec";
    /// Which agent owns a container, so two agents sharing a Docker host never touch each
    /// other's fleets. Containers without it belong to the owner `default`.
    pub const OWNER: &str = "io.mcp-orchestration.owner";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Docker,
    Process,
    /// Docker Swarm services: a server's tasks run on the swarm's nodes.
    Swarm,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
            RuntimeKind::Swarm => "swarm",
        }
    }

    /// Whether it places several replicas of a server and honours placement constraints.
    pub fn schedules(self) -> bool {
        self == RuntimeKind::Swarm
    }

    /// This runtime as the manifest checks see it.
    pub fn target(self) -> crate::manifest::TargetRuntime {
        crate::manifest::TargetRuntime {
            name: self.as_str(),
            schedules: self.schedules(),
        }
    }
}

/// Everything a runtime needs to start one instance of a server at one version.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSpec {
    pub server_id: String,
    pub version: Version,
    /// The commit this instance was deployed for.
    pub revision: String,
    /// See [`labels::SPEC`].
    pub spec_hash: String,
    /// Fixed port on 127.0.0.1, or `None` for one picked at start.
    pub host_port: Option<u16>,
    /// Environment: the manifest's env plus satisfied config requirements.
    pub env: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    pub docker: Option<DockerInstance>,
    /// `{version}` and `{port}` are still unsubstituted here; the process runtime fills them.
    pub process: Option<ProcessSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DockerInstance {
    /// `repository:tag`
    pub image: String,
    pub container_port: u16,
    pub resources: Resources,
    /// Tasks to run; more than one only where the runtime schedules (Swarm).
    pub replicas: u32,
    /// Swarm placement constraints.
    pub constraints: Vec<String>,
    /// At most this many tasks on one node (Swarm).
    pub max_per_node: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum InstanceState {
    Running,
    /// Exited (or was killed); `code` when the runtime knows it.
    Exited {
        code: Option<i64>,
    },
    /// Created or paused or restarting: present, but not serving.
    Other {
        detail: String,
    },
}

/// One running (or dead) container or process the agent started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instance {
    /// Container id, or `p<pid>-<starttime>` for processes (the start time guards
    /// against a reused pid).
    pub id: String,
    pub server_id: String,
    pub version: Version,
    pub revision: String,
    pub spec_hash: String,
    /// Port where it serves, when known: on 127.0.0.1, or on [`Instance::host`].
    pub host_port: Option<u16>,
    /// The address serving on `host_port` when it is not this host's loopback: a swarm
    /// node's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    /// The orchestrator's tasks behind this instance (Swarm); empty where the instance is
    /// one container or process.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
    pub state: InstanceState,
    pub started_at: Option<Timestamp>,
    /// The image's content digest (`sha256:…`), when the runtime knows it (Docker, at start).
    pub image_digest: Option<String>,
}

impl Instance {
    pub fn is_running(&self) -> bool {
        self.state == InstanceState::Running
    }

    /// Where it serves: `host_port` on [`Instance::host`], or on 127.0.0.1.
    pub fn addr(&self) -> Option<SocketAddr> {
        let host = self.host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        self.host_port.map(|p| SocketAddr::new(host, p))
    }

    /// `http://ADDR:PORT`
    pub fn base_url(&self) -> Option<String> {
        self.addr().map(|a| format!("http://{a}"))
    }

    /// The orchestrator is bringing one of its tasks up (Swarm replacing a crashed task
    /// or one from a lost node): nothing serves now, but the instance is not to be
    /// replaced by the agent.
    pub fn being_replaced(&self) -> bool {
        matches!(self.state, InstanceState::Other { .. }) && self.tasks.iter().any(Task::on_its_way)
    }

    /// Where its tasks serve (running, port published), Swarm's only; empty elsewhere.
    pub fn serving(&self) -> Vec<SocketAddr> {
        self.tasks.iter().filter_map(Task::serving_at).collect()
    }

    /// The same instance, serving at `preferred` when that is one of its serving tasks:
    /// where the agent already routes stays put while it serves (a failover's target, a
    /// task older replacements must not take over from).
    pub fn preferring(&self, preferred: Option<SocketAddr>) -> Instance {
        let mut i = self.clone();
        if let Some(p) = preferred.filter(|p| self.serving().contains(p)) {
            i.host = Some(p.ip());
            i.host_port = Some(p.port());
        }
        i
    }

    /// The other serving tasks' addresses, for a failover.
    pub fn alternates(&self) -> Vec<SocketAddr> {
        let here = self.addr();
        self.serving()
            .into_iter()
            .filter(|a| Some(*a) != here)
            .collect()
    }
}

impl Task {
    /// Where it serves: its endpoint while Swarm says it runs.
    pub fn serving_at(&self) -> Option<SocketAddr> {
        self.endpoint.filter(|_| self.state == "running")
    }

    /// Swarm wants it running and is getting it there: scheduled or starting, not yet
    /// serving, and not a task no node can take.
    pub fn on_its_way(&self) -> bool {
        self.desired_state == "running"
            && matches!(
                self.state.as_str(),
                "new"
                    | "allocated"
                    | "pending"
                    | "assigned"
                    | "accepted"
                    | "preparing"
                    | "ready"
                    | "starting"
            )
            && !self.message.as_deref().is_some_and(no_node_for_it)
    }
}

/// Swarm's words for a task no node can take. A host port still held by a stopping task
/// of ours is not that: it frees once the old task is gone.
pub fn no_node_for_it(message: &str) -> bool {
    message.contains("no suitable node") && !message.contains("port already in use")
}

/// `ADDR:PORT` out of an endpoint URL (`http://10.0.0.3:30001/mcp`).
pub fn endpoint_addr(endpoint: &str) -> Option<SocketAddr> {
    let rest = endpoint.split_once("://")?.1;
    rest.split('/').next()?.parse().ok()
}

/// One task of a Swarm service: where the orchestrator placed a replica, and whether it
/// runs there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Task {
    pub id: String,
    /// The swarm node's id.
    pub node: String,
    /// The node's address and the port the task publishes there (host mode), once known.
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<SocketAddr>,
    /// Swarm's state of the task: `running`, `starting`, `failed`, `orphaned`, ...
    pub state: String,
    /// Swarm's desired state: `running`, or `shutdown` for a task it is replacing.
    pub desired_state: String,
    /// Swarm's message or error for the task's last state change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime itself cannot be reached (Docker daemon down, socket missing). Retryable.
    #[error("{runtime} is unavailable: {message}")]
    Unavailable {
        runtime: &'static str,
        message: String,
    },
    /// The image could not be pulled (missing tag, registry refused). Permanent for this spec.
    #[error("cannot pull image {image}: {message}")]
    Pull { image: String, message: String },
    /// The instance could not be created or started (bad command, port in use, ...).
    #[error("cannot start {server} {version}: {message}")]
    Start {
        server: String,
        version: Version,
        message: String,
    },
    #[error("no instance {0}")]
    NotFound(String),
    #[error("{action} {id} failed: {message}")]
    Operation {
        action: &'static str,
        id: String,
        message: String,
    },
}

/// Something the runtime saw happen to an instance, pushed to subscribers at once, so a
/// crash is acted on without waiting for the next probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeEvent {
    pub instance_id: String,
    pub server_id: String,
    pub kind: RuntimeEventKind,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuntimeEventKind {
    /// The instance exited or was killed; `code` when known (128+N for signal N).
    Exited { code: Option<i64> },
    /// The kernel killed it for exceeding its memory limit.
    OomKilled,
    /// The orchestrator moved or replaced some of its tasks (Swarm); it still serves, but
    /// perhaps somewhere else.
    Rescheduled { detail: String },
}

impl RuntimeError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}

/// A place where instances run. Two real implementations: [`docker::DockerRuntime`] and
/// [`process::ProcessRuntime`].
#[async_trait]
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// Instances the agent owns (labelled as managed), running or not.
    async fn list(&self) -> Result<Vec<Instance>, RuntimeError>;

    /// Creates and starts an instance (pulling its image when absent) and returns it with
    /// its host port known.
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError>;

    /// Stops an instance: SIGTERM, then SIGKILL after `grace`. Stopping a stopped one is ok.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes an instance and what it leaves behind (container, pid file), stopping it
    /// first with a short grace if it still runs. Removing an unknown instance is ok.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// The last `lines` lines of its output, for rollback reasons and `status`.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError>;

    /// Events about this runtime's instances (exits, OOM kills) as they happen. Instances
    /// stopped through [`Runtime::stop`] or [`Runtime::remove`] also produce an exit event;
    /// subscribers tell those apart themselves.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent>;

    /// Whether the runtime is itself bringing instance `id` back (Swarm starting a
    /// replacement task), and how: recovery waits for it rather than starting another.
    async fn replacing(&self, _id: &str) -> Option<String> {
        None
    }

    /// How long this runtime may take to notice a failure and replace the instance on its
    /// own (Swarm: a dead node), when it does that at all. Recovery gives it that long
    /// before it acts.
    fn heals_itself(&self) -> Option<Duration> {
        None
    }
}
