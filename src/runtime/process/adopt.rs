//! What an earlier agent left behind: the instances it started that are still running
//! (adopted, and watched for their exit because they are not our children), and starts it
//! never recorded because it died between the spawn and the pid file (killed through the
//! nonce in their environment).
//!
//! Never signals an adopted instance (stopping one is `stop`'s job); kills only processes
//! carrying the nonce of a start whose agent is gone and whose pid file never appeared.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::ProcessRuntime;
use super::pidfile::{INTENT_PREFIX, Intent, NONCE_ENV, PidFile, remove_quietly};
use super::procfs::{liveness, pids_with_env, proc_stat, signal_instance};
use crate::runtime::{RuntimeEvent, RuntimeEventKind};

/// How often the `/proc` entries of adopted instances are looked at (see the `process` module docs).
const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Instances a previous agent started that were running when this runtime was created: not
/// our children, so nobody reaps them and their exit is noticed by looking.
#[derive(Debug, Default)]
pub(super) struct AdoptedWatch {
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
    pub(super) fn scan(processes_dir: &Path) -> Self {
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
    pub(super) fn ensure_ticker(self: &Arc<Self>, events: &broadcast::Sender<RuntimeEvent>) {
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
    pub(super) fn check(&self, events: &broadcast::Sender<RuntimeEvent>) -> bool {
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

impl ProcessRuntime {
    /// Kills processes a dead agent spawned but never recorded (see [`Intent`]).
    pub(super) async fn clean_stale_intents(&self) {
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
}

#[cfg(test)]
mod tests {
    use semver::Version;

    use super::*;
    use crate::runtime::Runtime;

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
}
