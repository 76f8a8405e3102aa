//! The files under `<data_dir>/processes/`: one pid file per instance (`<server>--<id>.json`,
//! written atomically, with the exit once it is known) and one start intent per spawn in
//! flight (`.intent-<nonce>`); and instance ids, `p<pid>-<starttime>`.
//!
//! Never reads `/proc` or signals anything: whether a recorded process still lives is
//! `procfs`'s question. Never holds environment values, which include secrets.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::ProcessRuntime;
use crate::runtime::{Instance, InstanceState, RuntimeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ExitRecord {
    pub(super) code: Option<i32>,
    pub(super) signal: Option<i32>,
}

impl ExitRecord {
    pub(super) fn from_status(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// The code shown in [`InstanceState::Exited`]. A kill by signal N reads as `128 + N`,
    /// as shells and Docker report it (137 after SIGKILL), so both runtimes speak alike.
    pub(super) fn state_code(self) -> Option<i64> {
        self.code
            .map(i64::from)
            .or(self.signal.map(|s| 128 + i64::from(s)))
    }
}

/// The content of a pid file. Everything needed to rebuild an [`Instance`] after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PidFile {
    pub(super) pid: u32,
    /// Field 22 of `/proc/<pid>/stat` at spawn: with `pid`, the process's identity.
    pub(super) starttime: u64,
    pub(super) server_id: String,
    pub(super) version: Version,
    pub(super) revision: String,
    pub(super) spec_hash: String,
    pub(super) host_port: u16,
    /// The command and its arguments, substituted. The environment is deliberately absent.
    pub(super) command: Vec<String>,
    pub(super) log_path: PathBuf,
    pub(super) started_at: Timestamp,
    /// Set when this agent reaped the process; stays `null` for a process that died while
    /// no agent was its parent.
    pub(super) exit_code: Option<i32>,
    #[serde(default)]
    pub(super) exit_signal: Option<i32>,
    /// The start's nonce (see [`Intent`]), also in the child's environment.
    #[serde(default)]
    pub(super) nonce: Option<String>,
}

/// Written before a spawn and removed once the pid file exists. An agent killed between the
/// two leaves it behind; the next agent then finds the process through the nonce in its
/// environment and kills it, so a crash at any instant leaves no untracked server running.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Intent {
    /// The agent process that spawned it; its intents are its own business while it lives.
    pub(super) agent_pid: u32,
    pub(super) nonce: String,
    pub(super) server_id: String,
}

/// The child's environment variable carrying its start nonce.
pub const NONCE_ENV: &str = "MCP_ORCHESTRATION_INSTANCE";
pub(super) const INTENT_PREFIX: &str = ".intent-";

impl PidFile {
    pub(super) fn instance_id(&self) -> String {
        instance_id(self.pid, self.starttime)
    }

    pub(super) fn recorded_exit(&self) -> Option<ExitRecord> {
        (self.exit_code.is_some() || self.exit_signal.is_some()).then_some(ExitRecord {
            code: self.exit_code,
            signal: self.exit_signal,
        })
    }

    pub(super) fn to_instance(&self, state: InstanceState) -> Instance {
        Instance {
            id: self.instance_id(),
            server_id: self.server_id.clone(),
            version: self.version.clone(),
            revision: self.revision.clone(),
            spec_hash: self.spec_hash.clone(),
            host_port: Some(self.host_port),
            host: None,
            tasks: Vec::new(),
            state,
            started_at: Some(self.started_at),
            image_digest: None,
        }
    }
}

impl ProcessRuntime {
    pub(super) fn pid_file_path(&self, server_id: &str, id: &str) -> PathBuf {
        self.processes_dir.join(format!("{server_id}--{id}.json"))
    }

    /// Every readable pid file. Unreadable or corrupt ones are logged and skipped: one bad
    /// file must not hide the rest of the fleet.
    pub(super) async fn read_pid_files(&self) -> Result<Vec<(PathBuf, PidFile)>, RuntimeError> {
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
    pub(super) async fn find(&self, id: &str) -> Result<Option<(PathBuf, PidFile)>, RuntimeError> {
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
}

/// `Ok(None)` when the file does not exist; `Err` with a reason when it cannot be used.
pub(super) async fn read_pid_file(path: &Path) -> Result<Option<PidFile>, String> {
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
pub(super) async fn write_atomically(path: &Path, value: &PidFile) -> io::Result<()> {
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

pub(super) async fn remove_quietly(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %err, "cannot delete a temporary file");
    }
}

/// A suffix unique within this agent process and, thanks to the pid, across agents.
pub(super) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn instance_id(pid: u32, starttime: u64) -> String {
    format!("p{pid}-{starttime}")
}

pub(super) fn parse_instance_id(id: &str) -> Option<(u32, u64)> {
    let (pid, starttime) = id.strip_prefix('p')?.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(starttime) {
        return None;
    }
    Some((pid.parse().ok()?, starttime.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
