//! Starting one instance: the port, the command line and environment (substituted, checked
//! against the trust policy once more), the spawn in its own process group with its output
//! in a log file, the start intent and pid file around the spawn, and the task that reaps
//! the child and records its exit.
//!
//! Never leaves a spawned process without a pid file: if one cannot be written, the child
//! is killed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, PoisonError};

use jiff::Timestamp;
use tracing::{Instrument, Span, info, warn};

use super::logs::open_log;
use super::pidfile::{
    ExitRecord, INTENT_PREFIX, Intent, NONCE_ENV, PidFile, instance_id, read_pid_file,
    remove_quietly, unique_suffix, write_atomically,
};
use super::procfs::{proc_stat, signal_instance};
use super::{ProcessRuntime, Shared};
use crate::runtime::{
    Instance, InstanceSpec, InstanceState, RuntimeError, RuntimeEvent, RuntimeEventKind,
};

/// Variables taken from the agent's own environment. Nothing else is inherited, so the
/// agent's secrets (registry tokens, webhook secrets, ...) never reach a server that was
/// not given them explicitly.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

impl ProcessRuntime {
    pub(super) async fn start_inner(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
