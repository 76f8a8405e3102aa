//! The gateway's side of each backend: one MCP client session per running instance, owned
//! by the gateway (never by a client), and the tools, prompts, resources and resource
//! templates that instance offers.
//!
//! It follows the fleet view. When a server's instance changes (a rollout switched, a
//! recovery replaced it), a session with the new instance is opened and its tools listed
//! *before* it replaces the old one, which keeps serving calls meanwhile; a server gone
//! from the view is dropped with its session. A backend's `list_changed` (of any kind)
//! lists everything again. Every change of what is offered bumps the catalog's generation,
//! which the client sessions watch to send their own `list_changed`.
//!
//! An instance with several serving tasks (Swarm replicas) gets a session with each of
//! them: the one the view routes to is the server's backend (its tools are the catalog);
//! the others are its replicas, which [`Backends::checkout_for`] spreads calls over (see
//! `spread`). A failover to a replica promotes its open session instead of opening one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ClientCapabilities, ClientConfig, ErrorCode, Implementation, Prompt, ProtocolVersion, Resource,
    ResourceTemplate, SubscriptionFilter, Tool,
};
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::http::BackendHttp;
use super::naming::Names;
use super::progress::{Progress, Routes};
use crate::fleet::FleetView;

/// How long opening a backend session and listing its tools may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before trying an instance again; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// One instance's session and what it offers.
#[derive(Clone)]
pub struct Backend {
    /// Which session this is: a new one (another instance, or the same one reached again)
    /// gets a new number.
    pub session: u64,
    pub instance_id: String,
    pub endpoint: String,
    /// A session with another of the instance's tasks than the one the view routes to.
    pub replica: bool,
    /// Calls sent on this session since it opened.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    pub peer: Peer<RoleClient>,
    /// The short way of a call to it, for a backend on a revision with sessions.
    pub direct: Option<Arc<super::forward::Direct>>,
    /// The calls through `peer` that asked for progress.
    progress: Arc<Routes>,
    /// The MCP revision the backend agreed on with the gateway.
    pub protocol_version: Option<String>,
    /// What it offers, shared by every clone: every call checks a backend out, which is
    /// then a few reference counts instead of copies of the tool list and name maps.
    pub offer: Arc<Offered>,
    /// Kept so the session (and its subscription, on a revision without sessions) lives
    /// as long as the backend is current.
    _session: Arc<(
        RunningService<RoleClient, Listener>,
        tokio_util::sync::DropGuard,
    )>,
}

/// What one instance offers: its tools, prompts, resources and resource templates under
/// their own names (empty when it offers none), and the gateway names of its tools and
/// prompts.
pub struct Offered {
    pub tools: Vec<Tool>,
    pub names: Names,
    pub prompts: Vec<Prompt>,
    pub prompt_names: Names,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
}

impl Offered {
    /// `offer` as `server` offers it through the gateway; names that clash are reported.
    fn named(server: &str, offer: Offer) -> Offered {
        let (names, clashes) = name_tools(server, &offer.tools);
        report_clashes(server, &clashes);
        let (prompt_names, _) = Names::of(server, offer.prompts.iter().map(|p| p.name.as_str()));
        Offered {
            tools: offer.tools,
            names,
            prompts: offer.prompts,
            prompt_names,
            resources: offer.resources,
            templates: offer.templates,
        }
    }
}

impl Backend {
    /// Calls a tool of this backend: the short way when it has one (`forward`), through
    /// its rmcp session otherwise; the backend's progress for it goes to `progress`.
    pub async fn call_tool(
        &self,
        params: rmcp::model::CallToolRequestParams,
        progress: Option<&Progress>,
    ) -> Result<rmcp::model::CallToolResponse, ServiceError> {
        use rmcp::model::{CallToolRequest, CallToolResponse, ClientRequest, ServerResult};
        if let Some(direct) = &self.direct {
            return direct.call_tool(params, progress).await;
        }
        let Some(progress) = progress else {
            return self.peer.call_tool_once(params).await;
        };
        // `call_tool_once`, but with the token rmcp's session sent the request with, to
        // route the backend's progress for it.
        let handle = self
            .peer
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                rmcp::service::PeerRequestOptions::no_options(),
            )
            .await?;
        let abandoned = Abandoned(Some((self.peer.clone(), handle.id.clone())));
        let (route, early) = self
            .progress
            .open(handle.progress_token.clone(), progress.clone());
        for heard in early {
            progress.forward(heard).await;
        }
        let answer = handle.await_response().await;
        abandoned.disarm();
        // Progress heard after this point was passed on as the session's streams were
        // read (`BackendHttp::tap`), so before the answer that follows it.
        drop(route);
        match answer? {
            ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(CallToolResponse::InputRequired(result))
            }
            ServerResult::CreateTaskResult(result) => Ok(CallToolResponse::Task(result)),
            _ => Err(ServiceError::UnexpectedResponse),
        }
    }

    /// The tools served under `server`'s names, each with its gateway name; a tool whose
    /// gateway name another of its tools took (see `naming`) is left out.
    pub fn served<'a>(&'a self, server: &'a str) -> impl Iterator<Item = (String, &'a Tool)> {
        let offer = &self.offer;
        offer.tools.iter().filter_map(move |tool| {
            let name = super::naming::qualified(server, &tool.name);
            (offer.names.backend(&name) == Some(tool.name.as_ref())).then_some((name, tool))
        })
    }

    /// The prompts served under `server`'s names, each with its gateway name.
    pub fn served_prompts<'a>(
        &'a self,
        server: &'a str,
    ) -> impl Iterator<Item = (String, &'a Prompt)> {
        let offer = &self.offer;
        offer.prompts.iter().filter_map(move |prompt| {
            let name = super::naming::qualified(server, &prompt.name);
            (offer.prompt_names.backend(&name) == Some(prompt.name.as_str()))
                .then_some((name, prompt))
        })
    }
}

/// What a backend offers, listed in one go.
struct Offer {
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
}

/// Lists everything `peer` offers; prompts and resources only when it says it has them.
async fn list_offer(peer: &Peer<RoleClient>) -> Result<Offer, ServiceError> {
    let capabilities = peer.peer_info().map(|i| i.capabilities.clone());
    let has =
        |f: fn(&rmcp::model::ServerCapabilities) -> bool| capabilities.as_ref().is_some_and(f);
    let tools = peer.list_all_tools().await?;
    let prompts = if has(|c| c.prompts.is_some()) {
        peer.list_all_prompts().await?
    } else {
        Vec::new()
    };
    let (resources, templates) = if has(|c| c.resources.is_some()) {
        (
            peer.list_all_resources().await?,
            peer.list_all_resource_templates().await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Offer {
        tools,
        prompts,
        resources,
        templates,
    })
}

/// The backends by server id, the calls in flight by instance, and the generation of what
/// the backends offer.
#[derive(Clone)]
pub struct Backends {
    state: Arc<Mutex<State>>,
    /// The HTTP client of every backend session.
    http: BackendHttp,
    /// Woken when a backend is installed or a call ends (drains wait on it).
    moved: Arc<Notify>,
    generation: Arc<watch::Sender<u64>>,
    /// Servers whose session the backend no longer knows, for `follow` to open anew.
    expired: Arc<Mutex<std::collections::HashSet<String>>>,
    reconnect: Arc<Notify>,
}

#[derive(Default)]
struct State {
    current: HashMap<String, Backend>,
    /// Sessions with the other serving tasks of each server's instance, by server.
    replicas: HashMap<String, Vec<Backend>>,
    /// Calls in flight per instance id; one lock with `current`, so a drain that sees the
    /// new instance installed also sees every call the old one was handed before.
    in_flight: HashMap<String, usize>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            state: Arc::default(),
            http: BackendHttp::default(),
            moved: Arc::default(),
            generation: Arc::new(watch::Sender::new(0)),
            expired: Arc::default(),
            reconnect: Arc::default(),
        }
    }
}

/// A call in flight on an instance; dropping it ends the call.
pub struct InFlight {
    backends: Backends,
    instance: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.backends.state();
        if let Some(n) = state.in_flight.get_mut(&self.instance) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_flight.remove(&self.instance);
            }
        }
        drop(state);
        self.backends.moved.notify_waiters();
    }
}

/// How a drain ended, in words for the rollout's timeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Drained {
    /// The gateway routes to the new instance and the old ones have no call in flight.
    Done,
    /// `max` passed first.
    TimedOut { switched: bool, in_flight: usize },
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drained::Done => f.write_str(
                "the gateway routes to the new instance and no call is in flight on the old one",
            ),
            Drained::TimedOut {
                switched: false, ..
            } => f.write_str(
                "the gateway had no session with the new instance within --drain; stopping the old one anyway",
            ),
            Drained::TimedOut { in_flight, .. } => write!(
                f,
                "{in_flight} call(s) still in flight on the old instance after --drain; stopping it anyway"
            ),
        }
    }
}

impl Backends {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The HTTP client the backend sessions share (the tool-set guard lists with it).
    pub fn http(&self) -> BackendHttp {
        self.http.clone()
    }

    /// The backend serving `server` now.
    pub fn get(&self, server: &str) -> Option<Backend> {
        self.state().current.get(server).cloned()
    }

    /// The backend serving `server` now, with the call counted in flight on its instance
    /// until the returned guard is dropped.
    pub fn checkout(&self, server: &str) -> Option<(Backend, InFlight)> {
        self.checkout_for(server, 0, |_| false)
    }

    /// Like [`checkout`], but the call may go to one of the instance's replicas that
    /// `usable` accepts (by endpoint): the one `affinity` (a client's key) ranks first
    /// among them and the routed task, so a client stays on one task while it serves.
    /// What is offered and under which names is always the routed task's.
    ///
    /// [`checkout`]: Backends::checkout
    pub fn checkout_for(
        &self,
        server: &str,
        affinity: u64,
        usable: impl Fn(&str) -> bool,
    ) -> Option<(Backend, InFlight)> {
        let mut state = self.state();
        let routed = state.current.get(server)?;
        let replicas = state.replicas.get(server).map(Vec::as_slice).unwrap_or(&[]);
        let candidates = replicas
            .iter()
            .filter(|r| r.instance_id == routed.instance_id && usable(&r.endpoint));
        let backend = match super::spread::pick(affinity, routed, candidates) {
            // The replica's session, under the routed task's names.
            Some(r) => Backend {
                offer: routed.offer.clone(),
                ..r.clone()
            },
            None => routed.clone(),
        };
        backend
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *state
            .in_flight
            .entry(backend.instance_id.clone())
            .or_default() += 1;
        let guard = InFlight {
            backends: self.clone(),
            instance: backend.instance_id.clone(),
        };
        Some((backend, guard))
    }

    /// The sessions with `server`'s instance's other serving tasks.
    pub fn replicas(&self, server: &str) -> Vec<Backend> {
        self.state()
            .replicas
            .get(server)
            .cloned()
            .unwrap_or_default()
    }

    /// How many calls are in flight on `instance`.
    pub fn in_flight(&self, instance: &str) -> usize {
        self.state().in_flight.get(instance).copied().unwrap_or(0)
    }

    /// The backend whose session replaced `session` as `server`'s (another instance, or a
    /// new session with the same one), checked out like [`checkout`], once there is one;
    /// `None` after `max`.
    ///
    /// [`checkout`]: Backends::checkout
    pub async fn successor(
        &self,
        server: &str,
        session: u64,
        max: Duration,
    ) -> Option<(Backend, InFlight)> {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let replaced = self
                .state()
                .current
                .get(server)
                .is_some_and(|b| b.session != session);
            if replaced {
                return self.checkout(server);
            }
            tokio::select! {
                _ = moved => {}
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Asks for a new session with `server`'s instance: the backend said it does not know
    /// the gateway's `session` (HTTP 404: it restarted in place). The current one keeps
    /// serving its tools until the new one is open.
    pub fn expired(&self, server: &str, session: u64) {
        let current = {
            let mut state = self.state();
            // A replica that forgot the session is dropped; `follow` opens it anew.
            if let Some(replicas) = state.replicas.get_mut(server) {
                replicas.retain(|r| r.session != session);
            }
            state
                .current
                .get(server)
                .is_some_and(|b| b.session == session)
        };
        if current {
            self.expired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(server.to_owned());
        }
        self.reconnect.notify_one();
    }

    /// Waits until `server` is served by `new_instance` and none of `old_instances` has a
    /// call in flight, or `max` passed.
    pub async fn drained(
        &self,
        server: &str,
        new_instance: &str,
        old_instances: &[String],
        max: Duration,
    ) -> Drained {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let (switched, in_flight) = {
                let state = self.state();
                let switched = state
                    .current
                    .get(server)
                    .is_some_and(|b| b.instance_id == new_instance);
                let in_flight: usize = old_instances
                    .iter()
                    .filter_map(|i| state.in_flight.get(i))
                    .sum();
                (switched, in_flight)
            };
            if switched && in_flight == 0 {
                return Drained::Done;
            }
            tokio::select! {
                _ = moved => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Drained::TimedOut { switched, in_flight };
                }
            }
        }
    }

    /// Every backend, by server id.
    pub fn all(&self) -> Vec<(String, Backend)> {
        let mut all: Vec<(String, Backend)> = self
            .state()
            .current
            .iter()
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Wakes when what the backends offer changed.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn install(&self, server: &str, backend: Backend) {
        let old = self.state().current.insert(server.to_owned(), backend);
        // The old session ends when its last clone (a call in flight) is done with it.
        drop(old);
        self.moved.notify_waiters();
        self.changed();
    }

    fn install_replica(&self, server: &str, mut backend: Backend) {
        backend.replica = true;
        let mut state = self.state();
        let replicas = state.replicas.entry(server.to_owned()).or_default();
        replicas.retain(|r| r.endpoint != backend.endpoint);
        replicas.push(backend);
    }

    /// Makes the open replica session with `instance` at `endpoint` `server`'s backend (a
    /// failover to a task the gateway already has a session with), keeping what the
    /// routed session lists; false when there is none.
    fn promote(&self, server: &str, instance: &str, endpoint: &str) -> bool {
        let mut state = self.state();
        let Some(replicas) = state.replicas.get_mut(server) else {
            return false;
        };
        let Some(at) = replicas
            .iter()
            .position(|r| r.instance_id == instance && r.endpoint == endpoint)
        else {
            return false;
        };
        let mut promoted = replicas.remove(at);
        promoted.replica = false;
        if let Some(routed) = state
            .current
            .get(server)
            .filter(|b| b.instance_id == instance)
        {
            promoted.offer = routed.offer.clone();
        }
        state.current.insert(server.to_owned(), promoted);
        drop(state);
        info!(%server, %instance, %endpoint, "gateway backend moved to a replica's session");
        self.moved.notify_waiters();
        self.changed();
        true
    }

    /// Keeps the backends of the servers `wanted` names, and the replica sessions
    /// `replica_wanted` accepts (server, instance, endpoint).
    fn retain(
        &self,
        wanted: impl Fn(&str) -> bool,
        replica_wanted: impl Fn(&str, &Backend) -> bool,
    ) {
        let mut state = self.state();
        let before = state.current.len();
        state.current.retain(|id, _| wanted(id));
        let removed = state.current.len() != before;
        state.replicas.retain(|id, replicas| {
            replicas.retain(|r| replica_wanted(id, r));
            !replicas.is_empty()
        });
        drop(state);
        if removed {
            self.changed();
        }
    }

    /// Follows `fleet` until `shutdown`: opens a session with every new instance and drops
    /// the servers that left the view.
    pub async fn follow(self, mut fleet: watch::Receiver<FleetView>, shutdown: CancellationToken) {
        let (refresh_tx, mut refresh) = mpsc::unbounded_channel::<Refresh>();
        // The instance (id and endpoint) a connection task is working on, so a view that
        // changes again does not start a second one.
        let mut connecting: HashMap<String, ((String, String), CancellationToken)> = HashMap::new();
        // The same for replica sessions, by (server, endpoint), with the instance.
        let mut connecting_replicas: HashMap<(String, String), (String, CancellationToken)> =
            HashMap::new();
        loop {
            let view = fleet.borrow_and_update().clone();
            let wanted: HashMap<String, (String, String)> = view
                .servers
                .iter()
                .filter_map(|s| Some((s.id.clone(), (s.instance_id.clone()?, s.endpoint.clone()?))))
                .collect();
            let replicas_wanted: HashMap<(String, String), String> = view
                .servers
                .iter()
                .flat_map(|s| {
                    super::spread::replica_endpoints(s)
                        .into_iter()
                        .map(move |(instance, endpoint)| ((s.id.clone(), endpoint), instance))
                })
                .collect();
            let in_view: std::collections::HashSet<&str> =
                view.servers.iter().map(|s| s.id.as_str()).collect();
            // A server that left the manifest takes its backend with it. One that is still
            // listed keeps its last session (and tools) until a new instance replaces it,
            // so its tools stay listed and its calls get a clear answer.
            self.retain(
                |id| in_view.contains(id),
                |id, r| {
                    replicas_wanted.get(&(id.to_owned(), r.endpoint.clone()))
                        == Some(&r.instance_id)
                },
            );
            connecting.retain(|server, (instance, stop)| {
                let keep = wanted.get(server) == Some(&*instance);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            connecting_replicas.retain(|key, (instance, stop)| {
                let keep = replicas_wanted.get(key) == Some(&*instance);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            let mut expired =
                std::mem::take(&mut *self.expired.lock().unwrap_or_else(|p| p.into_inner()));
            for (server, (instance, endpoint)) in &wanted {
                // The same instance at another address (a container its engine restarted
                // on a new port) needs a new session too, and so does one whose session
                // the backend forgot.
                let current = self
                    .get(server)
                    .is_some_and(|b| b.instance_id == *instance && b.endpoint == *endpoint);
                if (current && !expired.remove(server)) || connecting.contains_key(server) {
                    continue;
                }
                // A failover to a task the gateway has a replica session with: that
                // session serves at once.
                if !current && self.promote(server, instance, endpoint) {
                    continue;
                }
                let stop = shutdown.child_token();
                connecting.insert(
                    server.clone(),
                    ((instance.clone(), endpoint.clone()), stop.clone()),
                );
                tokio::spawn(self.clone().connect(
                    server.clone(),
                    instance.clone(),
                    endpoint.clone(),
                    false,
                    refresh_tx.clone(),
                    stop,
                ));
            }
            let open: std::collections::HashSet<(String, String)> = self
                .state()
                .replicas
                .iter()
                .flat_map(|(id, rs)| rs.iter().map(|r| (id.clone(), r.endpoint.clone())))
                .collect();
            for (key, instance) in &replicas_wanted {
                if open.contains(key) || connecting_replicas.contains_key(key) {
                    continue;
                }
                let stop = shutdown.child_token();
                connecting_replicas.insert(key.clone(), (instance.clone(), stop.clone()));
                tokio::spawn(self.clone().connect(
                    key.0.clone(),
                    instance.clone(),
                    key.1.clone(),
                    true,
                    refresh_tx.clone(),
                    stop,
                ));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = fleet.changed() => if changed.is_err() { return },
                _ = self.reconnect.notified() => {}
                Some(r) = refresh.recv() => match r {
                    Refresh::Connected { server, instance, endpoint, replica: true } => {
                        let key = (server, endpoint);
                        if connecting_replicas.get(&key).is_some_and(|(i, _)| *i == instance) {
                            connecting_replicas.remove(&key);
                        }
                    }
                    Refresh::Connected { server, instance, endpoint, replica: false } => {
                        if connecting
                            .get(&server)
                            .is_some_and(|(wanted, _)| *wanted == (instance.clone(), endpoint.clone()))
                        {
                            connecting.remove(&server);
                        }
                    }
                    // Not awaited here: a slow backend must not hold up following the
                    // fleet (and with it every other server's switch and drain).
                    Refresh::ListChanged { server, instance } => {
                        tokio::spawn(self.clone().relist(server, instance));
                    }
                },
            }
        }
    }

    /// Opens a session with `instance` and lists its tools, trying again with a growing
    /// wait until it works or `stop` (the instance is no longer current).
    async fn connect(
        self,
        server: String,
        instance: String,
        endpoint: String,
        replica: bool,
        refresh: mpsc::UnboundedSender<Refresh>,
        stop: CancellationToken,
    ) {
        let mut wait = RETRY_FIRST;
        loop {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                open(
                    self.http.clone(),
                    &server,
                    &instance,
                    &endpoint,
                    refresh.clone(),
                ),
            );
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = attempt => r,
            };
            match result {
                Ok(Ok(backend)) => {
                    // Another instance may have been wanted while this one connected.
                    if stop.is_cancelled() {
                        return;
                    }
                    if replica {
                        info!(%server, %instance, %endpoint, "gateway replica session ready");
                        self.install_replica(&server, backend);
                    } else {
                        info!(%server, %instance, tools = backend.offer.tools.len(), "gateway backend ready");
                        self.install(&server, backend);
                    }
                    let _ = refresh.send(Refresh::Connected {
                        server,
                        instance,
                        endpoint,
                        replica,
                    });
                    return;
                }
                Ok(Err(e)) => debug!(%server, %instance, error = %e, "gateway backend not ready"),
                Err(_) => debug!(%server, %instance, "gateway backend did not answer in time"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Lists what `server` offers again after its `list_changed`, if `instance` still
    /// serves.
    async fn relist(self, server: String, instance: String) {
        let Some(backend) = self.get(&server).filter(|b| b.instance_id == instance) else {
            return;
        };
        match list_offer(&backend.peer).await {
            Ok(offer) => {
                let offer = Arc::new(Offered::named(&server, offer));
                let mut state = self.state();
                if let Some(b) = state.current.get_mut(&server)
                    && b.instance_id == instance
                {
                    b.offer = offer;
                }
                drop(state);
                self.changed();
            }
            Err(e) => {
                warn!(%server, error = %crate::error_text::chain(&e), "cannot list what the backend offers again")
            }
        }
    }
}

enum Refresh {
    Connected {
        server: String,
        instance: String,
        endpoint: String,
        replica: bool,
    },
    ListChanged {
        server: String,
        instance: String,
    },
}

/// A call to a backend that its caller gave up on before the answer (the client went
/// away): the backend is told, as rmcp's `call_tool_once` tells it.
struct Abandoned(Option<(Peer<RoleClient>, rmcp::model::RequestId)>);

impl Abandoned {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some((peer, id)) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancelled = rmcp::model::CancelledNotificationParam::new(
            Some(id),
            Some("the client gave the call up".into()),
        );
        runtime.spawn(async move {
            let _ = peer.notify_cancelled(cancelled).await;
        });
    }
}

/// The gateway's client side of a backend session: it hears `list_changed`, and the
/// progress of the calls sent through the session.
#[derive(Clone)]
pub struct Listener {
    server: String,
    instance: String,
    refresh: mpsc::UnboundedSender<Refresh>,
    progress: Arc<Routes>,
}

impl Listener {
    fn relist(&self) {
        let _ = self.refresh.send(Refresh::ListChanged {
            server: self.server.clone(),
            instance: self.instance.clone(),
        });
    }
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-orchestration-gateway", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist();
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        // What the session's streams carried was passed on as they were read
        // (`BackendHttp::tap`); this is whatever reached the session another way.
        self.progress.pass_on(params).await;
    }
}

/// A transport to `endpoint` on the shared client.
fn transport(
    http: BackendHttp,
    endpoint: &str,
    stateless: bool,
) -> StreamableHttpClientTransport<BackendHttp> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.to_owned());
    // rmcp resumes a call's broken answer stream forever by default, so a call to an
    // instance that died mid-call would never be answered: try three times in ~1.4 s.
    let mut resume = ExponentialBackoff::default();
    resume.max_times = Some(3);
    resume.base_duration = Duration::from_millis(200);
    resume.max_delay = Some(Duration::from_secs(1));
    config.retry_config = Arc::new(resume);
    // Every client's calls to this server share this one session.
    config.max_concurrent_requests = 256;
    config.allow_stateless = stateless;
    // A 404 on the gateway's session is not answered by a new session with whatever now
    // listens on that port: with a fixed port that is the next version, still under its
    // health gate. The gateway decides (`Backends::expired`).
    config.reinit_on_expired_session = false;
    StreamableHttpClientTransport::with_client(http, config)
}

/// A session with the backend in the newest revision both speak: `initialize` (every
/// revision up to 2025-11-25 has it); a server that refuses it as an unsupported revision
/// speaks only revisions without the handshake, and is asked `server/discover` instead.
/// (rmcp's own probing goes the other way round, and takes an HTTP error of a server that
/// does not know `server/discover` for a failure.)
async fn connect_session(
    http: BackendHttp,
    endpoint: &str,
    listener: Listener,
) -> Result<RunningService<RoleClient, Listener>, String> {
    let chain = |e: &ClientInitializeError| crate::error_text::chain(e);
    match listener
        .clone()
        .serve(transport(http.clone(), endpoint, false))
        .await
    {
        Ok(session) => Ok(session),
        Err(ClientInitializeError::JsonRpcError(e))
            if e.code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION =>
        {
            let modern = ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            };
            let session = listener
                .serve_with_lifecycle(transport(http, endpoint, true), modern)
                .await
                .map_err(|e| chain(&e))?;
            Ok(session)
        }
        Err(e) => Err(chain(&e)),
    }
}

/// On a revision without sessions (2026-07-28 on), a server's `list_changed` comes only
/// on a subscription the client opens: opens one and relists on each, until `stop`.
async fn listen_for_changes(peer: Peer<RoleClient>, listener: Listener, stop: CancellationToken) {
    let filter = SubscriptionFilter::builder()
        .tools_list_changed()
        .prompts_list_changed()
        .resources_list_changed()
        .build();
    let mut subscription = match peer.listen(filter).await {
        Ok(s) => s,
        Err(e) => {
            debug!(server = %listener.server, error = %crate::error_text::chain(&e), "the backend takes no subscription; its changes are seen when its instance changes");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = subscription.next() => match next {
                Ok(Some(_)) => listener.relist(),
                _ => return,
            },
        }
    }
}

async fn open(
    http: BackendHttp,
    server: &str,
    instance: &str,
    endpoint: &str,
    refresh: mpsc::UnboundedSender<Refresh>,
) -> Result<Backend, String> {
    let progress = Arc::new(Routes::default());
    let listener = Listener {
        server: server.to_owned(),
        instance: instance.to_owned(),
        refresh,
        progress: progress.clone(),
    };
    let (recording, session_id) = http.for_session(progress.clone());
    let session = connect_session(recording, endpoint, listener.clone()).await?;
    let modern = session
        .peer()
        .peer_info()
        .is_some_and(|i| !i.protocol_version.has_initialize());
    let listening = CancellationToken::new();
    if modern {
        tokio::spawn(listen_for_changes(
            session.peer().clone(),
            listener,
            listening.clone(),
        ));
    }
    let peer = session.peer().clone();
    let offer = list_offer(&peer)
        .await
        .map_err(|e| crate::error_text::chain(&e))?;
    let offer = Arc::new(Offered::named(server, offer));
    let direct = peer.peer_info().and_then(|info| {
        super::forward::Direct::new(
            http,
            endpoint,
            session_id.get().cloned(),
            &info.protocol_version,
        )
        .map(Arc::new)
    });
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Ok(Backend {
        session: SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        instance_id: instance.to_owned(),
        endpoint: endpoint.to_owned(),
        replica: false,
        sent: Arc::default(),
        protocol_version: peer.peer_info().map(|i| i.protocol_version.to_string()),
        peer,
        direct,
        progress,
        offer,
        _session: Arc::new((session, listening.drop_guard())),
    })
}

fn name_tools(server: &str, tools: &[Tool]) -> (Names, Vec<String>) {
    Names::of(server, tools.iter().map(|t| t.name.as_ref()))
}

fn report_clashes(server: &str, clashes: &[String]) {
    for name in clashes {
        warn!(%server, tool = %name, "a tool's gateway name is taken by another of its tools; it is not served");
    }
}
