//! The Swarm runtime: each server version is a Docker Swarm service whose tasks run on the
//! swarm's nodes, driven through a manager's Engine API with bollard.
//!
//! An instance is one service (one server version). `start` creates it beside the
//! previous version's service and returns once its tasks run and publish their port, so
//! the executor's health gate probes the new tasks while the old ones keep serving, and
//! the old service is removed only after the switch: the same rollout as on Docker. Swarm's
//! own rolling update is not used because it moves traffic on its own schedule, before our
//! gate (probes and the tool-set guard) has judged the new version.
//!
//! Swarm restarts and reschedules tasks itself (a crashed container, a node that died).
//! The runtime does not fight that: it follows the tasks (`watch`) and reports a task that
//! stopped or began serving, so the agent re-reads where the server now serves, and
//! [`Runtime::replacing`] tells recovery to wait while Swarm brings a task back.
//!
//! Like the Docker runtime it touches only services with our managed and owner labels, and
//! uses nothing newer than Engine API 1.41.

mod spec;
mod tasks;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::Service;
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use jiff::Timestamp;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::docker::{
    DockerRuntime, container_name, daemon_message, engine_call_error, engine_start_error,
    engine_unreachable, is_connection_error, owned_by, read_logs, start_failure, status_code,
    tail_options,
};
use super::{
    Instance, InstanceSpec, InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeKind, labels,
};
use crate::error_text::chain;

pub use spec::TASK_SERVER;

const RUNTIME: &str = "swarm";
/// How long `start` waits for the new service's tasks to run. Nodes may have to pull the
/// image first.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long `start` lets Swarm try to place a task it has no suitable node for.
const PLACEMENT_GRACE: Duration = Duration::from_secs(5);
/// How often `start` and the task watch read the tasks (API 1.41 has no task events).
const TASK_POLL: Duration = Duration::from_millis(250);
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Swarm's default dispatcher heartbeat, when the swarm's own cannot be read.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// What a replacement task takes to run once placed, with a local image.
const TASK_START: Duration = Duration::from_secs(5);

/// Runs instances as Swarm services. Cheap to clone; clones share the task watch.
#[derive(Clone, Debug)]
pub struct SwarmRuntime {
    docker: Docker,
    /// The manager's endpoint, for messages.
    host: String,
    owner: String,
    engine: DockerRuntime,
    events: Arc<Hub>,
    /// How long Swarm takes to declare a silent node down and start its tasks elsewhere.
    heals_within: Duration,
}

#[derive(Debug)]
struct Hub {
    tx: broadcast::Sender<RuntimeEvent>,
    started: std::sync::atomic::AtomicBool,
    cancel: CancellationToken,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Hub {
    fn new() -> Hub {
        Hub {
            tx: broadcast::channel(EVENT_CHANNEL_CAPACITY).0,
            started: std::sync::atomic::AtomicBool::new(false),
            cancel: CancellationToken::new(),
        }
    }
}

impl SwarmRuntime {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local socket) and checks
    /// that it is a swarm manager: only a manager creates services and sees every node.
    pub async fn connect() -> Result<SwarmRuntime, RuntimeError> {
        SwarmRuntime::on(DockerRuntime::connect().await?).await
    }

    /// [`SwarmRuntime::connect`] to an explicit manager (`unix://`, `tcp://`, `https://`).
    pub async fn connect_to(host: String) -> Result<SwarmRuntime, RuntimeError> {
        SwarmRuntime::on(DockerRuntime::connect_to(host).await?).await
    }

    async fn on(engine: DockerRuntime) -> Result<SwarmRuntime, RuntimeError> {
        let docker = engine.client().clone();
        let host = engine.endpoint().to_owned();
        let info = docker.info().await.map_err(|e| RuntimeError::Unavailable {
            runtime: RUNTIME,
            message: format!(
                "cannot ask the engine at {host} about its swarm: {}",
                chain(&e)
            ),
        })?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            return Err(RuntimeError::Unavailable {
                runtime: RUNTIME,
                message: format!(
                    "the engine at {host} is not a swarm manager (its swarm state: {state}); run `docker swarm init` there, or point DOCKER_HOST at a manager"
                ),
            });
        }
        // The dispatcher declares a node down after a few missed heartbeats (swarmkit's
        // grace is three periods, plus jitter); then the task restarts after our delay.
        let heartbeat = docker
            .inspect_swarm()
            .await
            .ok()
            .and_then(|s| s.spec?.dispatcher?.heartbeat_period)
            .and_then(|ns| u64::try_from(ns).ok())
            .map_or(DEFAULT_HEARTBEAT, Duration::from_nanos);
        let heals_within = heartbeat * 4 + spec::RESTART_DELAY + TASK_START;
        info!(
            docker_host = %host,
            heartbeat = ?heartbeat,
            nodes = swarm.nodes.unwrap_or_default(),
            managers = swarm.managers.unwrap_or_default(),
            "connected to a swarm manager"
        );
        Ok(SwarmRuntime {
            docker,
            host,
            owner: engine.owner().to_owned(),
            engine,
            events: Arc::new(Hub::new()),
            heals_within,
        })
    }

    /// Credentials for pulling from private registries; nodes get them with the service.
    pub fn with_registry_auth(mut self, auths: Vec<super::docker::RegistryAuth>) -> Self {
        self.engine = self.engine.with_registry_auth(auths);
        self
    }

    /// Scopes this runtime to services labelled with `owner` (see the Docker runtime's).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        let owner = owner.into();
        if owner != self.owner {
            self.owner = owner;
            self.events = Arc::new(Hub::new());
        }
        self
    }

    fn unavailable(&self, err: &BollardError) -> RuntimeError {
        engine_unreachable(RUNTIME, "the swarm manager", &self.host, err)
    }

    fn operation_error(&self, action: &'static str, id: &str, err: &BollardError) -> RuntimeError {
        engine_call_error(err, action, id, || self.unavailable(err))
    }

    /// Our services, their tasks and the nodes, read in three calls.
    async fn read(&self) -> Result<Vec<(Service, Result<Instance, String>)>, BollardError> {
        let filters = HashMap::from([("label", vec![format!("{}=true", labels::MANAGED)])]);
        let services = self
            .docker
            .list_services(Some(
                ListServicesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await?;
        let services: Vec<Service> = services
            .into_iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .is_some_and(|l| owned_by(l, &self.owner))
            })
            .collect();
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let task_filters = HashMap::from([("service", ids)]);
        // The engine answers 404 for the whole call when one of the services went away
        // since the listing (a rollout retired it): then every task, filtered here.
        let all_tasks = match self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::new()
                    .filters(&task_filters)
                    .build(),
            ))
            .await
        {
            Err(e) if status_code(&e) == Some(404) => self.docker.list_tasks(None).await?,
            other => other?,
        };
        let nodes = self.docker.list_nodes(None::<ListNodesOptions>).await?;
        let nodes = tasks::node_addresses(&nodes);
        Ok(services
            .into_iter()
            .map(|s| {
                let i = tasks::instance(&s, &all_tasks, &nodes);
                (s, i)
            })
            .collect())
    }

    /// Our service `id` read as an instance; `None` when it does not exist.
    async fn instance(
        &self,
        action: &'static str,
        id: &str,
    ) -> Result<Option<Instance>, RuntimeError> {
        let read = self
            .read()
            .await
            .map_err(|e| self.operation_error(action, id, &e))?;
        match read
            .into_iter()
            .find(|(s, _)| s.id.as_deref() == Some(id) || spec_name(s) == Some(id))
        {
            Some((_, Ok(i))) => Ok(Some(i)),
            Some((_, Err(why))) => Err(RuntimeError::Operation {
                action,
                id: id.to_owned(),
                message: why,
            }),
            None => Ok(None),
        }
    }

    /// Waits until the service runs `replicas` serving tasks. A task Swarm reports failed
    /// or rejected ends the wait with its error: Swarm would only restart it in a loop.
    async fn wait_started(
        &self,
        spec: &InstanceSpec,
        id: &str,
        replicas: u32,
    ) -> Result<Instance, RuntimeError> {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut last = String::from("no task scheduled");
        let mut unplaceable_since: Option<tokio::time::Instant> = None;
        loop {
            let tasks = self
                .docker
                .list_tasks(Some(
                    ListTasksOptionsBuilder::new()
                        .filters(&HashMap::from([("service", vec![id.to_owned()])]))
                        .build(),
                ))
                .await
                .map_err(|e| self.start_error(spec, &e))?;
            if let Some(failed) = tasks.iter().find_map(|t| {
                let s = t.status.as_ref()?;
                matches!(
                    s.state,
                    Some(bollard::models::TaskState::FAILED | bollard::models::TaskState::REJECTED)
                )
                .then(|| {
                    format!(
                        "task {} {}: {}",
                        t.id.as_deref().unwrap_or("?"),
                        s.state.map(|s| s.to_string()).unwrap_or_default(),
                        s.err
                            .as_deref()
                            .or(s.message.as_deref())
                            .unwrap_or("no reason given")
                    )
                })
            }) {
                return Err(start_failure(spec, failed));
            }
            // Swarm retries a placement forever; a start gives it a few seconds (a node
            // may just be joining), then says why rather than waiting out the deadline.
            match (tasks::unplaceable(&tasks), unplaceable_since) {
                (Some(why), Some(since)) if since.elapsed() >= PLACEMENT_GRACE => {
                    return Err(start_failure(
                        spec,
                        format!(
                            "Swarm cannot place its tasks: {why}; check `placement.constraints` against the nodes' labels (`docker node ls`, `docker node inspect`)"
                        ),
                    ));
                }
                (Some(_), None) => unplaceable_since = Some(tokio::time::Instant::now()),
                (Some(_), Some(_)) => {}
                (None, _) => unplaceable_since = None,
            }
            if let Some(instance) = self.instance("start", id).await? {
                let serving = instance
                    .tasks
                    .iter()
                    .filter(|t| t.serving_at().is_some())
                    .count();
                if serving >= replicas as usize {
                    return Ok(instance);
                }
                if let InstanceState::Other { detail } = &instance.state {
                    last = detail.clone();
                } else {
                    last = format!("{serving} of {replicas} tasks serve");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(start_failure(
                    spec,
                    format!("its tasks did not run within {START_DEADLINE:?}: {last}"),
                ));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    fn start_error(&self, spec: &InstanceSpec, err: &BollardError) -> RuntimeError {
        engine_start_error(err, spec, || self.unavailable(err))
    }

    /// Removes a service that failed to start, so a failed start leaves nothing behind.
    async fn discard(&self, id: &str) {
        match self.docker.delete_service(id).await {
            Ok(()) => debug!(service = id, "removed the service of a failed start"),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => {
                warn!(service = id, error = %chain(&e), "cannot remove the service of a failed start")
            }
        }
    }

    fn start_watching(&self) {
        use std::sync::atomic::Ordering;
        if self.events.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.events.started.store(false, Ordering::Release);
            warn!("no tokio runtime to follow Swarm tasks on; moves are seen by probes only");
            return;
        };
        let span = info_span!("swarm_tasks", docker_host = %self.host, owner = %self.owner);
        // The watch holds a clone without the hub, so it cannot keep the hub alive.
        let runtime = SwarmRuntime {
            events: Arc::new(Hub::new()),
            ..self.clone()
        };
        handle.spawn(
            follow_tasks(runtime, self.events.tx.clone(), self.events.cancel.clone())
                .instrument(span),
        );
    }
}

fn spec_name(s: &Service) -> Option<&str> {
    s.spec.as_ref()?.name.as_deref()
}

/// Reads the tasks every [`TASK_POLL`] and sends what changed until `cancel` fires. A
/// manager that does not answer is retried; the first failure of a streak is logged.
async fn follow_tasks(
    runtime: SwarmRuntime,
    tx: broadcast::Sender<RuntimeEvent>,
    cancel: CancellationToken,
) {
    let mut before: Option<HashMap<String, watch::Seen>> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TASK_POLL) => {}
        }
        match runtime.list().await {
            Ok(instances) => {
                if failing {
                    info!("following Swarm tasks again");
                    failing = false;
                }
                let now = watch::seen(&instances, before.as_ref());
                if let Some(before) = &before {
                    for event in watch::changes(before, &now, Timestamp::now()) {
                        debug!(?event, "swarm task change");
                        let _ = tx.send(event);
                    }
                }
                before = Some(now);
            }
            Err(e) => {
                if !failing {
                    warn!(error = %chain(&e), "cannot read Swarm tasks; retrying");
                    failing = true;
                }
            }
        }
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Swarm
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let read = self.read().await.map_err(|e| {
            if is_connection_error(&e) {
                self.unavailable(&e)
            } else {
                RuntimeError::Operation {
                    action: "list",
                    id: "services".into(),
                    message: daemon_message(&e),
                }
            }
        })?;
        Ok(read
            .into_iter()
            .filter_map(|(s, i)| match i {
                Ok(i) => Some(i),
                Err(why) => {
                    warn!(service = s.id.as_deref().unwrap_or("?"), %why, "skipping a service with broken labels");
                    None
                }
            })
            .collect())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        let Some(docker) = &spec.docker else {
            return Err(start_failure(
                spec,
                "the server has no `docker` section, so the Swarm runtime cannot start it".into(),
            ));
        };
        let name = spec::service_name(&container_name(&spec.server_id, &spec.version));
        let service = spec::service_spec(spec, docker, &name, &self.owner);
        let created = self
            .docker
            .create_service(service, self.engine.credentials_for(&docker.image))
            .await
            .map_err(|e| self.start_error(spec, &e))?;
        let id = created.id.unwrap_or(name);
        debug!(service = %id, image = %docker.image, replicas = docker.replicas, "created service");
        match self.wait_started(spec, &id, docker.replicas.max(1)).await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                self.discard(&id).await;
                Err(e)
            }
        }
    }

    /// Scales the service to zero: Swarm stops its tasks with `grace`, and the service (our
    /// record of the version) stays until `remove`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let service = match self.docker.inspect_service(id, None).await {
            Ok(s) => s,
            Err(e) => return Err(self.operation_error("stop", id, &e)),
        };
        let owned = service
            .spec
            .as_ref()
            .and_then(|s| s.labels.as_ref())
            .is_some_and(|l| owned_by(l, &self.owner));
        if !owned {
            return Err(RuntimeError::Operation {
                action: "stop",
                id: id.to_owned(),
                message: format!(
                    "the service has no {}=true label or another agent's {} label; it is not ours to touch",
                    labels::MANAGED,
                    labels::OWNER
                ),
            });
        }
        let mut spec = service.spec.unwrap_or_default();
        if let Some(mode) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
            mode.replicas = Some(0);
        }
        if let Some(c) = spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            c.stop_grace_period = Some(grace.as_nanos().min(i64::MAX as u128) as i64);
        }
        let version = service
            .version
            .and_then(|v| v.index)
            .and_then(|i| i32::try_from(i).ok())
            .unwrap_or_default();
        self.docker
            .update_service(
                id,
                spec,
                UpdateServiceOptionsBuilder::new().version(version).build(),
                None,
            )
            .await
            .map_err(|e| self.operation_error("stop", id, &e))?;
        debug!(service = id, "scaled to zero");
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        // Only ours: `instance` refuses a service with broken labels, and finds no other.
        if self.instance("remove", id).await?.is_none() {
            return Ok(());
        }
        match self.docker.delete_service(id).await {
            Ok(()) => {
                debug!(service = id, "removed service");
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.operation_error("remove", id, &e)),
        }
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let stream = self.docker.service_logs(id, Some(tail_options(lines)));
        read_logs(stream, |e| self.operation_error("logs", id, e)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        let receiver = self.events.tx.subscribe();
        self.start_watching();
        receiver
    }

    fn heals_itself(&self) -> Option<Duration> {
        Some(self.heals_within)
    }

    /// Swarm is bringing a task back when it wants more tasks running than serve and one
    /// of them is on its way (assigned, preparing, starting) on a node that is up.
    async fn replacing(&self, id: &str) -> Option<String> {
        let instance = self.instance("inspect", id).await.ok()??;
        let serving = instance
            .tasks
            .iter()
            .filter(|t| t.serving_at().is_some())
            .count();
        if !instance.being_replaced() && serving > 0 {
            return None;
        }
        let coming = instance.tasks.iter().find(|t| t.on_its_way())?;
        Some(format!(
            "Swarm is starting task {} on node {} ({}; {serving} serving)",
            coming.id.get(..12).unwrap_or(&coming.id),
            coming.node.get(..12).unwrap_or(&coming.node),
            coming.state
        ))
    }
}
