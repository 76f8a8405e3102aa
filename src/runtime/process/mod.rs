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
//!
//! Each part has its own file: `start` spawns a child and reaps it, `pidfile` keeps the
//! files under `processes/`, `procfs` reads `/proc` and signals only what is still ours,
//! `adopt` takes over what an earlier agent left, and `logs` keeps the log files. This file
//! holds the runtime itself and the [`Runtime`] implementation that ties them together.

mod adopt;
mod logs;
mod pidfile;
mod procfs;
mod start;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::{
    Instance, InstanceSpec, InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeKind,
};
use adopt::AdoptedWatch;
use pidfile::{ExitRecord, PidFile};
use procfs::{Liveness, liveness, signal_instance, wait_gone};

pub use pidfile::NONCE_ENV;
pub use start::INHERITED_ENV;

/// How long `stop` waits for a process to vanish after SIGKILL before it gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The grace `remove` gives an instance that is still running.
const REMOVE_GRACE: Duration = Duration::from_secs(2);
/// Capacity of the event broadcast; a subscriber that lags further loses the oldest exits
/// (and is told so by `RecvError::Lagged`), `list` still has them.
const EVENT_CHANNEL_CAPACITY: usize = 256;

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
        self.logs_tail_inner(id, lines).await
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
