//! Running server instances: the `Runtime` trait and its two implementations, Docker
//! (bollard) and local child processes (tokio::process).
//!
//! A runtime starts, lists, stops and removes *instances* (one container or process each)
//! and labels them so a restarted agent can adopt what it started. It never decides what
//! should run; `reconcile` does.

pub mod docker;
pub mod process;

use std::collections::BTreeMap;
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
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
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
    /// Port on 127.0.0.1 where it serves, when known.
    pub host_port: Option<u16>,
    pub state: InstanceState,
    pub started_at: Option<Timestamp>,
    /// The image's content digest (`sha256:…`), when the runtime knows it (Docker, at start).
    pub image_digest: Option<String>,
}

impl Instance {
    pub fn is_running(&self) -> bool {
        self.state == InstanceState::Running
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> Option<String> {
        self.host_port.map(|p| format!("http://127.0.0.1:{p}"))
    }
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
}
