//! The long-running agent: wires the source, the runtime, the store, the reconciler and the
//! HTTP API together, and runs until its shutdown token is cancelled.
//!
//! Shutdown finishes the current sync step and stops serving; the fleet keeps running (the
//! servers are not the agent's children) and is adopted again at the next start.

mod lock;
mod notes;
mod preview;
mod recovery;
mod registry_poll;
mod secrets;
mod sync;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use secrets::{Secrets, SecretsError};

use crate::fleet::{Control, Trigger};
use crate::manifest::policy::TrustPolicy;
use crate::reconcile::execute::Executor;
use crate::runtime::Runtime;
use crate::settings::{AgentSettings, RuntimeChoice};
use crate::source::GitSource;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot prepare the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Git(#[from] crate::source::GitError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("invalid sync windows file {path}:\n{message}")]
    SyncWindows { path: PathBuf, message: String },
    #[error("invalid registry credentials file {path}: {message}")]
    RegistryCredentials { path: PathBuf, message: String },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot read or write {what} {path}")]
    DataFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the API keys file {path}")]
    KeysFile {
        path: PathBuf,
        #[source]
        source: crate::source::ReadError,
    },
    #[error("{task} panicked or was cancelled: {message}")]
    Task { task: &'static str, message: String },
    #[error(
        "the data directory {path} is in use by another agent{}; give each agent its own --data-dir",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
}

/// The keys the API accepts: `--api-key` and the lines of `--api-keys-file`; with neither,
/// one generated at the first start into `<data-dir>/api-key` (mode 0600), where the CLI on
/// the same machine finds it.
fn api_keys(settings: &AgentSettings) -> Result<Vec<String>, AgentError> {
    let mut keys: Vec<String> = settings.api_key.iter().cloned().collect();
    if let Some(path) = &settings.api_keys_file {
        let text = crate::source::read_text(path).map_err(|source| AgentError::KeysFile {
            path: path.clone(),
            source,
        })?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if !keys.is_empty() {
        return Ok(keys);
    }
    let path = settings.data_dir.join(crate::settings::API_KEY_FILE);
    let io = |source| AgentError::DataFile {
        what: "the generated API key",
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(vec![k.trim().to_owned()]),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let key = crate::api::generate_key();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    writeln!(f, "{key}").map_err(io)?;
    info!(path = %path.display(), "generated an API key for mutating requests");
    Ok(vec![key])
}

fn registry_credentials(
    settings: &AgentSettings,
) -> Result<Vec<crate::registry::RegistryAuth>, AgentError> {
    let Some(path) = &settings.registry_credentials else {
        return Ok(Vec::new());
    };
    let err = |message: String| AgentError::RegistryCredentials {
        path: path.clone(),
        message,
    };
    let text = crate::source::read_text(path).map_err(|e| err(crate::error_text::chain(&e)))?;
    serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// How long shutdown waits for background tasks to finish their current step.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Health events and the event log are kept for this long…
const EVENTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// …and at most this many health events per server…
const HEALTH_EVENTS_PER_SERVER: usize = 10_000;
/// …and this many entries of the event log.
const EVENT_LOG_ENTRIES: usize = 100_000;

/// Retention of health events and the event log, hourly (and once at start).
async fn prune_events(store: Store, shutdown: CancellationToken) {
    loop {
        let cutoff = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(EVENTS_MAX_AGE).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        match store
            .call(move |s| {
                Ok(s.prune_health_events(cutoff, HEALTH_EVENTS_PER_SERVER)?
                    + s.prune_events(cutoff, EVENT_LOG_ENTRIES)?)
            })
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "pruned old events"),
            Err(e) => warn!(error = %crate::error_text::chain(&e), "cannot prune old events"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// This agent's identity: `<data-dir>/agent-id`, created at the first start. Containers are
/// labelled with it, so agents sharing a Docker host never touch each other's fleets.
fn agent_id(data_dir: &std::path::Path) -> Result<String, AgentError> {
    use sha2::Digest;
    let path = data_dir.join("agent-id");
    let io = |source| AgentError::DataFile {
        what: "the agent's id",
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        std::process::id(),
        data_dir.display()
    );
    let id = format!(
        "agent-{}",
        &hex::encode(sha2::Sha256::digest(seed.as_bytes()))[..12]
    );
    std::fs::write(&path, format!("{id}\n")).map_err(io)?;
    Ok(id)
}

/// Creates the data dir readable by the agent's user only (0700), makes its existing files
/// 0600, and sets the agent's umask to 0077 so every file it creates later (the database
/// and its WAL, logs, pid files, the API key) is private too: they hold rollout reasons,
/// log lines and keys. The process runtime gives servers the usual 0022 back.
fn private_data_dir(dir: &std::path::Path) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| AgentError::DataDir {
        path: dir.to_owned(),
        source,
    };
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode & !0o077))
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one, as servers that hold many connections
/// do: a default soft limit of 1,024 is quickly shared out between API clients, git
/// fetches, runtime calls and probes. Returns the soft limit now in force.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                info!(
                    from = limit.rlim_cur,
                    to = limit.rlim_max,
                    "raised the open-file limit"
                );
                return limit.rlim_max;
            }
            warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "cannot raise the open-file limit"
            );
        }
    }
    limit.rlim_cur
}

/// Half the descriptors for API connections, the rest for everything else; at most 4,096.
fn default_max_connections(nofile_limit: u64) -> usize {
    usize::try_from(nofile_limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(64, 4096)
}

/// Binds the API's socket with a listen backlog of 1,024 rather than tokio's 128: with
/// hundreds of clients connecting at once (`benches/api.rs` at 1,000), a short queue
/// overflows and the kernel drops SYNs, which clients only retry after a second.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix: a restarted agent can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Where a started agent listens (useful when the settings ask for port 0).
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub api: std::net::SocketAddr,
    /// The MCP gateway's address; `None` when it is off.
    pub gateway: Option<std::net::SocketAddr>,
}

/// Runs the agent until `shutdown` is cancelled. `on_ready` receives the addresses it
/// listens on.
pub async fn run(
    settings: AgentSettings,
    trust: TrustPolicy,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Ready),
) -> Result<(), AgentError> {
    let begun = std::time::Instant::now();
    // Nothing is touched before the data dir is ours alone: a second agent on it would roll
    // out the same commits and stop the first one's instances.
    let (_lock, mut created) = lock::DataDir::acquire(&settings.data_dir)?;
    private_data_dir(&settings.data_dir)?;
    let nofile_limit = raise_nofile_limit();
    // A busy port fails the start before the store is opened (and a previous agent's
    // unfinished work is marked interrupted).
    let listener = listen(settings.listen).map_err(|source| AgentError::Listen {
        addr: settings.listen,
        source,
    })?;
    let gateway_listener = settings
        .gateway_listen
        .map(|addr| listen(addr).map_err(|source| AgentError::Listen { addr, source }))
        .transpose()?;
    let db = settings.data_dir.join("state.db");
    let store = tokio::task::spawn_blocking(move || Store::open(&db))
        .await
        .map_err(|e| AgentError::Task {
            task: "opening the state database",
            message: e.to_string(),
        })??;
    let interrupted = store
        .call(|s| s.interrupt_unfinished(jiff::Timestamp::now()))
        .await?;
    if interrupted > 0 {
        warn!(
            count = interrupted,
            "marked runs and rollouts of a previous agent as interrupted"
        );
    }
    let registry_auths = registry_credentials(&settings)?;
    // The agent's own secrets, and every value it hands a server, are blanked out of what
    // servers print before it reaches a reason, an event or a notification.
    let redactor = crate::redact::Redactor::default();
    settings
        .webhook_secret
        .iter()
        .chain(settings.git.token.iter())
        .chain(settings.api_key.iter())
        .for_each(|s| redactor.add(s));
    registry_auths
        .iter()
        .for_each(|a| redactor.add(&a.password));
    let runtime: Arc<dyn Runtime> = match settings.runtime {
        RuntimeChoice::Docker => {
            let owner = agent_id(&settings.data_dir)?;
            Arc::new(
                match &settings.docker_host {
                    Some(host) => {
                        crate::runtime::docker::DockerRuntime::connect_to(host.clone()).await?
                    }
                    None => crate::runtime::docker::DockerRuntime::connect().await?,
                }
                .with_owner(owner)
                .with_registry_auth(registry_auths.clone()),
            )
        }
        RuntimeChoice::Swarm => {
            let owner = agent_id(&settings.data_dir)?;
            Arc::new(
                match &settings.docker_host {
                    Some(host) => {
                        crate::runtime::swarm::SwarmRuntime::connect_to(host.clone()).await?
                    }
                    None => crate::runtime::swarm::SwarmRuntime::connect().await?,
                }
                .with_owner(owner)
                .with_registry_auth(registry_auths.clone()),
            )
        }
        RuntimeChoice::Process => Arc::new(
            crate::runtime::process::ProcessRuntime::new(&settings.data_dir)?
                .with_trust(trust.clone()),
        ),
    };
    let secrets = Secrets::load(settings.secrets_file.as_deref(), &trust, &redactor)?;
    let windows = Arc::new(load_sync_windows(settings.sync_windows.as_deref())?);
    let (tx, mut rx) = mpsc::channel(1);
    let exit_wake = tx.clone();
    // The fleet view and the monitor exist before the executor, which reports its rollout
    // phases straight to them.
    let view = crate::fleet::Fleet::new();
    let monitor = crate::health::Monitor::new(store.clone(), 256, redactor.clone());
    let (phase_view, phase_monitor) = (view.clone(), monitor.clone());
    let mut executor = Executor::new(runtime.clone(), store.clone(), settings.concurrency)
        .with_redactor(redactor.clone())
        .with_prober(monitor.prober())
        .with_monitor(monitor.clone())
        .on_phase(move |server, phase| {
            crate::fleet::on_rollout_phase(&phase_view, &phase_monitor, server, phase);
        });
    executor.drain = settings.drain;
    executor = executor.with_outbox(crate::subscriptions::Outbox::new(
        store.clone(),
        settings.delivery,
        shutdown.child_token(),
    ));
    // The gateway's sessions with the backends, shared by the gateway and the executor's
    // drain: an old instance stops once the gateway routes to its successor and its calls
    // in flight are done. External gateways (--gateway-url) only learn of a switch from the
    // publisher, so with any of them the old instance serves the full --drain.
    let gateway_backends = settings
        .gateway_listen
        .map(|_| crate::gateway::Backends::default());
    // The tool-set guard lists tools with the same HTTP client as the gateway's sessions.
    executor = executor.with_tool_guard(crate::gateway::tool_lister(
        gateway_backends
            .as_ref()
            .map(crate::gateway::Backends::http)
            .unwrap_or_default(),
    ));
    if let Some(backends) = &gateway_backends
        && settings.gateway_urls.is_empty()
    {
        let backends = backends.clone();
        executor = executor.with_drain(Arc::new(move |request| {
            let backends = backends.clone();
            Box::pin(async move {
                backends
                    .drained(
                        &request.server,
                        &request.new_instance,
                        &request.old_instances,
                        request.max,
                    )
                    .await
                    .to_string()
            })
        }));
    }
    let tasks = tokio_util::task::TaskTracker::new();
    let control = Arc::new(Control::new(
        store.clone(),
        executor,
        monitor.clone(),
        view,
        tasks.clone(),
        tx,
    ));
    let api_keys = api_keys(&settings)?;
    api_keys.iter().for_each(|k| redactor.add(k));
    let api_keys_for_gateway = api_keys.clone();
    // The API answers before the git mirror is opened (`GET /health` says what the start
    // still waits for); the mirror and the first sync are logged as they finish.
    let startup = crate::api::Startup::default();
    startup.set(Some("opening the git mirror"));
    let sync_duration = Arc::new(crate::metrics::Histogram::default());
    let publish_counts = crate::publish::Counts::default();
    // Client configurations point at the gateway's public URL when one is set, else at its
    // own address (loopback when it listens on every interface: for this host only).
    let gateway_address = gateway_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|mut addr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            crate::clients::service::GatewayAddress {
                base_url: settings
                    .gateway_public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}")),
                keys_required: settings.gateway_keys,
            }
        });
    let configs = Arc::new(crate::clients::service::Configs::new(
        store.clone(),
        control.view.clone(),
        settings.data_dir.join("keys"),
        gateway_address,
        crate::clients::service::Host::current(settings.clients_home.as_deref()),
    ));
    // Webhook subscriptions: a worker per subscription on the tracker, each resuming after
    // the last event it delivered or gave up on.
    let subscriptions = crate::subscriptions::Subscriptions::new(
        store.clone(),
        trust.clone(),
        settings.delivery,
        tasks.clone(),
        shutdown.child_token(),
    );
    match subscriptions.start().await {
        Ok(0) => {}
        Ok(n) => info!(
            subscriptions = n,
            "delivering events to webhook subscriptions"
        ),
        Err(e) => {
            warn!(error = %crate::error_text::chain(&e), "cannot read the webhook subscriptions; nothing is delivered to them until a restart")
        }
    }
    let notes_pushes = Arc::new(crate::metrics::Attempts::default());
    let api_state = crate::api::ApiState {
        control: control.clone(),
        configs: configs.clone(),
        subscriptions: subscriptions.clone(),
        runtime: runtime.kind(),
        branch: settings.git.branch.clone(),
        webhook_secret: settings.webhook_secret.clone(),
        api_keys,
        keys_for_reads: settings.keys_for_reads,
        started_at: jiff::Timestamp::now(),
        sync_duration: sync_duration.clone(),
        publish_counts: publish_counts.clone(),
        notes_pushes: notes_pushes.clone(),
        shutdown: shutdown.clone(),
        startup: startup.clone(),
    };
    // The one router: the API's routes with the MCP tools nested at `/mcp`, behind the
    // same keys and limits.
    let mcp = crate::mcp::http_service(
        control.clone(),
        configs,
        subscriptions,
        crate::mcp::HttpConfig {
            body_limit: crate::api::BODY_LIMIT,
            any_host: settings.keys_for_reads,
        },
        shutdown.child_token(),
    );
    let router = crate::api::router(Arc::new(api_state), mcp);
    let addr = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: settings.listen,
        source,
    })?;
    let limits = crate::api::serve::Limits {
        header_read_timeout: settings.header_read_timeout,
        max_connections: settings
            .max_connections
            .unwrap_or_else(|| default_max_connections(nofile_limit)),
    };
    // Its own token, so a start that fails after this point also closes the listener.
    let api_shutdown = shutdown.child_token();
    let api = tokio::spawn(crate::api::serve(
        listener,
        router,
        limits,
        api_shutdown.clone(),
    ));
    // The gateway's listener: its sessions end with the agent, its server with the API's.
    let gateway = match gateway_listener.zip(gateway_backends) {
        Some((gateway_listener, backends)) => {
            let addr = gateway_listener
                .local_addr()
                .map_err(|source| AgentError::Listen {
                    addr: settings.gateway_listen.unwrap_or(settings.listen),
                    source,
                })?;
            let sessions = crate::gateway::SessionPlace::in_data_dir(&settings.data_dir).map_err(
                |source| AgentError::DataFile {
                    what: "the gateway's session key or sessions",
                    path: settings.data_dir.join("gateway-sessions"),
                    source,
                },
            )?;
            let router = crate::gateway::router(
                control.clone(),
                backends,
                crate::gateway::Access {
                    keys_required: settings.gateway_keys,
                    keys: api_keys_for_gateway,
                },
                sessions,
                &tasks,
                shutdown.child_token(),
            );
            let serving = tokio::spawn(crate::api::serve(
                gateway_listener,
                router,
                limits,
                api_shutdown.clone(),
            ));
            Some((addr, serving))
        }
        None => None,
    };
    info!(
        repo = %settings.git.url,
        branch = %settings.git.branch,
        manifest = %settings.git.manifest_path,
        runtime = runtime.kind().as_str(),
        listen = %addr,
        gateway = %gateway.as_ref().map_or_else(|| "off".to_owned(), |(a, _)| a.to_string()),
        data_dir = %settings.data_dir.display(),
        poll_interval_s = settings.poll_interval.as_secs_f64(),
        "agent started"
    );
    on_ready(Ready {
        api: addr,
        gateway: gateway.as_ref().map(|(a, _)| *a),
    });
    let git = settings.git.clone();
    let mirror = settings.data_dir.join("repo.git");
    let opened = tokio::task::spawn_blocking(move || GitSource::open(git, mirror))
        .await
        .map_err(|e| AgentError::Task {
            task: "opening the git mirror",
            message: e.to_string(),
        })
        .and_then(|r| r.map_err(AgentError::from));
    let source = match opened {
        Ok(source) => source,
        Err(e) => {
            api_shutdown.cancel();
            return Err(e);
        }
    };
    info!(ms = begun.elapsed().as_millis() as u64, "git mirror open");
    startup.set(Some("the first sync"));
    // Started: from here on the data dir holds state worth keeping, whatever happens.
    created.keep();

    // A local repository is watched, so commits and pushes are seen at once.
    let _watcher = settings.git.local_git_dir().and_then(|dir| {
        let (wtx, mut wrx) = mpsc::channel(1);
        match crate::source::watch::watch_refs(&dir, wtx) {
            Ok(w) => {
                let (wake, stop) = (control.clone(), shutdown.clone());
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            changed = wrx.recv() => match changed {
                                Some(()) => wake.wake(Trigger::Watch),
                                None => return,
                            },
                        }
                    }
                });
                info!(git_dir = %dir.display(), "watching the local repository");
                Some(w)
            }
            Err(e) => {
                warn!(error = %crate::error_text::chain(&e), "cannot watch the local repository; relying on polling");
                None
            }
        }
    });

    tasks.spawn(prune_events(store.clone(), shutdown.clone()));
    tasks.spawn(crate::publish::run(
        control.clone(),
        publish_counts,
        settings.gateway_urls.clone(),
        settings.gateway_resend_interval,
        shutdown.clone(),
    ));
    tasks.spawn(recovery::watch_exits(
        runtime.subscribe(),
        monitor.clone(),
        exit_wake,
        shutdown.clone(),
    ));
    tasks.spawn(recovery::run(control.clone(), shutdown.clone()));
    tasks.spawn(wake_dependents(control.clone(), shutdown.clone()));
    tasks.spawn(crate::fleet::follow_failovers(
        control.view.clone(),
        control.monitor.failovers(),
        shutdown.clone(),
    ));
    let registry = crate::registry::RegistryClient::new(registry_auths, 4);
    let watched = Arc::new(registry_poll::Watched::default());
    tasks.spawn(registry_poll::run(
        control.clone(),
        watched.clone(),
        registry,
        settings.registry_poll_interval,
        shutdown.clone(),
    ));
    let notes = settings.write_notes.then(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut api_base = addr;
        if api_base.ip().is_unspecified() {
            api_base.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let writer = notes::NotesWriter {
            source: source.clone(),
            store: store.clone(),
            api_base: format!("http://{api_base}"),
            pushes: notes_pushes,
        };
        tasks.spawn(writer.run(rx, shutdown.clone()));
        tx
    });
    let mut syncer = sync::Syncer::new(
        source,
        trust,
        secrets,
        control,
        watched,
        shutdown.clone(),
        sync_duration,
    );
    syncer.windows = windows;
    syncer.control.set_planner(Arc::new(syncer.previewer()));
    syncer.notes = notes;
    syncer.restore().await;
    let mut next = Trigger::Startup;
    loop {
        syncer.sync(next).await;
        if startup.get().is_some() {
            startup.set(None);
            info!(ms = begun.elapsed().as_millis() as u64, "first sync done");
        }
        if shutdown.is_cancelled() {
            break;
        }
        let wait = if let Some(soon) = syncer.commit_waiting() {
            // A commit the store could not record yet: try again soon.
            soon.min(settings.poll_interval)
        } else if syncer.fetch_failures > 0 && syncer.fetch_retryable {
            // Back off while the remote is unreachable, up to the poll interval; a failure
            // that needs someone to fix something waits for the poll (or a wake-up).
            let backoff =
                Duration::from_millis(500) * 2u32.saturating_pow(syncer.fetch_failures.min(10));
            backoff.min(settings.poll_interval)
        } else if syncer.apply_failures > 0 {
            // A change failed only because the runtime was away: try again soon.
            let backoff =
                Duration::from_millis(500) * 2u32.saturating_pow(syncer.apply_failures.min(10));
            backoff.min(settings.poll_interval)
        } else {
            settings.poll_interval
        };
        // A sync window that opens or closes before then: what it held goes out at once.
        let wait = syncer
            .window_boundary(wait)
            .map_or(wait, |boundary| boundary.min(wait));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => next = Trigger::Poll,
            t = rx.recv() => next = t.unwrap_or(Trigger::Poll),
        }
        // Collapse a burst (several refs changing at once) into one sync.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(t) = rx.try_recv() {
            next = t;
        }
    }
    info!("shutting down; the fleet keeps running");
    // Background tasks end on the token; each finishes the step it is in (a Docker call, a
    // store write), within a deadline so a stuck one cannot hold the agent.
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            seconds = SHUTDOWN_DEADLINE.as_secs(),
            unfinished = tasks.len(),
            "background tasks did not finish in time; stopping anyway"
        );
    }
    // Health events noted until now (the last transitions, recovery's last words) are
    // stored before the agent exits.
    if tokio::time::timeout(SHUTDOWN_DEADLINE, monitor.flush())
        .await
        .is_err()
    {
        warn!("health events were still being stored at exit");
    }
    api_shutdown.cancel();
    if let Some((_, serving)) = gateway {
        match serving.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %crate::error_text::chain(&e), "the gateway's HTTP server failed")
            }
            Err(e) => warn!(error = %e, "the gateway's HTTP server panicked"),
        }
    }
    match api.await {
        Ok(r) => r.map_err(AgentError::Serve),
        Err(e) => Err(AgentError::Task {
            task: "the HTTP server",
            message: e.to_string(),
        }),
    }
}

/// Wakes the sync loop when a server that others wait for (`depends_on`) becomes healthy,
/// so their deploys and upgrades go on at once rather than at the next retry.
async fn wake_dependents(control: Arc<Control>, shutdown: CancellationToken) {
    let mut transitions = control.monitor.subscribe();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = transitions.recv() => event,
        };
        match event {
            Ok(t) if t.to == crate::health::HealthState::Healthy => {
                let waited_for = control
                    .executor
                    .blocked()
                    .values()
                    .any(|on| on.contains(&t.server_id));
                if waited_for {
                    control.wake(Trigger::Dependency);
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The operator's sync windows: the file `path` names, checked (every problem located),
/// or none.
fn load_sync_windows(
    path: Option<&std::path::Path>,
) -> Result<crate::sync_windows::SyncWindows, AgentError> {
    let Some(path) = path else {
        return Ok(crate::sync_windows::SyncWindows::default());
    };
    let invalid = |message: String| AgentError::SyncWindows {
        path: path.to_owned(),
        message,
    };
    let text = crate::source::read_text(path).map_err(|e| invalid(crate::error_text::chain(&e)))?;
    let file = crate::manifest::TextFile::new(path.display().to_string(), text);
    let mut d = crate::manifest::decode::Decoder::new(file.path.clone());
    match crate::sync_windows::SyncWindows::decode(&mut d, &file) {
        Some(w) if !d.diags.has_errors() => {
            info!(windows = w.windows.len(), file = %path.display(), "sync windows loaded");
            Ok(w)
        }
        _ => Err(invalid(
            d.diags
                .into_vec()
                .iter()
                .map(|d| format!("  {d}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}
