//! The Docker runtime: one container per instance, driven through the Engine API with
//! bollard.
//!
//! It owns the translation between an [`InstanceSpec`] and a container: pulling the image
//! when it is missing (with per-registry credentials), the container name, the
//! `io.mcp-orchestration.*` labels that let a restarted agent adopt what it started, the
//! port published on 127.0.0.1 only, resource limits and the restart policy. It also maps
//! Engine errors onto [`RuntimeError`]: an unreachable daemon is `Unavailable` (retryable),
//! everything else keeps the daemon's own message.
//!
//! It never makes policy decisions (what to run, when to retry, whether to roll back) and
//! never touches a container without the `io.mcp-orchestration.managed=true` label: `list`
//! filters on it, and `stop` and `remove` refuse containers that lack it. It negotiates
//! the API version down to what the engine speaks and uses nothing newer than API 1.41
//! (Docker 20.10), so old engines keep working.
//!
//! Crashes reach subscribers ([`Runtime::subscribe`]) through the daemon's events API: a
//! task follows `die` and `oom` events of this runtime's containers (`follow_events`) and
//! turns them into [`RuntimeEvent`]s, so a `docker kill` is seen as soon as the daemon
//! reports it rather than at the next probe. The task starts with the first `subscribe`,
//! not in `connect`, because the owner it filters on is set afterwards by
//! [`DockerRuntime::with_owner`]; it ends when the last clone of the runtime is dropped.
//! An OOM kill produces both events, `OomKilled` and then `Exited { code: Some(137) }`.

use crate::error_text::chain;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, EventMessage, EventMessageTypeEnum, HostConfig, PortBinding,
    PortSummaryTypeEnum, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;
use jiff::Timestamp;
use semver::Version;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span, debug, info, info_span, instrument, warn};

use super::{
    Instance, InstanceSpec, InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind,
    RuntimeKind, labels,
};
use crate::manifest::RestartPolicy;
use crate::registry::{normalize_registry, registry_host};

/// Registry credentials live with the registry client, which uses them too; re-exported
/// here because pulling is where the Docker runtime needs them.
pub use crate::registry::RegistryAuth;

/// The name used in [`RuntimeError::Unavailable`].
const RUNTIME: &str = "docker";
/// Where bollard connects when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long `connect` waits for the daemon to answer before calling it unavailable. The
/// client's own request timeout (two minutes) is far too long for a health check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// bollard's request timeout, which covers every call including `stop`; stops with a
/// longer grace get a client with a longer timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Grace given to a container that `remove` finds still running.
const REMOVE_GRACE: Duration = Duration::from_secs(5);
/// Docker's sentinel for "never started".
const ZERO_TIME_PREFIX: &str = "0001-01-01";
/// Capacity of the event broadcast; a subscriber that lags further loses the oldest events
/// (and is told so by `RecvError::Lagged`); `list` still shows the state.
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// First wait before following the events again after the stream failed or ended; it
/// doubles up to [`EVENTS_BACKOFF_MAX`] while the daemon stays away.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(250);
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An events stream that stayed open this long counts as working: the backoff resets and a
/// recovery after failures is logged.
const EVENTS_SETTLED_AFTER: Duration = Duration::from_secs(1);
/// The event attribute holding a dead container's exit code.
const EXIT_CODE_ATTRIBUTE: &str = "exitCode";

/// Runs instances as Docker containers. Cheap to clone: the client is a shared handle, and
/// clones share one event broadcast.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    /// The endpoint we connected to (`DOCKER_HOST` or the default socket), for messages.
    host: String,
    auths: Vec<RegistryAuth>,
    /// The `io.mcp-orchestration.owner` label value of this agent's containers.
    owner: String,
    /// Where [`Runtime::subscribe`] gets its receivers. Behind an `Arc` so every clone
    /// feeds the same subscribers and the follower task lives as long as the last clone.
    events: Arc<EventHub>,
}

/// The broadcast of one runtime's container events and the task that feeds it.
///
/// The task starts lazily, at the first [`Runtime::subscribe`]: by then the builder calls
/// ([`DockerRuntime::with_owner`]) are done, so it filters on the right owner, and a
/// runtime nobody subscribes to (the CLI, tests) holds no events connection. It ends when
/// the hub is dropped: `Drop` cancels its token. The task holds neither the hub nor the
/// runtime, only a client handle, the sender and the token, so it cannot keep them alive.
#[derive(Debug)]
struct EventHub {
    tx: broadcast::Sender<RuntimeEvent>,
    /// Set by the `subscribe` that starts the task, so it starts once.
    started: AtomicBool,
    cancel: CancellationToken,
    /// The tokio runtime `connect` ran on, for a `subscribe` called outside one.
    handle: Option<tokio::runtime::Handle>,
}

impl EventHub {
    fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Self {
            tx,
            started: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            handle: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

impl Drop for EventHub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The owner of containers started without [`DockerRuntime::with_owner`].
pub const DEFAULT_OWNER: &str = "default";

impl DockerRuntime {
    /// Connects to the daemon named by `DOCKER_HOST` (default: the local socket),
    /// negotiates the API version down to what the engine speaks and checks that it
    /// answers. An unreachable daemon is [`RuntimeError::Unavailable`] naming the socket.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect_to(host).await
    }

    /// [`DockerRuntime::connect`] to an explicit endpoint (`unix://`, `tcp://`, `https://`).
    pub async fn connect_to(host: String) -> Result<Self, RuntimeError> {
        let unavailable = |message: String| RuntimeError::Unavailable {
            runtime: RUNTIME,
            message: format!("cannot reach the Docker daemon at {host}: {message}"),
        };
        // What `connect_with_defaults` does with DOCKER_HOST: `connect_with_local_defaults`
        // (a unix socket) plus the `tcp://` and `https://` forms the local variant ignores.
        let docker = Docker::connect_with_host(&host).map_err(|e| unavailable(chain(&e)))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(chain(&e)))?;
        let version = tokio::time::timeout(CONNECT_TIMEOUT, docker.version())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(chain(&e)))?;
        let api = docker.client_version();
        info!(
            docker_host = %host,
            engine = version.version.as_deref().unwrap_or("unknown"),
            api = %format!("{}.{}", api.major_version, api.minor_version),
            "connected to Docker"
        );
        Ok(Self {
            docker,
            host,
            auths: Vec::new(),
            owner: DEFAULT_OWNER.to_string(),
            events: Arc::new(EventHub::new()),
        })
    }

    /// Credentials to use when pulling from the given registry hosts.
    pub fn with_registry_auth(mut self, auths: Vec<RegistryAuth>) -> Self {
        self.auths = auths;
        self
    }

    /// Scopes this runtime to containers labelled with `owner`: it lists, stops and removes
    /// only those, labels what it starts with it, and reports events of only those.
    ///
    /// A builder step, meant to follow `connect` directly: the runtime gets an event hub of
    /// its own, so receivers from an earlier [`Runtime::subscribe`] (of the old owner) are
    /// not fed by it.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        let owner = owner.into();
        if owner != self.owner {
            self.owner = owner;
            self.events = Arc::new(EventHub::new());
        }
        self
    }

    /// The Engine API client, for the Swarm runtime, which talks to the same daemon.
    pub(super) fn client(&self) -> &Docker {
        &self.docker
    }

    /// The endpoint connected to (`DOCKER_HOST` or the default socket), for messages.
    pub(super) fn endpoint(&self) -> &str {
        &self.host
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    fn owns(&self, container_labels: &HashMap<String, String>) -> bool {
        owned_by(container_labels, &self.owner)
    }

    /// Starts the task following the daemon's events, unless it runs already.
    fn start_following_events(&self) {
        let hub = &self.events;
        if hub.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(handle) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| hub.handle.clone())
        else {
            hub.started.store(false, Ordering::Release);
            warn!("no tokio runtime to follow Docker events on; crashes are seen by probes only");
            return;
        };
        let span = info_span!("docker_events", docker_host = %self.host, owner = %self.owner);
        handle.spawn(
            follow_events(
                self.docker.clone(),
                self.owner.clone(),
                hub.tx.clone(),
                hub.cancel.clone(),
            )
            .instrument(span),
        );
    }

    fn unavailable(&self, err: &BollardError) -> RuntimeError {
        engine_unreachable(RUNTIME, "the Docker daemon", &self.host, err)
    }

    /// The error for a call on an existing container.
    fn operation_error(&self, action: &'static str, id: &str, err: &BollardError) -> RuntimeError {
        engine_call_error(err, action, id, || self.unavailable(err))
    }

    fn start_error(&self, spec: &InstanceSpec, err: &BollardError) -> RuntimeError {
        engine_start_error(err, spec, || self.unavailable(err))
    }

    fn pull_error(&self, image: &str, err: &BollardError) -> RuntimeError {
        if is_connection_error(err) {
            self.unavailable(err)
        } else {
            RuntimeError::Pull {
                image: image.to_string(),
                message: daemon_message(err),
            }
        }
    }

    /// Credentials for the registry `image` comes from, when configured.
    pub(super) fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let host = registry_host(image);
        self.auths
            .iter()
            .find(|a| normalize_registry(&a.registry) == host)
            .map(|a| DockerCredentials {
                username: Some(a.username.clone()),
                password: Some(a.password.clone()),
                serveraddress: Some(host.clone()),
                ..Default::default()
            })
    }

    /// Pulls `image` unless it is already present; returns its digest when known.
    async fn ensure_image(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(found) => return Ok(image_digest(image, &found)),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(self.pull_error(image, &e)),
        }
        let (repository, tag) = split_image(image);
        let credentials = self.credentials_for(image);
        debug!(
            image,
            registry = %registry_host(image),
            authenticated = credentials.is_some(),
            "pulling image"
        );
        let options = CreateImageOptionsBuilder::new()
            .from_image(repository)
            .tag(tag)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                return Err(self.pull_error(image, &e));
            }
        }
        debug!(image, "pulled image");
        Ok(self
            .docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|found| image_digest(image, &found)))
    }

    /// Inspects `id`, refusing containers without our managed label; `None` when it does
    /// not exist.
    async fn inspect_owned(
        &self,
        action: &'static str,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(container) => {
                let managed = container
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .is_some_and(|l| self.owns(l));
                if managed {
                    // The caller's span names the container; now it can name the server.
                    if let Some(l) = container.config.as_ref().and_then(|c| c.labels.as_ref()) {
                        let span = Span::current();
                        span.record("server", l.get(labels::SERVER).map(String::as_str));
                        span.record("version", l.get(labels::VERSION).map(String::as_str));
                    }
                    Ok(Some(container))
                } else {
                    Err(RuntimeError::Operation {
                        action,
                        id: id.to_string(),
                        message: format!(
                            "the container has no {}=true label or another agent's {} label; it is not ours to touch",
                            labels::MANAGED,
                            labels::OWNER
                        ),
                    })
                }
            }
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.operation_error(action, id, &e)),
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), BollardError> {
        let seconds = grace_seconds(grace);
        // The request lasts as long as the grace period; the client must wait longer.
        let docker = self.docker.clone().with_timeout(
            REQUEST_TIMEOUT.max(Duration::from_secs(u64::from(seconds.unsigned_abs()) + 30)),
        );
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        // bollard treats 304 (already stopped) as success.
        docker.stop_container(id, Some(options)).await
    }

    /// Removes a container we just created and could not start, so a failed start leaves
    /// nothing behind. Best effort: the start error is what the caller needs to see.
    async fn discard(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => debug!(container = id, "removed the container of a failed start"),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => warn!(
                container = id,
                error = %chain(&e),
                "cannot remove the container of a failed start"
            ),
        }
    }

    /// Reads back what `start` created: state, start time and the assigned host port.
    async fn started_instance(
        &self,
        spec: &InstanceSpec,
        id: &str,
        container_port: u16,
    ) -> Result<Instance, RuntimeError> {
        let container = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.start_error(spec, &e))?;
        let state = container
            .state
            .as_ref()
            .map(|s| state_from_inspect(s.status, s.exit_code))
            .unwrap_or(InstanceState::Other {
                detail: "unknown".to_string(),
            });
        let host_port = inspect_host_port(&container, container_port);
        if state == InstanceState::Running && host_port.is_none() {
            return Err(start_failure(
                spec,
                format!(
                    "container {id} runs but Docker reports no host port for {container_port}/tcp on 127.0.0.1"
                ),
            ));
        }
        Ok(Instance {
            id: id.to_string(),
            server_id: spec.server_id.clone(),
            version: spec.version.clone(),
            revision: spec.revision.clone(),
            spec_hash: spec.spec_hash.clone(),
            host_port,
            host: None,
            tasks: Vec::new(),
            state,
            started_at: container
                .state
                .as_ref()
                .and_then(|s| parse_time(s.started_at.as_deref())),
            image_digest: None,
        })
    }

    /// One listed container as an instance; `Ok(None)` to skip it.
    async fn listed_instance(
        &self,
        container: ContainerSummary,
    ) -> Result<Option<Instance>, RuntimeError> {
        let id = container.id.clone().unwrap_or_default();
        let empty = HashMap::new();
        let container_labels = container.labels.as_ref().unwrap_or(&empty);
        // The daemon filtered on the label already; checking again costs nothing and keeps
        // the guarantee local.
        if id.is_empty() || !self.owns(container_labels) {
            return Ok(None);
        }
        let owned = match owned_labels(container_labels) {
            Ok(owned) => owned,
            Err(problem) => {
                warn!(container = %id, problem = %problem, "skipping a managed container with malformed labels");
                return Ok(None);
            }
        };
        let host_port = summary_host_port(&container);
        let (state, started_at) = match container.state {
            Some(ContainerSummaryStateEnum::RUNNING) => (InstanceState::Running, None),
            Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD) => {
                // The list has no exit code; one inspect per stopped container does.
                match self.docker.inspect_container(&id, None).await {
                    Ok(inspected) => {
                        let state = inspected.state.as_ref();
                        (
                            InstanceState::Exited {
                                code: state.and_then(|s| s.exit_code),
                            },
                            state.and_then(|s| parse_time(s.started_at.as_deref())),
                        )
                    }
                    // Removed between the list and the inspect.
                    Err(e) if status_code(&e) == Some(404) => return Ok(None),
                    Err(e) if is_connection_error(&e) => return Err(self.unavailable(&e)),
                    Err(e) => {
                        warn!(container = %id, error = %chain(&e), "cannot read the exit code");
                        (InstanceState::Exited { code: None }, None)
                    }
                }
            }
            other => (
                InstanceState::Other {
                    detail: other.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                },
                None,
            ),
        };
        Ok(Some(Instance {
            id,
            server_id: owned.server_id,
            version: owned.version,
            revision: owned.revision,
            spec_hash: owned.spec_hash,
            host_port,
            host: None,
            tasks: Vec::new(),
            state,
            started_at,
            image_digest: None,
        }))
    }
}

/// The content digest of a pulled image: its `RepoDigests` entry for the image's own
/// repository (what a registry would serve), else the first one.
fn image_digest(image: &str, inspected: &bollard::models::ImageInspect) -> Option<String> {
    let (repository, _) = split_image(image);
    let digests = inspected.repo_digests.as_ref()?;
    digests
        .iter()
        .find(|d| {
            d.split_once('@')
                .is_some_and(|(repo, _)| repo == repository)
        })
        .or(digests.first())
        .and_then(|d| d.split_once('@').map(|(_, digest)| digest.to_owned()))
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    #[instrument(name = "docker_list", skip_all)]
    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        // Only `default`-owned containers may lack the owner label, so the daemon can filter
        // on it for every other owner.
        let mut wanted = vec![format!("{}=true", labels::MANAGED)];
        if self.owner != DEFAULT_OWNER {
            wanted.push(format!("{}={}", labels::OWNER, self.owner));
        }
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| {
                if is_connection_error(&e) {
                    self.unavailable(&e)
                } else {
                    RuntimeError::Operation {
                        action: "list",
                        id: "containers".to_string(),
                        message: daemon_message(&e),
                    }
                }
            })?;
        let mut instances = Vec::with_capacity(containers.len());
        for container in containers {
            if let Some(instance) = self.listed_instance(container).await? {
                instances.push(instance);
            }
        }
        debug!(count = instances.len(), "listed managed containers");
        Ok(instances)
    }

    #[instrument(
        name = "docker_start",
        skip(self, spec),
        fields(server = %spec.server_id, version = %spec.version, container = Empty)
    )]
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        let Some(docker_spec) = &spec.docker else {
            return Err(start_failure(
                spec,
                "the server has no `docker` section, so the Docker runtime cannot start it"
                    .to_string(),
            ));
        };
        let image = docker_spec.image.as_str();
        let digest = self.ensure_image(image).await?;

        let port_key = format!("{}/tcp", docker_spec.container_port);
        let binding = PortBinding {
            host_ip: Some("127.0.0.1".to_string()),
            // Empty: Docker picks a free port.
            host_port: Some(spec.host_port.map(|p| p.to_string()).unwrap_or_default()),
        };
        let name = container_name(&spec.server_id, &spec.version);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::OWNER.to_string(), self.owner.clone()),
                (labels::SERVER.to_string(), spec.server_id.clone()),
                (labels::VERSION.to_string(), spec.version.to_string()),
                (labels::REVISION.to_string(), spec.revision.clone()),
                (labels::SPEC.to_string(), spec.spec_hash.clone()),
            ])),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(port_key, Some(vec![binding]))])),
                memory: docker_spec
                    .resources
                    .memory_mb
                    .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
                nano_cpus: docker_spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
                restart_policy: Some(DockerRestartPolicy {
                    name: Some(restart_policy_name(spec.restart_policy)),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.start_error(spec, &e))?;
        let id = created.id;
        Span::current().record("container", id.as_str());
        debug!(container = %id, name = %name, image, "created container");

        if let Err(e) = self.docker.start_container(&id, None).await {
            let err = self.start_error(spec, &e);
            self.discard(&id).await;
            return Err(err);
        }
        match self
            .started_instance(spec, &id, docker_spec.container_port)
            .await
        {
            Ok(mut instance) => {
                instance.image_digest = digest;
                debug!(container = %id, host_port = ?instance.host_port, state = ?instance.state, "started container");
                Ok(instance)
            }
            Err(err) => {
                self.discard(&id).await;
                Err(err)
            }
        }
    }

    #[instrument(
        name = "docker_stop",
        skip_all,
        fields(container = %id, grace = ?grace, server = Empty, version = Empty)
    )]
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        if self.inspect_owned("stop", id).await?.is_none() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        self.stop_container(id, grace)
            .await
            .map_err(|e| self.operation_error("stop", id, &e))?;
        debug!("stopped container");
        Ok(())
    }

    #[instrument(
        name = "docker_remove",
        skip_all,
        fields(container = %id, server = Empty, version = Empty)
    )]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(container) = self.inspect_owned("remove", id).await? else {
            debug!("container already gone");
            return Ok(());
        };
        let still_up = container.state.as_ref().is_some_and(|s| {
            s.running == Some(true)
                || matches!(
                    s.status,
                    Some(ContainerStateStatusEnum::RESTARTING | ContainerStateStatusEnum::PAUSED)
                )
        });
        if still_up {
            debug!("container still running; stopping it before removal");
            match self.stop_container(id, REMOVE_GRACE).await {
                Ok(()) => {}
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(self.operation_error("remove", id, &e)),
            }
        }
        let options = RemoveContainerOptionsBuilder::new()
            .force(false)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {
                debug!("removed container");
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.operation_error("remove", id, &e)),
        }
    }

    #[instrument(name = "docker_logs", skip_all, fields(container = %id, lines))]
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let stream = self.docker.logs(id, Some(tail_options(lines)));
        read_logs(stream, |e| self.operation_error("logs", id, e)).await
    }

    /// The receiver is subscribed before the follower task starts, so it misses nothing the
    /// task forwards. The first stream asks the daemon to replay from the moment of the
    /// first `subscribe` (by this host's clock), which covers the instant between this call
    /// and the daemon accepting the request.
    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        let receiver = self.events.tx.subscribe();
        self.start_following_events();
        receiver
    }
}

/// Follows the daemon's `die` and `oom` events of `owner`'s managed containers and forwards
/// them as [`RuntimeEvent`]s until `cancel` fires.
///
/// The daemon filters on type, action and labels (the owner label too, except for
/// `default`, whose containers may lack it); [`runtime_event`] checks ownership again, so
/// the guarantee stays local. When the stream fails or ends (a daemon restart, a dropped
/// socket) it reconnects after 250 ms, doubling up to 5 s while the daemon stays away, and
/// asks to replay from just after the last event it saw, so an exit during a short outage
/// is still reported (the daemon keeps recent events in memory; a restarted daemon has
/// none, and the monitor's next `list` covers that). It never panics and logs the first
/// failure of a streak as a warning, the recovery as info.
async fn follow_events(
    docker: Docker,
    owner: String,
    tx: broadcast::Sender<RuntimeEvent>,
    cancel: CancellationToken,
) {
    let filters = event_filters(&owner);
    // By this host's clock until the first event; by the daemon's after it.
    let mut since = unix_nanos_now();
    let mut delay = EVENTS_BACKOFF_MIN;
    let mut failures: u32 = 0;
    debug!("following Docker events");
    loop {
        let options = EventsOptionsBuilder::new()
            .since(&since_parameter(since))
            .filters(&filters)
            .build();
        let mut stream = docker.events(Some(options));
        let settled = tokio::time::sleep(EVENTS_SETTLED_AFTER);
        tokio::pin!(settled);
        let mut is_settled = false;
        let ended = loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    debug!("stopped following Docker events");
                    return;
                }
                () = &mut settled, if !is_settled => {
                    is_settled = true;
                    if failures > 0 {
                        info!(failures, "following Docker events again");
                    }
                    failures = 0;
                    delay = EVENTS_BACKOFF_MIN;
                }
                item = stream.next() => match item {
                    Some(Ok(message)) => {
                        if let Some(nanos) = message.time_nano {
                            since = nanos.saturating_add(1);
                        }
                        if let Some(event) = runtime_event(&message, &owner) {
                            debug!(
                                container = %event.instance_id,
                                server = %event.server_id,
                                kind = ?event.kind,
                                "container event"
                            );
                            // Without subscribers there is nobody to tell; not an error.
                            let _ = tx.send(event);
                        }
                    }
                    Some(Err(err)) => break Some(err),
                    None => break None,
                },
            }
        };
        failures = failures.saturating_add(1);
        let reason = ended
            .as_ref()
            .map_or_else(|| "the daemon closed the stream".to_string(), |e| chain(e));
        if failures == 1 {
            warn!(error = %reason, retry_in = ?delay, "lost the Docker events stream; reconnecting");
        } else {
            debug!(error = %reason, failures, retry_in = ?delay, "Docker events still unavailable");
        }
        if matches!(
            ended,
            Some(BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. })
        ) {
            // An event we cannot decode would be replayed forever; skip past it.
            since = since.max(unix_nanos_now());
        }
        tokio::select! {
            () = cancel.cancelled() => {
                debug!("stopped following Docker events");
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(EVENTS_BACKOFF_MAX);
    }
}

/// The daemon-side filter for [`follow_events`].
fn event_filters(owner: &str) -> HashMap<&'static str, Vec<String>> {
    let mut wanted_labels = vec![format!("{}=true", labels::MANAGED)];
    if owner != DEFAULT_OWNER {
        wanted_labels.push(format!("{}={owner}", labels::OWNER));
    }
    HashMap::from([
        ("type", vec!["container".to_string()]),
        ("event", vec!["die".to_string(), "oom".to_string()]),
        ("label", wanted_labels),
    ])
}

/// One daemon event as a [`RuntimeEvent`], or `None` when it is not about a container
/// `owner` owns or not an exit or OOM kill. A container event's attributes are its labels
/// plus a few of Docker's own (`name`, `image`, and `exitCode` for `die`).
fn runtime_event(message: &EventMessage, owner: &str) -> Option<RuntimeEvent> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let id = actor.id.as_deref().filter(|id| !id.is_empty())?;
    let attributes = actor.attributes.as_ref()?;
    if !owned_by(attributes, owner) {
        return None;
    }
    let server_id = attributes.get(labels::SERVER).filter(|s| !s.is_empty())?;
    let kind = match message.action.as_deref()? {
        "die" => RuntimeEventKind::Exited {
            code: attributes
                .get(EXIT_CODE_ATTRIBUTE)
                .and_then(|code| code.parse().ok()),
        },
        "oom" => RuntimeEventKind::OomKilled,
        _ => return None,
    };
    let at = message
        .time_nano
        .and_then(|nanos| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .or_else(|| message.time.and_then(|s| Timestamp::from_second(s).ok()))
        .unwrap_or_else(Timestamp::now);
    Some(RuntimeEvent {
        instance_id: id.to_string(),
        server_id: server_id.clone(),
        kind,
        at,
    })
}

/// Docker's `since` parameter: `seconds.nanoseconds` since the epoch.
fn since_parameter(unix_nanos: i64) -> String {
    format!(
        "{}.{:09}",
        unix_nanos.div_euclid(1_000_000_000),
        unix_nanos.rem_euclid(1_000_000_000)
    )
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What our labels say about a container.
pub(super) struct OwnedLabels {
    pub(super) server_id: String,
    pub(super) version: Version,
    pub(super) revision: String,
    pub(super) spec_hash: String,
}

pub(super) fn is_managed(container_labels: &HashMap<String, String>) -> bool {
    container_labels.get(labels::MANAGED).map(String::as_str) == Some("true")
}

/// Managed, and `owner`'s: containers without an owner label belong to `default`.
pub(super) fn owned_by(container_labels: &HashMap<String, String>, owner: &str) -> bool {
    is_managed(container_labels)
        && container_labels
            .get(labels::OWNER)
            .map_or(DEFAULT_OWNER, String::as_str)
            == owner
}

pub(super) fn owned_labels(
    container_labels: &HashMap<String, String>,
) -> Result<OwnedLabels, String> {
    let get = |key: &str| {
        container_labels
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("label {key} is missing or empty"))
    };
    let version = get(labels::VERSION)?;
    let version = Version::parse(&version).map_err(|e| {
        format!(
            "label {} = {version:?} is not a version: {e}",
            labels::VERSION
        )
    })?;
    Ok(OwnedLabels {
        server_id: get(labels::SERVER)?,
        version,
        revision: get(labels::REVISION)?,
        spec_hash: get(labels::SPEC)?,
    })
}

fn state_from_inspect(
    status: Option<ContainerStateStatusEnum>,
    exit_code: Option<i64>,
) -> InstanceState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => InstanceState::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            InstanceState::Exited { code: exit_code }
        }
        Some(other) => InstanceState::Other {
            detail: other.to_string(),
        },
        None => InstanceState::Other {
            detail: "unknown".to_string(),
        },
    }
}

/// The port published on 127.0.0.1 for `container_port`, from an inspect.
fn inspect_host_port(container: &ContainerInspectResponse, container_port: u16) -> Option<u16> {
    let key = format!("{container_port}/tcp");
    container
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&key)?
        .as_ref()?
        .iter()
        .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// The port published on 127.0.0.1, from a list entry. We publish exactly one port per
/// container and the container port is not among our labels, so the one TCP port bound on
/// 127.0.0.1 is it. Stopped containers have none.
fn summary_host_port(container: &ContainerSummary) -> Option<u16> {
    container
        .ports
        .as_ref()?
        .iter()
        .filter(|p| p.ip.as_deref() == Some("127.0.0.1"))
        .filter(|p| matches!(p.typ, None | Some(PortSummaryTypeEnum::TCP)))
        .find_map(|p| p.public_port)
}

pub(super) fn parse_time(value: Option<&str>) -> Option<Timestamp> {
    let value = value?;
    if value.is_empty() || value.starts_with(ZERO_TIME_PREFIX) {
        return None;
    }
    value.parse().ok()
}

fn restart_policy_name(policy: RestartPolicy) -> RestartPolicyNameEnum {
    match policy {
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    }
}

/// An engine (`what`, at `host`) that cannot be reached: retryable.
pub(super) fn engine_unreachable(
    runtime: &'static str,
    what: &str,
    host: &str,
    err: &BollardError,
) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime,
        message: format!("cannot reach {what} at {host}: {}", chain(err)),
    }
}

/// The error for a call on an existing object (container, service): the engine away
/// (`unavailable`), 404, or the daemon's message.
pub(super) fn engine_call_error(
    err: &BollardError,
    action: &'static str,
    id: &str,
    unavailable: impl FnOnce() -> RuntimeError,
) -> RuntimeError {
    if is_connection_error(err) {
        unavailable()
    } else if status_code(err) == Some(404) {
        RuntimeError::NotFound(id.to_owned())
    } else {
        RuntimeError::Operation {
            action,
            id: id.to_owned(),
            message: daemon_message(err),
        }
    }
}

/// The error for a start: the engine away (`unavailable`), or the daemon's message.
pub(super) fn engine_start_error(
    err: &BollardError,
    spec: &InstanceSpec,
    unavailable: impl FnOnce() -> RuntimeError,
) -> RuntimeError {
    if is_connection_error(err) {
        unavailable()
    } else {
        start_failure(spec, daemon_message(err))
    }
}

/// The last `lines` lines of stdout and stderr, without following.
pub(super) fn tail_options(lines: usize) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(false)
        .tail(&lines.to_string())
        .build()
}

/// A log stream (a container's or a service's) read to its end as text.
pub(super) async fn read_logs(
    stream: impl futures::Stream<Item = Result<bollard::container::LogOutput, BollardError>>,
    error: impl Fn(&BollardError) -> RuntimeError,
) -> Result<String, RuntimeError> {
    let mut stream = std::pin::pin!(stream);
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error(&e))?;
        text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
    }
    Ok(text)
}

/// Docker's stop timeout is whole seconds; round up so the grace is never shortened, and
/// keep at least one second so the server sees SIGTERM before SIGKILL.
fn grace_seconds(grace: Duration) -> i32 {
    let seconds = grace.as_secs_f64().ceil().max(1.0);
    if seconds >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        seconds as i32
    }
}

pub(super) fn start_failure(spec: &InstanceSpec, message: String) -> RuntimeError {
    RuntimeError::Start {
        server: spec.server_id.clone(),
        version: spec.version.clone(),
        message,
    }
}

/// `mcp-{server}-{version}-{8 hex}`: readable in `docker ps`, unique across restarts and
/// across two instances of one version (a recreate starts the new one beside the old).
pub(super) fn container_name(server_id: &str, version: &Version) -> String {
    let version = version.to_string().replace(['.', '+'], "-");
    format!("mcp-{server_id}-{version}-{}", random_suffix())
}

/// Eight hex digits from the clock, the pid and a counter, mixed so consecutive calls
/// differ in every digit. Uniqueness, not secrecy, is the point.
fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x =
        nanos ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(std::process::id()) << 40);
    // The splitmix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("{:08x}", x as u32)
}

/// `repo:tag` split for the pull API; a reference without a tag means `latest`.
fn split_image(image: &str) -> (&str, &str) {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    }
}

pub(super) fn status_code(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Failures to talk to the daemon at all, as opposed to the daemon saying no.
pub(super) fn is_connection_error(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::UnsupportedURISchemeError { .. }
    )
}

/// The daemon's own words when it answered, the error chain otherwise.
pub(super) fn daemon_message(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        BollardError::DockerStreamError { error } => error.trim().to_string(),
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_image("127.0.0.1:5000/x/y:1.0.0"),
            ("127.0.0.1:5000/x/y", "1.0.0")
        );
        assert_eq!(
            split_image("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000/x/y", "latest")
        );
        assert_eq!(split_image("server:1.2.3-rc.1"), ("server", "1.2.3-rc.1"));
    }

    #[test]
    fn container_names_are_docker_safe_and_distinct() {
        let version = Version::parse("1.2.3-rc.1+build.5").expect("version");
        let a = container_name("web", &version);
        let b = container_name("web", &version);
        assert!(a.starts_with("mcp-web-1-2-3-rc-1-build-5-"), "{a}");
        assert_eq!(a.len(), "mcp-web-1-2-3-rc-1-build-5-".len() + 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 1);
        assert_eq!(grace_seconds(Duration::from_millis(200)), 1);
        assert_eq!(grace_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(grace_seconds(Duration::from_secs(10)), 10);
    }

    #[test]
    fn malformed_labels_are_reported() {
        let mut l = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SERVER.to_string(), "web".to_string()),
            (labels::VERSION.to_string(), "one".to_string()),
            (labels::REVISION.to_string(), "abc".to_string()),
            (labels::SPEC.to_string(), "h".to_string()),
        ]);
        assert!(owned_labels(&l).is_err());
        l.insert(labels::VERSION.to_string(), "1.0.0".to_string());
        let owned = owned_labels(&l).expect("valid labels");
        assert_eq!(owned.version, Version::new(1, 0, 0));
        l.remove(labels::REVISION);
        assert!(owned_labels(&l).is_err());
    }

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(bollard::models::EventActor {
                id: Some("c0ffee".to_string()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                ),
            }),
            scope: None,
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn die_and_oom_events_of_owned_containers_become_runtime_events() {
        let ours = [
            (labels::MANAGED, "true"),
            (labels::SERVER, "web"),
            (EXIT_CODE_ATTRIBUTE, "137"),
            ("name", "mcp-web-1-0-0-0badf00d"),
        ];
        let died = runtime_event(&event("die", &ours), DEFAULT_OWNER).expect("ours");
        assert_eq!(died.instance_id, "c0ffee");
        assert_eq!(died.server_id, "web");
        assert_eq!(died.kind, RuntimeEventKind::Exited { code: Some(137) });
        assert_eq!(
            died.at,
            Timestamp::from_nanosecond(1_700_000_000_123_456_789).expect("timestamp")
        );
        assert_eq!(
            runtime_event(&event("oom", &ours), DEFAULT_OWNER).map(|e| e.kind),
            Some(RuntimeEventKind::OomKilled)
        );
        let no_code = [(labels::MANAGED, "true"), (labels::SERVER, "web")];
        assert_eq!(
            runtime_event(&event("die", &no_code), DEFAULT_OWNER).map(|e| e.kind),
            Some(RuntimeEventKind::Exited { code: None })
        );
        assert_eq!(runtime_event(&event("start", &ours), DEFAULT_OWNER), None);
    }

    #[test]
    fn events_of_containers_we_do_not_own_are_ignored() {
        let unlabelled = [(EXIT_CODE_ATTRIBUTE, "0"), ("name", "someone-else")];
        assert_eq!(
            runtime_event(&event("die", &unlabelled), DEFAULT_OWNER),
            None
        );
        let other_agent = [
            (labels::MANAGED, "true"),
            (labels::SERVER, "web"),
            (labels::OWNER, "blue"),
        ];
        assert_eq!(
            runtime_event(&event("die", &other_agent), DEFAULT_OWNER),
            None
        );
        assert!(runtime_event(&event("die", &other_agent), "blue").is_some());
        assert_eq!(runtime_event(&event("die", &other_agent), "green"), None);
        // Ours, but without a server label: nothing to attribute it to.
        assert_eq!(
            runtime_event(&event("die", &[(labels::MANAGED, "true")]), DEFAULT_OWNER),
            None
        );
        let mut image_event = event("die", &other_agent);
        image_event.typ = Some(EventMessageTypeEnum::IMAGE);
        assert_eq!(runtime_event(&image_event, "blue"), None);
    }

    #[test]
    fn event_filters_name_the_owner_unless_default() {
        let default = event_filters(DEFAULT_OWNER);
        assert_eq!(default["type"], ["container"]);
        assert_eq!(default["event"], ["die", "oom"]);
        assert_eq!(default["label"], [format!("{}=true", labels::MANAGED)]);
        let blue = event_filters("blue");
        assert_eq!(
            blue["label"],
            [
                format!("{}=true", labels::MANAGED),
                format!("{}=blue", labels::OWNER)
            ]
        );
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            since_parameter(1_700_000_000_000_000_001),
            "1700000000.000000001"
        );
        assert_eq!(since_parameter(5_250_000_000), "5.250000000");
    }

    /// Accepts one connection on `listener`, reads its request head and answers with a
    /// chunked events stream carrying `lines`, ended when `close` is true. Returns the
    /// request line and the connection, which stays open while the caller holds it.
    async fn serve_events(
        listener: &tokio::net::UnixListener,
        lines: &[String],
        close: bool,
    ) -> (String, tokio::net::UnixStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.expect("request head");
            head.push(byte[0]);
        }
        let mut response = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for line in lines {
            let line = format!("{line}\n");
            response.push_str(&format!("{:x}\r\n{line}\r\n", line.len()));
        }
        if close {
            response.push_str("0\r\n\r\n");
        }
        socket
            .write_all(response.as_bytes())
            .await
            .expect("response");
        let request_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        (request_line, socket)
    }

    fn die_line(id: &str, time_nano: i64) -> String {
        serde_json::json!({
            "Type": "container",
            "Action": "die",
            "Actor": {
                "ID": id,
                "Attributes": {
                    labels::MANAGED: "true",
                    labels::SERVER: "web",
                    EXIT_CODE_ATTRIBUTE: "1",
                }
            },
            "scope": "local",
            "time": time_nano / 1_000_000_000,
            "timeNano": time_nano,
        })
        .to_string()
    }

    #[tokio::test]
    async fn the_follower_reconnects_from_the_last_event_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let docker =
            Docker::connect_with_host(&format!("unix://{}", path.display())).expect("client");
        let (tx, mut rx) = broadcast::channel(8);
        let cancel = CancellationToken::new();
        let follower = tokio::spawn(follow_events(
            docker,
            DEFAULT_OWNER.to_string(),
            tx,
            cancel.clone(),
        ));
        let first_time = 1_700_000_000_000_000_000;

        // The first stream delivers one event, then the "daemon" goes away.
        let (first, closed) = serve_events(&listener, &[die_line("one", first_time)], true).await;
        drop(closed);
        assert!(first.starts_with("GET "), "{first}");
        assert!(first.contains("/events?"), "{first}");
        assert!(first.contains("since="), "{first}");
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("an event");
        assert_eq!(event.instance_id, "one");
        assert_eq!(event.kind, RuntimeEventKind::Exited { code: Some(1) });

        // The follower comes back on its own and asks for what it has not seen yet.
        let (second, _open) = tokio::time::timeout(
            Duration::from_secs(5),
            serve_events(&listener, &[die_line("two", first_time + 5)], false),
        )
        .await
        .expect("reconnected in time");
        assert!(
            second.contains(&format!("since={}", since_parameter(first_time + 1))),
            "{second}"
        );
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("an event");
        assert_eq!(event.instance_id, "two");

        // Cancelled while the stream is open and idle.
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower ends when cancelled")
            .expect("and does not panic");
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }

    #[tokio::test]
    async fn dropping_the_last_clone_ends_the_follower() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let host = format!("unix://{}", path.display());
        let runtime = DockerRuntime {
            docker: Docker::connect_with_host(&host).expect("client"),
            host,
            auths: Vec::new(),
            owner: DEFAULT_OWNER.to_string(),
            events: Arc::new(EventHub::new()),
        }
        .with_owner("blue");
        let clone = runtime.clone();
        let mut events = runtime.subscribe();
        let (request, _open) =
            tokio::time::timeout(Duration::from_secs(5), serve_events(&listener, &[], false))
                .await
                .expect("the first subscribe starts following");
        // The owner set after `connect` is the one filtered on (the filters are URL-encoded
        // JSON).
        assert!(request.contains("blue"), "{request}");
        let _second = clone.subscribe();

        drop(runtime);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), events.recv())
                .await
                .is_err(),
            "a clone still holds the runtime"
        );
        drop(clone);
        let closed = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the follower ends");
        assert!(
            matches!(closed, Err(broadcast::error::RecvError::Closed)),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_and_named() {
        let err = DockerRuntime::connect_to("unix:///nonexistent/docker.sock".to_string())
            .await
            .expect_err("no daemon there");
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/docker.sock"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("docker.sock");
        // Bound, then closed: the file stays and connecting to it is refused.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let err = DockerRuntime::connect_to(format!("unix://{}", path.display()))
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(
                err,
                RuntimeError::Unavailable {
                    runtime: "docker",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
