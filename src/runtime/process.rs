//! The process runtime: MCP servers as local child processes, the embedded default that
//! needs no Docker.
//!
//! It owns three things under the agent's data directory:
//!
//! - the **child processes** it spawned, each the leader of its own process group, so a
//!   Ctrl-C at the agent's terminal does not take the fleet down and `stop` can signal a
//!   server together with whatever it forked;
//! - one **pid file** per instance, `processes/<server>--<instance>.json`, written
//!   atomically, which is how an agent that restarted finds and adopts what it started
//!   (after a restart they are no longer its children, so liveness comes from `/proc`);
//! - one **log file** per instance, `logs/<server>/<instance>.log`, holding the child's
//!   stdout and stderr. Logs outlive their instance: they are history, and the reason a
//!   rollout was rolled back.
//!
//! An instance id is `p<pid>-<starttime>`, where `starttime` is field 22 of
//! `/proc/<pid>/stat`: a pid alone can be reused by an unrelated process once ours has
//! gone, the pair cannot.
//!
//! Exits reach subscribers ([`Runtime::subscribe`]) as [`RuntimeEvent`]s the moment they
//! are seen:
//!
//! - a **child** is reaped by a task that waits for it, which reports its exit code (or
//!   `128 + signal`) as soon as the kernel does;
//! - an **adopted** process (one a previous agent started, running when this runtime was
//!   created) is not our child and cannot be waited for. [`ProcessRuntime::new`] notes the
//!   ones alive in the pid files, and a light ticker looks at their `/proc` entries every
//!   500 ms (a `list` looks too); one seen gone is reported once, with no code, because
//!   only its parent could learn it. The ticker runs only while such instances remain and
//!   holds the watch list weakly, so it stops when the runtime is dropped. Polling rather
//!   than a `pidfd` per process: it needs no newer kernel and no file descriptor per
//!   server, and only the fleet inherited at start-up is polled (new starts are children).
//!
//! What it never does: decide what should run (that is `reconcile`), restart a crashed
//! server on its own (it reports the exit and the health monitor decides), or signal a
//! process it did not start — every signal is preceded by a check that the pid still
//! carries the recorded start time. Pid files never hold environment values, because those
//! include secrets.
//!
//! Linux only: liveness and identity come from `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::{
    Instance, InstanceSpec, InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind,
    RuntimeKind,
};

/// Variables taken from the agent's own environment. Nothing else is inherited, so the
/// agent's secrets (registry tokens, webhook secrets, ...) never reach a server that was
/// not given them explicitly.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// How often `stop` looks whether a signalled process has gone.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long `stop` waits for a process to vanish after SIGKILL before it gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The grace `remove` gives an instance that is still running.
const REMOVE_GRACE: Duration = Duration::from_secs(2);
/// At most this much of a log file is read for `logs_tail`, whatever `lines` asks for.
const MAX_TAIL_BYTES: u64 = 1024 * 1024;
/// Capacity of the event broadcast; a subscriber that lags further loses the oldest exits
/// (and is told so by `RecvError::Lagged`), `list` still has them.
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// How often the `/proc` entries of adopted instances are looked at (see the module docs).
const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Runs servers as local processes. See the module docs.
#[derive(Debug)]
pub struct ProcessRuntime {
    processes_dir: PathBuf,
    logs_dir: PathBuf,
    /// Shared with the tasks that wait for children.
    shared: Arc<Shared>,
    /// Adopted instances watched for their exit. Only the runtime holds it strongly (the
    /// ticker has a `Weak`), so dropping the runtime ends the ticker; `shared` would not,
    /// because the waiters of still-running children hold it.
    adopted: Arc<AdoptedWatch>,
    /// The operator's trust policy, checked again against the real program (symlinks
    /// resolved) and the environment right before each start: validation saw the files as
    /// they were then, and a link can be swapped since.
    trust: Option<crate::manifest::policy::TrustPolicy>,
}

#[derive(Debug)]
struct Shared {
    /// Exits of the children this runtime reaped, by instance id. The pid file records them
    /// too; this map covers the moment between the exit and the pid file being rewritten.
    /// A std `Mutex`: it is only held for a map operation, never across an `.await`.
    exits: Mutex<HashMap<String, ExitRecord>>,
    /// Serialises rewriting and deleting pid files, so a waiter recording an exit cannot
    /// resurrect a pid file that `remove` has just deleted. A tokio `Mutex` because it is
    /// held across file IO.
    pid_files: tokio::sync::Mutex<()>,
    events: broadcast::Sender<RuntimeEvent>,
}

/// Instances a previous agent started that were running when this runtime was created: not
/// our children, so nobody reaps them and their exit is noticed by looking.
#[derive(Debug, Default)]
struct AdoptedWatch {
    /// A std `Mutex`: held for map operations only, never across an `.await` or `/proc`
    /// reads.
    state: Mutex<AdoptedState>,
}

#[derive(Debug, Default)]
struct AdoptedState {
    /// By instance id; removed when reported, so each exit is reported once.
    instances: HashMap<String, Adopted>,
    /// Whether a ticker task runs.
    ticking: bool,
}

#[derive(Clone, Debug)]
struct Adopted {
    pid: u32,
    starttime: u64,
    server_id: String,
}

impl AdoptedWatch {
    /// The instances alive among the pid files in `processes_dir`. Called before this
    /// runtime starts anything, so every one of them is another agent's child. Blocking,
    /// but small: one directory and a few short files, once per runtime.
    fn scan(processes_dir: &Path) -> Self {
        let mut instances = HashMap::new();
        let entries = std::fs::read_dir(processes_dir).into_iter().flatten();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension() != Some(OsStr::new("json")) {
                continue;
            }
            // Unreadable files are skipped here; `list` reports them.
            let Some(file) = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<PidFile>(&bytes).ok())
            else {
                continue;
            };
            if liveness(file.pid, file.starttime).is_present() {
                instances.insert(
                    file.instance_id(),
                    Adopted {
                        pid: file.pid,
                        starttime: file.starttime,
                        server_id: file.server_id,
                    },
                );
            }
        }
        if !instances.is_empty() {
            debug!(
                count = instances.len(),
                "watching adopted server processes for their exit"
            );
        }
        Self {
            state: Mutex::new(AdoptedState {
                instances,
                ticking: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdoptedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the ticker unless it runs or there is nothing to watch. Outside a tokio
    /// runtime it is left to a later call (`subscribe`, `list`).
    fn ensure_ticker(self: &Arc<Self>, events: &broadcast::Sender<RuntimeEvent>) {
        let mut state = self.lock();
        if state.ticking || state.instances.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.ticking = true;
        handle.spawn(tick_adopted(Arc::downgrade(self), events.clone()));
    }

    /// Reports the watched instances that are gone, each once (a concurrent `list` and tick
    /// cannot both report one). Returns whether any remain to watch.
    fn check(&self, events: &broadcast::Sender<RuntimeEvent>) -> bool {
        let watched: Vec<(String, Adopted)> = self
            .lock()
            .instances
            .iter()
            .map(|(id, adopted)| (id.clone(), adopted.clone()))
            .collect();
        let gone: Vec<(String, Adopted)> = watched
            .into_iter()
            .filter(|(_, a)| !liveness(a.pid, a.starttime).is_present())
            .collect();
        let (exited, remaining) = {
            let mut state = self.lock();
            // A concurrent check may have reported some already.
            let exited: Vec<(String, Adopted)> = gone
                .into_iter()
                .filter(|(id, _)| state.instances.remove(id).is_some())
                .collect();
            let remaining = !state.instances.is_empty();
            (exited, remaining)
        };
        for (id, adopted) in exited {
            info!(instance = %id, server = %adopted.server_id, pid = adopted.pid, "adopted server process exited");
            // Without subscribers there is nobody to tell; not an error.
            let _ = events.send(RuntimeEvent {
                instance_id: id,
                server_id: adopted.server_id,
                // Only its parent could learn the code.
                kind: RuntimeEventKind::Exited { code: None },
                // When it was noticed, at most one poll after it happened.
                at: Timestamp::now(),
            });
        }
        remaining
    }
}

/// Looks at the adopted instances every [`ADOPTED_POLL_INTERVAL`] until none remain or the
/// runtime is dropped. Between ticks it holds nothing but a `Weak` and a sender.
async fn tick_adopted(watch: Weak<AdoptedWatch>, events: broadcast::Sender<RuntimeEvent>) {
    loop {
        tokio::time::sleep(ADOPTED_POLL_INTERVAL).await;
        let Some(watch) = watch.upgrade() else {
            return;
        };
        if !watch.check(&events) {
            let mut state = watch.lock();
            // `check` saw none left and nothing adds adopted instances later, but stay
            // correct if that ever changes: stop only if still empty.
            if state.instances.is_empty() {
                state.ticking = false;
                return;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ExitRecord {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitRecord {
    fn from_status(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// The code shown in [`InstanceState::Exited`]. A kill by signal N reads as `128 + N`,
    /// as shells and Docker report it (137 after SIGKILL), so both runtimes speak alike.
    fn state_code(self) -> Option<i64> {
        self.code
            .map(i64::from)
            .or(self.signal.map(|s| 128 + i64::from(s)))
    }
}

/// The content of a pid file. Everything needed to rebuild an [`Instance`] after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat` at spawn: with `pid`, the process's identity.
    starttime: u64,
    server_id: String,
    version: Version,
    revision: String,
    spec_hash: String,
    host_port: u16,
    /// The command and its arguments, substituted. The environment is deliberately absent.
    command: Vec<String>,
    log_path: PathBuf,
    started_at: Timestamp,
    /// Set when this agent reaped the process; stays `null` for a process that died while
    /// no agent was its parent.
    exit_code: Option<i32>,
    #[serde(default)]
    exit_signal: Option<i32>,
    /// The start's nonce (see [`Intent`]), also in the child's environment.
    #[serde(default)]
    nonce: Option<String>,
}

/// Written before a spawn and removed once the pid file exists. An agent killed between the
/// two leaves it behind; the next agent then finds the process through the nonce in its
/// environment and kills it, so a crash at any instant leaves no untracked server running.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Intent {
    /// The agent process that spawned it; its intents are its own business while it lives.
    agent_pid: u32,
    nonce: String,
    server_id: String,
}

/// The child's environment variable carrying its start nonce.
pub const NONCE_ENV: &str = "MCP_ORCHESTRATION_INSTANCE";
const INTENT_PREFIX: &str = ".intent-";

impl PidFile {
    fn instance_id(&self) -> String {
        instance_id(self.pid, self.starttime)
    }

    fn recorded_exit(&self) -> Option<ExitRecord> {
        (self.exit_code.is_some() || self.exit_signal.is_some()).then_some(ExitRecord {
            code: self.exit_code,
            signal: self.exit_signal,
        })
    }

    fn to_instance(&self, state: InstanceState) -> Instance {
        Instance {
            id: self.instance_id(),
            server_id: self.server_id.clone(),
            version: self.version.clone(),
            revision: self.revision.clone(),
            spec_hash: self.spec_hash.clone(),
            host_port: Some(self.host_port),
            state,
            started_at: Some(self.started_at),
            image_digest: None,
        }
    }
}

impl ProcessRuntime {
    /// A runtime keeping its pid files in `<data_dir>/processes/` and logs in
    /// `<data_dir>/logs/`, creating both.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let data_dir = data_dir.into();
        let processes_dir = data_dir.join("processes");
        let logs_dir = data_dir.join("logs");
        for dir in [&processes_dir, &logs_dir] {
            std::fs::create_dir_all(dir).map_err(|err| RuntimeError::Unavailable {
                runtime: RuntimeKind::Process.as_str(),
                message: format!("cannot create {}: {err}", dir.display()),
            })?;
        }
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let adopted = Arc::new(AdoptedWatch::scan(&processes_dir));
        adopted.ensure_ticker(&events);
        Ok(Self {
            processes_dir,
            logs_dir,
            shared: Arc::new(Shared {
                exits: Mutex::new(HashMap::new()),
                pid_files: tokio::sync::Mutex::new(()),
                events,
            }),
            adopted,
            trust: None,
        })
    }

    /// Checks every start against `trust` (see the `trust` field).
    pub fn with_trust(mut self, trust: crate::manifest::policy::TrustPolicy) -> Self {
        self.trust = Some(trust);
        self
    }

    fn pid_file_path(&self, server_id: &str, id: &str) -> PathBuf {
        self.processes_dir.join(format!("{server_id}--{id}.json"))
    }

    /// Every readable pid file. Unreadable or corrupt ones are logged and skipped: one bad
    /// file must not hide the rest of the fleet.
    async fn read_pid_files(&self) -> Result<Vec<(PathBuf, PidFile)>, RuntimeError> {
        let mut dir = tokio::fs::read_dir(&self.processes_dir)
            .await
            .map_err(|err| self.unavailable(&self.processes_dir, &err))?;
        let mut files = Vec::new();
        loop {
            let entry = match dir.next_entry().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(err) => return Err(self.unavailable(&self.processes_dir, &err)),
            };
            let path = entry.path();
            if path.extension() != Some(OsStr::new("json")) {
                // Temporary files of an atomic write in progress (or left by a crash).
                continue;
            }
            match read_pid_file(&path).await {
                Ok(Some(file)) => files.push((path, file)),
                // Removed between listing the directory and reading it.
                Ok(None) => {}
                Err(message) => {
                    warn!(path = %path.display(), error = %message, "skipping unreadable pid file");
                }
            }
        }
        Ok(files)
    }

    /// The pid file of instance `id`, if there is one.
    async fn find(&self, id: &str) -> Result<Option<(PathBuf, PidFile)>, RuntimeError> {
        let Some((pid, starttime)) = parse_instance_id(id) else {
            return Ok(None);
        };
        let suffix = format!("--{id}.json");
        Ok(self
            .read_pid_files()
            .await?
            .into_iter()
            .find(|(path, file)| {
                file.pid == pid
                    && file.starttime == starttime
                    && path
                        .file_name()
                        .and_then(OsStr::to_str)
                        .is_some_and(|name| name.ends_with(&suffix))
            }))
    }

    /// Kills processes a dead agent spawned but never recorded (see [`Intent`]).
    async fn clean_stale_intents(&self) {
        let Ok(mut dir) = tokio::fs::read_dir(&self.processes_dir).await else {
            return;
        };
        let mut stale = Vec::new();
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(INTENT_PREFIX) {
                continue;
            }
            let Ok(text) = tokio::fs::read(entry.path()).await else {
                continue;
            };
            let Ok(intent) = serde_json::from_slice::<Intent>(&text) else {
                // A crash mid-write leaves an empty or partial file; nothing was spawned yet.
                remove_quietly(&entry.path()).await;
                continue;
            };
            let writer_alive = Path::new(&format!("/proc/{}", intent.agent_pid)).exists();
            if intent.agent_pid != std::process::id() && !writer_alive {
                stale.push((entry.path(), intent));
            }
        }
        if stale.is_empty() {
            return;
        }
        let recorded: Vec<String> = self
            .read_pid_files()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, f)| f.nonce)
            .collect();
        for (path, intent) in stale {
            if !recorded.contains(&intent.nonce) {
                for pid in pids_with_env(NONCE_ENV, &intent.nonce) {
                    warn!(server = %intent.server_id, pid, "killing a server process a crashed agent started but never recorded");
                    if let Ok(stat) = proc_stat(pid) {
                        let _ = signal_instance(pid, stat.starttime, libc::SIGKILL);
                    }
                }
            }
            remove_quietly(&path).await;
        }
    }

    fn state_of(&self, file: &PidFile) -> InstanceState {
        match liveness(file.pid, file.starttime) {
            Liveness::Alive => InstanceState::Running,
            Liveness::Stopped => InstanceState::Other {
                detail: "stopped by a signal (not serving)".to_owned(),
            },
            Liveness::Gone => {
                let exit = self
                    .shared
                    .exits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&file.instance_id())
                    .copied()
                    .or_else(|| file.recorded_exit());
                InstanceState::Exited {
                    code: exit.and_then(ExitRecord::state_code),
                }
            }
        }
    }

    fn unavailable(&self, path: &Path, err: &io::Error) -> RuntimeError {
        RuntimeError::Unavailable {
            runtime: RuntimeKind::Process.as_str(),
            message: format!("cannot read {}: {err}", path.display()),
        }
    }

    async fn start_inner(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        let start_error = |message: String| RuntimeError::Start {
            server: spec.server_id.clone(),
            version: spec.version.clone(),
            message,
        };
        let Some(process) = &spec.process else {
            return Err(start_error(
                "the process runtime needs a `process` block (command, args, env) in the manifest"
                    .to_owned(),
            ));
        };
        if !is_safe_file_component(&spec.server_id) {
            return Err(start_error(format!(
                "server id {:?} cannot be used in a file name",
                spec.server_id
            )));
        }

        let port = match spec.host_port {
            // A fixed port that is taken would only show as a server that exits at once;
            // saying so here gives the operator the reason.
            Some(port) => {
                check_port_free(port).map_err(|err| {
                    start_error(format!("port {port} on 127.0.0.1 is not free: {err}"))
                })?;
                port
            }
            None => free_port().map_err(|err| start_error(format!("no free port: {err}")))?,
        };
        let version = spec.version.to_string();
        let port_text = port.to_string();
        let substitute = |s: &str| {
            s.replace("{version}", &version)
                .replace("{port}", &port_text)
        };
        let command = substitute(&process.command);
        let args: Vec<String> = process.args.iter().map(|a| substitute(a)).collect();
        let env: BTreeMap<String, String> = merged_env(&spec.env, &process.env)
            .into_iter()
            .map(|(k, v)| (k, substitute(&v)))
            .collect();
        // The real program is started, so a link swapped after this check cannot redirect
        // the start; the name it was given stays its `argv[0]`.
        let program = match &self.trust {
            Some(trust) => {
                if let Some(name) = env.keys().find(|k| !trust.allows_process_env(k)) {
                    return Err(start_error(format!(
                        "`{name}` makes a program load code other than its own and the trust policy ({}) does not list it in `allowed_process_env`",
                        trust.source
                    )));
                }
                trust.check_real_command(&command).map_err(start_error)?
            }
            None => PathBuf::from(&command),
        };

        // The log file is named after the instance, which needs the pid, which needs the
        // spawn, which needs the file. So the child starts writing to a temporary name that
        // is renamed once the pid is known; the open descriptor follows the rename.
        let server_logs = self.logs_dir.join(&spec.server_id);
        tokio::fs::create_dir_all(&server_logs)
            .await
            .map_err(|err| {
                start_error(format!("cannot create {}: {err}", server_logs.display()))
            })?;
        let pending_log = server_logs.join(format!(".starting-{}.log", unique_suffix()));
        let log = open_log(&pending_log)
            .map_err(|err| start_error(format!("cannot open {}: {err}", pending_log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|err| start_error(format!("cannot duplicate the log descriptor: {err}")))?;

        let nonce = format!(
            "{}-{}",
            unique_suffix(),
            Timestamp::now().as_nanosecond() % 1_000_000_000_000
        );
        let intent_path = self.processes_dir.join(format!("{INTENT_PREFIX}{nonce}"));
        let intent = Intent {
            agent_pid: std::process::id(),
            nonce: nonce.clone(),
            server_id: spec.server_id.clone(),
        };
        let intent_text = serde_json::to_vec(&intent).map_err(|e| start_error(e.to_string()))?;
        tokio::fs::write(&intent_path, intent_text)
            .await
            .map_err(|err| start_error(format!("cannot write {}: {err}", intent_path.display())))?;

        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg0(&command)
            .args(&args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|key| std::env::var_os(key).map(|value| (*key, value))),
            )
            .envs(&env)
            .env(NONCE_ENV, &nonce)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own process group: the terminal's SIGINT does not reach it, and `stop`
            // can signal everything it forked at once.
            .process_group(0)
            // Servers outlive the agent on purpose: a restarted agent adopts them.
            .kill_on_drop(false);
        // The agent's own umask (0077) keeps its data dir private; a server gets the usual
        // one. SAFETY: umask is async-signal-safe and touches nothing but the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => {
                remove_quietly(&pending_log).await;
                remove_quietly(&intent_path).await;
                return Err(start_error(format!("cannot run {command}: {err}")));
            }
        };

        // The child cannot have been reaped yet (nobody waits for it before the waiter task
        // below), so its /proc entry is there even if it already exited.
        let identity = child
            .id()
            .ok_or_else(|| io::Error::other("the child has no pid"))
            .and_then(|pid| Ok((pid, proc_stat(pid)?.starttime)));
        let (pid, starttime) = match identity {
            Ok(identity) => identity,
            Err(err) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                remove_quietly(&pending_log).await;
                remove_quietly(&intent_path).await;
                return Err(start_error(format!(
                    "cannot read the started process's identity: {err}"
                )));
            }
        };
        let id = instance_id(pid, starttime);
        Span::current().record("pid", pid);

        let log_path = server_logs.join(format!("{id}.log"));
        let log_path = match tokio::fs::rename(&pending_log, &log_path).await {
            Ok(()) => log_path,
            Err(err) => {
                warn!(error = %err, log = %pending_log.display(), "cannot rename the log file; keeping its temporary name");
                pending_log
            }
        };

        let mut command_line = vec![command];
        command_line.extend(args);
        let file = PidFile {
            pid,
            starttime,
            server_id: spec.server_id.clone(),
            version: spec.version.clone(),
            revision: spec.revision.clone(),
            spec_hash: spec.spec_hash.clone(),
            host_port: port,
            command: command_line,
            log_path,
            started_at: Timestamp::now(),
            exit_code: None,
            exit_signal: None,
            nonce: Some(nonce),
        };
        let pid_path = self.pid_file_path(&spec.server_id, &id);
        if let Err(err) = write_atomically(&pid_path, &file).await {
            // Without a pid file nothing could ever find this process again: do not leave
            // it running untracked.
            // The group first, while the leader's identity can still be checked.
            let _ = signal_instance(pid, starttime, libc::SIGKILL);
            let _ = child.start_kill();
            let _ = child.wait().await;
            remove_quietly(&intent_path).await;
            return Err(start_error(format!(
                "cannot write {}: {err}",
                pid_path.display()
            )));
        }
        remove_quietly(&intent_path).await;

        let shared = Arc::clone(&self.shared);
        let waiter_path = pid_path.clone();
        let waiter_id = id.clone();
        let server_id = spec.server_id.clone();
        tokio::spawn(
            async move {
                // Waiting reaps the child. An unreaped child stays a zombie, which still
                // looks alive to `kill(pid, 0)` and holds its pid.
                match child.wait().await {
                    Ok(status) => {
                        record_exit(&shared, &waiter_path, waiter_id, server_id, status).await;
                    }
                    Err(err) => warn!(error = %err, "cannot wait for the server process"),
                }
            }
            .instrument(Span::current()),
        );

        info!(instance = %id, port, log = %file.log_path.display(), "server process started");
        Ok(file.to_instance(InstanceState::Running))
    }

    async fn stop_inner(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some((_, file)) = self.find(id).await? else {
            return Err(RuntimeError::NotFound(id.to_owned()));
        };
        let span = Span::current();
        span.record("server", file.server_id.as_str());
        span.record("version", tracing::field::display(&file.version));
        span.record("pid", file.pid);
        let op_error = |message: String| RuntimeError::Operation {
            action: "stop",
            id: id.to_owned(),
            message,
        };

        if !liveness(file.pid, file.starttime).is_present() {
            debug!("already exited");
            return Ok(());
        }
        let started = Instant::now();
        if !signal_instance(file.pid, file.starttime, libc::SIGTERM)
            .map_err(|err| op_error(format!("SIGTERM: {err}")))?
        {
            return Ok(());
        }
        if wait_gone(file.pid, file.starttime, grace).await {
            info!(
                elapsed_ms = started.elapsed().as_millis(),
                "server process stopped"
            );
            return Ok(());
        }

        warn!(
            grace_ms = grace.as_millis(),
            "server process ignored SIGTERM; sending SIGKILL"
        );
        if signal_instance(file.pid, file.starttime, libc::SIGKILL)
            .map_err(|err| op_error(format!("SIGKILL: {err}")))?
            && !wait_gone(file.pid, file.starttime, KILL_WAIT).await
        {
            return Err(op_error(format!(
                "pid {} is still there {KILL_WAIT:?} after SIGKILL",
                file.pid
            )));
        }
        info!(
            elapsed_ms = started.elapsed().as_millis(),
            "server process killed"
        );
        Ok(())
    }

    async fn remove_inner(&self, id: &str) -> Result<(), RuntimeError> {
        let Some((path, file)) = self.find(id).await? else {
            return Ok(());
        };
        let span = Span::current();
        span.record("server", file.server_id.as_str());
        span.record("version", tracing::field::display(&file.version));
        span.record("pid", file.pid);

        if liveness(file.pid, file.starttime).is_present() {
            self.stop_inner(id, REMOVE_GRACE).await?;
        }
        {
            let _guard = self.shared.pid_files.lock().await;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(RuntimeError::Operation {
                        action: "remove",
                        id: id.to_owned(),
                        message: format!("cannot delete {}: {err}", path.display()),
                    });
                }
            }
        }
        self.shared
            .exits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        debug!("instance removed; its log is kept");
        Ok(())
    }

    /// The log of instance `id`: from its pid file, or, once removed, by its name.
    async fn log_path(&self, id: &str) -> Result<Option<PathBuf>, RuntimeError> {
        if let Some((_, file)) = self.find(id).await? {
            return Ok(Some(file.log_path));
        }
        if parse_instance_id(id).is_none() {
            return Ok(None);
        }
        let mut dir = match tokio::fs::read_dir(&self.logs_dir).await {
            Ok(dir) => dir,
            Err(err) => return Err(self.unavailable(&self.logs_dir, &err)),
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let candidate = entry.path().join(format!("{id}.log"));
            if tokio::fs::try_exists(&candidate).await.unwrap_or(false) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        self.clean_stale_intents().await;
        // An adopted instance that died is reported now rather than at the next tick.
        self.adopted.check(&self.shared.events);
        self.adopted.ensure_ticker(&self.shared.events);
        let mut instances: Vec<Instance> = self
            .read_pid_files()
            .await?
            .iter()
            .map(|(_, file)| file.to_instance(self.state_of(file)))
            .collect();
        instances.sort_by(|a, b| {
            (&a.server_id, a.started_at, &a.id).cmp(&(&b.server_id, b.started_at, &b.id))
        });
        Ok(instances)
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        let span = info_span!(
            "process_start",
            server = %spec.server_id,
            version = %spec.version,
            pid = tracing::field::Empty,
        );
        self.start_inner(spec).instrument(span).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let span = info_span!(
            "process_stop",
            instance = %id,
            server = tracing::field::Empty,
            version = tracing::field::Empty,
            pid = tracing::field::Empty,
        );
        self.stop_inner(id, grace).instrument(span).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let span = info_span!(
            "process_remove",
            instance = %id,
            server = tracing::field::Empty,
            version = tracing::field::Empty,
            pid = tracing::field::Empty,
        );
        self.remove_inner(id).instrument(span).await
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let Some(path) = self.log_path(id).await? else {
            return Err(RuntimeError::NotFound(id.to_owned()));
        };
        let read_path = path.clone();
        let tail = tokio::task::spawn_blocking(move || tail_lines(&read_path, lines)).await;
        let message = match tail {
            Ok(Ok(text)) => return Ok(text),
            Ok(Err(err)) => format!("cannot read {}: {err}", path.display()),
            Err(err) => format!("reading {} failed: {err}", path.display()),
        };
        Err(RuntimeError::Operation {
            action: "logs",
            id: id.to_owned(),
            message,
        })
    }

    /// Exits of children (with their code) and of adopted instances (without), as they are
    /// seen; see the module docs.
    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        let receiver = self.shared.events.subscribe();
        // For a runtime created outside tokio, whose ticker could not start then.
        self.adopted.ensure_ticker(&self.shared.events);
        receiver
    }
}

/// The environment a server gets on top of [`INHERITED_ENV`]: the spec's env (manifest env
/// plus satisfied config requirements) with the `process` block's env over it. The process
/// block wins because it is the more specific statement about *this* way of running the
/// server (e.g. `PORT={port}`), where the manifest env is shared with the Docker runtime.
fn merged_env(
    spec_env: &BTreeMap<String, String>,
    process_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = spec_env.clone();
    env.extend(process_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

async fn record_exit(
    shared: &Shared,
    pid_path: &Path,
    id: String,
    server_id: String,
    status: ExitStatus,
) {
    let at = Timestamp::now();
    let exit = ExitRecord::from_status(status);
    info!(instance = %id, code = ?exit.code, signal = ?exit.signal, "server process exited");
    shared
        .exits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), exit);
    {
        let _guard = shared.pid_files.lock().await;
        match read_pid_file(pid_path).await {
            // Removed already: the exit no longer matters to anyone reading pid files.
            Ok(None) => {}
            Ok(Some(mut file)) => {
                file.exit_code = exit.code;
                file.exit_signal = exit.signal;
                if let Err(err) = write_atomically(pid_path, &file).await {
                    warn!(instance = %id, error = %err, "cannot record the exit in the pid file");
                }
            }
            Err(message) => {
                warn!(instance = %id, error = %message, "cannot record the exit in the pid file");
            }
        }
    }
    // Sent last, so a subscriber that reacts by calling `list` sees the exit. Without
    // subscribers there is nobody to tell; not an error.
    let _ = shared.events.send(RuntimeEvent {
        instance_id: id,
        server_id,
        kind: RuntimeEventKind::Exited {
            code: exit.state_code(),
        },
        at,
    });
}

/// `Ok(None)` when the file does not exist; `Err` with a reason when it cannot be used.
async fn read_pid_file(path: &Path) -> Result<Option<PidFile>, String> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| format!("not a pid file: {err}")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// Writes `value` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`, so a reader (or an agent killed mid-write) never sees half a pid file.
async fn write_atomically(path: &Path, value: &PidFile) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", unique_suffix()));
    let tmp = PathBuf::from(tmp);
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if result.is_err() {
        remove_quietly(&tmp).await;
    }
    result
}

async fn remove_quietly(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %err, "cannot delete a temporary file");
    }
}

fn open_log(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        // Servers may print their configuration, secrets included.
        .mode(0o600)
        .open(path)
}

/// Processes whose environment holds `key=value` (only those of our own user are readable).
fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// A suffix unique within this agent process and, thanks to the pid, across agents.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port that was free a moment ago. Another process may take it before the server binds
/// it; the server then fails to start and the rollout's health gate reports it.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `port` can be bound on 127.0.0.1 right now. std sets `SO_REUSEADDR`, so the
/// `TIME_WAIT` connections of a just-stopped predecessor do not count as "taken".
fn check_port_free(port: u16) -> io::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop)
}

/// Server ids are validated by the manifest (lowercase, digits, `-`); this is the last
/// line of defence before one becomes part of a path.
fn is_safe_file_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

fn instance_id(pid: u32, starttime: u64) -> String {
    format!("p{pid}-{starttime}")
}

fn parse_instance_id(id: &str) -> Option<(u32, u64)> {
    let (pid, starttime) = id.strip_prefix('p')?.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(starttime) {
        return None;
    }
    Some((pid.parse().ok()?, starttime.parse().ok()?))
}

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `T` (stopped), ...
    state: char,
    /// Field 5: the process group.
    pgrp: i32,
    /// Field 22: clock ticks after boot at which the process started.
    starttime: u64,
}

fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // Field 2 is the command name in parentheses and may itself contain spaces and
    // parentheses, so the fixed fields start after the *last* `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `fields[0]` is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// Ours and running.
    Alive,
    /// Ours, but stopped by SIGSTOP or a debugger: present, not serving.
    Stopped,
    /// Exited (or a zombie waiting to be reaped), or the pid now belongs to someone else.
    Gone,
}

impl Liveness {
    fn is_present(self) -> bool {
        self != Liveness::Gone
    }
}

fn liveness(pid: u32, starttime: u64) -> Liveness {
    match proc_stat(pid) {
        Ok(stat) if stat.starttime == starttime => match stat.state {
            'Z' | 'X' | 'x' => Liveness::Gone,
            'T' | 't' => Liveness::Stopped,
            _ => Liveness::Alive,
        },
        _ => Liveness::Gone,
    }
}

/// Sends `signal` to the process group led by `pid`, but only if `pid` is still the process
/// we started (its start time matches). Returns `Ok(false)` when it is not there any more.
///
/// If the process left its group (`setsid`), only the process itself is signalled: the
/// group id would then name a group that may not be ours. A zombie leader still pins its
/// pid and its group, so the group may be signalled then too.
fn signal_instance(pid: u32, starttime: u64, signal: libc::c_int) -> io::Result<bool> {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return Ok(false);
    };
    // pid 0 and -1 mean "my group" and "everyone" to kill(2); 1 is init; never ourselves.
    if pid_t <= 1 || pid == std::process::id() {
        return Err(io::Error::other(format!("refusing to signal pid {pid}")));
    }
    let stat = match proc_stat(pid) {
        Ok(stat) if stat.starttime == starttime => stat,
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    let target = if stat.pgrp == pid_t { -pid_t } else { pid_t };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. `target` is
    // `±pid` with pid > 1, never 0 or -1, and pid was just checked to be the process we
    // started (same start time).
    let rc = unsafe { libc::kill(target, signal) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Polls until the process is gone; `false` if it is still there after `timeout`.
async fn wait_gone(pid: u32, starttime: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !liveness(pid, starttime).is_present() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// The last `lines` lines of the file at `path`, reading backwards from its end in chunks
/// so a large log costs only what is returned (and never more than [`MAX_TAIL_BYTES`]).
fn tail_lines(path: &Path, lines: usize) -> io::Result<String> {
    const CHUNK: u64 = 8 * 1024;
    if lines == 0 {
        return Ok(String::new());
    }
    let mut file = std::fs::File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    let floor = len.saturating_sub(MAX_TAIL_BYTES);
    // Chunks read so far, the last part of the file first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    let mut pos = len;
    while pos > floor {
        let read_from = pos.saturating_sub(CHUNK).max(floor);
        let mut chunk = vec![0; usize::try_from(pos - read_from).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut chunk)?;
        for i in (0..chunk.len()).rev() {
            // The file's final newline ends the last line; it does not start another one.
            if chunk[i] != b'\n' || read_from + i as u64 + 1 == len {
                continue;
            }
            newlines += 1;
            if newlines == lines {
                chunk.drain(..=i);
                chunks.push(chunk);
                return Ok(join_reversed(chunks));
            }
        }
        chunks.push(chunk);
        pos = read_from;
    }
    let mut text = join_reversed(chunks);
    if floor > 0 {
        // Capped: the first line is probably cut; start at the next whole one.
        let cut = text.find('\n').map_or(0, |i| i + 1);
        text.drain(..cut);
    }
    Ok(text)
}

fn join_reversed(chunks: Vec<Vec<u8>>) -> String {
    let bytes: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let text = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                starttime: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let stat = proc_stat(std::process::id()).expect("our own /proc entry");
        assert_ne!(stat.state, 'Z');
        assert_eq!(
            liveness(std::process::id(), stat.starttime),
            Liveness::Alive
        );
        assert_eq!(
            liveness(std::process::id(), stat.starttime + 1),
            Liveness::Gone
        );
    }

    #[test]
    fn instance_ids_round_trip_and_reject_anything_else() {
        assert_eq!(parse_instance_id(&instance_id(12, 345)), Some((12, 345)));
        for bad in [
            "", "p", "p-1", "p1-", "12-345", "p1-2-3", "p+1-2", "p1-+2", "../p1-2",
        ] {
            assert_eq!(parse_instance_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signalling_refuses_dangerous_pids() {
        for pid in [0, 1, std::process::id()] {
            let own = proc_stat(std::process::id()).expect("own stat").starttime;
            assert!(signal_instance(pid, own, 0).is_err(), "pid {pid}");
        }
        // A pid that is someone else (wrong start time) is not signalled.
        let own = proc_stat(std::process::id()).expect("own stat").starttime;
        let parent = std::os::unix::process::parent_id();
        assert!(matches!(signal_instance(parent, own + 12345, 0), Ok(false)));
    }

    #[test]
    fn process_env_wins_over_spec_env() {
        let spec = BTreeMap::from([
            ("A".to_owned(), "spec".to_owned()),
            ("B".to_owned(), "spec".to_owned()),
        ]);
        let process = BTreeMap::from([("B".to_owned(), "process".to_owned())]);
        let merged = merged_env(&spec, &process);
        assert_eq!(merged["A"], "spec");
        assert_eq!(merged["B"], "process");
    }

    #[test]
    fn exit_codes_follow_the_shell_convention_for_signals() {
        let exited = ExitRecord {
            code: Some(3),
            signal: None,
        };
        let killed = ExitRecord {
            code: None,
            signal: Some(libc::SIGKILL),
        };
        assert_eq!(exited.state_code(), Some(3));
        assert_eq!(killed.state_code(), Some(137));
    }

    #[tokio::test]
    async fn the_adopted_watch_ends_with_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A "server" a previous agent started that never exits: this test process.
        let own = proc_stat(std::process::id()).expect("own stat");
        let file = PidFile {
            pid: std::process::id(),
            starttime: own.starttime,
            server_id: "me".to_owned(),
            version: Version::new(1, 0, 0),
            revision: "r".to_owned(),
            spec_hash: "h".to_owned(),
            host_port: 1,
            command: vec!["test".to_owned()],
            log_path: dir.path().join("me.log"),
            started_at: Timestamp::now(),
            exit_code: None,
            exit_signal: None,
            nonce: None,
        };
        std::fs::create_dir_all(dir.path().join("processes")).expect("mkdir");
        std::fs::write(
            dir.path()
                .join("processes")
                .join(format!("me--{}.json", file.instance_id())),
            serde_json::to_vec(&file).expect("json"),
        )
        .expect("pid file");

        let runtime = ProcessRuntime::new(dir.path()).expect("runtime");
        assert!(runtime.adopted.lock().ticking, "watching what it adopted");
        let mut events = runtime.subscribe();
        tokio::time::sleep(ADOPTED_POLL_INTERVAL * 2).await;
        assert!(
            events.try_recv().is_err(),
            "a live adopted instance is not reported"
        );

        drop(runtime);
        // The ticker held the last sender; it lets go at its next tick.
        let closed = tokio::time::timeout(ADOPTED_POLL_INTERVAL * 4, events.recv())
            .await
            .expect("the ticker ends after the runtime is dropped");
        assert!(
            matches!(closed, Err(broadcast::error::RecvError::Closed)),
            "{closed:?}"
        );
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &body).expect("write");
        assert_eq!(
            tail_lines(&path, 3).expect("tail"),
            "line 19997\nline 19998\nline 19999\n"
        );
        assert_eq!(tail_lines(&path, 0).expect("tail"), "");
        assert_eq!(tail_lines(&path, 1_000_000).expect("tail"), body);

        std::fs::write(&path, "only\nthree\nlines").expect("write");
        assert_eq!(tail_lines(&path, 2).expect("tail"), "three\nlines");
        assert_eq!(tail_lines(&path, 10).expect("tail"), "only\nthree\nlines");
        std::fs::write(&path, "").expect("write");
        assert_eq!(tail_lines(&path, 10).expect("tail"), "");
    }

    #[test]
    fn tail_is_capped_at_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let line = "x".repeat(999) + "\n";
        let lines = usize::try_from(MAX_TAIL_BYTES / 1000 * 3).expect("fits");
        std::fs::write(&path, line.repeat(lines)).expect("write");
        let tail = tail_lines(&path, lines).expect("tail");
        assert!(tail.len() as u64 <= MAX_TAIL_BYTES);
        assert!(tail.starts_with('x') && tail.ends_with('\n'));
        assert_eq!(tail.len() % 1000, 0);
    }
}
