//! The process runtime against real child processes: the example server and `/bin/sh`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcp_orchestration::manifest::{ProcessSpec, RestartPolicy};
use mcp_orchestration::runtime::process::ProcessRuntime;
use mcp_orchestration::runtime::{
    Instance, InstanceSpec, InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind,
};
use semver::Version;
use tokio::sync::broadcast;

use crate::support::example_server_bin;

/// Generous, because a loaded CI machine can be slow to start a process; conditions are
/// polled, so a fast machine does not wait this long.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Field 22 of `/proc/<pid>/stat` and whether the process is a zombie, or `None` when the
/// pid is gone.
fn proc_start_and_zombie(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.get(19)?.parse().ok()?, *fields.first()? == "Z"))
}

/// `p<pid>-<starttime>` back into its parts.
fn parse_id(id: &str) -> (i32, u64) {
    let (pid, start) = id
        .strip_prefix('p')
        .and_then(|rest| rest.split_once('-'))
        .unwrap_or_else(|| panic!("instance id {id:?} is not p<pid>-<starttime>"));
    (
        pid.parse().expect("pid in the id"),
        start.parse().expect("start time in the id"),
    )
}

/// Whether the process behind instance `id` is still running (not a zombie).
fn is_alive(id: &str) -> bool {
    let (pid, start) = parse_id(id);
    matches!(proc_start_and_zombie(pid), Some((s, false)) if s == start)
}

/// Live (non-zombie) processes in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = text.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// SIGKILLs, on drop, every process group this test started, so a failing test leaves no
/// server behind. Each pid is checked against its start time first, so a pid that was
/// reused by an unrelated process is left alone.
#[derive(Default)]
struct Reaper {
    started: Mutex<Vec<String>>,
}

impl Reaper {
    fn track(&self, instance: &Instance) {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance.id.clone());
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            let (pid, start) = parse_id(&id);
            if pid <= 1 || proc_start_and_zombie(pid).map(|(s, _)| s) != Some(start) {
                continue;
            }
            // SAFETY: kill(2) touches no memory; pid > 1 was checked and its start time
            // matches the process this test started, which leads its own process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

struct Env {
    // Declared first so it is dropped before the temporary directory is deleted.
    reaper: Reaper,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            reaper: Reaper::default(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.data_dir()).expect("process runtime")
    }

    fn pid_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.data_dir().join("processes"))
            .expect("processes dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        files
    }

    async fn start(&self, runtime: &ProcessRuntime, spec: &InstanceSpec) -> Instance {
        let instance = runtime.start(spec).await.expect("start");
        self.reaper.track(&instance);
        instance
    }
}

fn spec(server: &str, version: &str, command: &str, args: &[&str]) -> InstanceSpec {
    InstanceSpec {
        server_id: server.to_owned(),
        version: Version::parse(version).expect("version"),
        revision: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        spec_hash: format!("hash-{server}-{version}"),
        host_port: None,
        env: BTreeMap::new(),
        restart_policy: RestartPolicy::OnFailure,
        docker: None,
        process: Some(ProcessSpec {
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
        }),
    }
}

fn example_spec(server: &str, version: &str) -> InstanceSpec {
    let bin = example_server_bin();
    spec(
        server,
        version,
        bin.to_str().expect("utf-8 path"),
        &["--port", "{port}", "--version", "{version}"],
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// Waits until the server at `instance` answers `/health`, and returns the body.
async fn wait_healthy(instance: &Instance) -> serde_json::Value {
    let url = format!("{}/health", instance.base_url().expect("a port"));
    let client = http();
    wait_for("/health to answer 200", DEADLINE, || {
        let (client, url) = (&client, &url);
        async move {
            let response = client.get(url).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            response.json::<serde_json::Value>().await.ok()
        }
    })
    .await
}

/// The next event about instance `id`, or a panic after `timeout`.
async fn next_event_for(
    events: &mut broadcast::Receiver<RuntimeEvent>,
    id: &str,
    timeout: Duration,
) -> RuntimeEvent {
    tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(event) if event.instance_id == id => break event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(err) => panic!("event channel: {err}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event for {id} within {timeout:?}"))
}

/// SIGKILLs the process behind instance `id` (not its group: only the server dies, as in
/// a crash).
fn sigkill(id: &str) {
    let (pid, start) = parse_id(id);
    assert!(pid > 1, "pid {pid}");
    assert_eq!(
        proc_start_and_zombie(pid).map(|(s, _)| s),
        Some(start),
        "{id} is still the process the test started"
    );
    // SAFETY: kill(2) touches no memory; pid > 1 and its start time matches the process
    // this test started.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

async fn listed(runtime: &ProcessRuntime, id: &str) -> Option<Instance> {
    runtime
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|i| i.id == id)
}

#[tokio::test(flavor = "multi_thread")]
async fn process_start_serves_health_on_the_substituted_port() {
    let env = Env::new();
    let runtime = env.runtime();
    let instance = env.start(&runtime, &example_spec("echo", "1.2.3")).await;

    assert!(instance.is_running());
    assert_eq!(instance.server_id, "echo");
    assert_eq!(instance.version, Version::new(1, 2, 3));
    let port = instance.host_port.expect("a port was picked");
    assert!(instance.id.starts_with('p'), "{}", instance.id);

    let body = wait_healthy(&instance).await;
    assert_eq!(body["version"], "1.2.3");
    assert_eq!(body["status"], "healthy");

    let files = env.pid_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some(format!("echo--{}.json", instance.id).as_str())
    );
    let pid_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("pid file")).expect("json");
    let (pid, start) = parse_id(&instance.id);
    assert_eq!(pid_file["pid"], pid);
    assert_eq!(pid_file["starttime"], start);
    assert_eq!(pid_file["server_id"], "echo");
    assert_eq!(pid_file["version"], "1.2.3");
    assert_eq!(pid_file["revision"], instance.revision);
    assert_eq!(pid_file["spec_hash"], "hash-echo-1.2.3");
    assert_eq!(pid_file["host_port"], port);
    assert_eq!(pid_file["exit_code"], serde_json::Value::Null);
    let command: Vec<&str> = pid_file["command"]
        .as_array()
        .expect("command line")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        command[1..],
        ["--port", &port.to_string(), "--version", "1.2.3"]
    );
    let started_at = pid_file["started_at"].as_str().expect("started_at");
    assert!(
        started_at.parse::<jiff::Timestamp>().is_ok(),
        "{started_at}"
    );
    let log_path = PathBuf::from(pid_file["log_path"].as_str().expect("log_path"));
    assert_eq!(
        log_path,
        env.data_dir()
            .join("logs")
            .join("echo")
            .join(format!("{}.log", instance.id))
    );

    let tail = wait_for("the start-up line in the log", DEADLINE, || async {
        let tail = runtime.logs_tail(&instance.id, 20).await.expect("logs");
        tail.contains("listening").then_some(tail)
    })
    .await;
    assert!(tail.contains(&format!("127.0.0.1:{port}")), "{tail}");

    let listed = listed(&runtime, &instance.id).await.expect("listed");
    assert_eq!(listed.state, InstanceState::Running);
    assert_eq!(listed.host_port, Some(port));

    runtime
        .stop(&instance.id, Duration::from_secs(5))
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_env_is_clean_and_substituted() {
    const SECRET: &str = "MCP_TEST_SECRET_SHOULD_NOT_LEAK";
    // SAFETY: Rust's own environment accesses (std::env, Command::spawn) take std's
    // environment lock, and no test in this binary reads this variable; it exists only
    // so the child's environment can be shown not to contain it.
    unsafe { std::env::set_var(SECRET, "1") };

    let env = Env::new();
    let runtime = env.runtime();
    let mut spec = spec("envy", "2.0.1", "/bin/sh", &["-c", "env; exec sleep 30"]);
    spec.env = BTreeMap::from([
        ("FROM_MANIFEST".to_owned(), "v{version}".to_owned()),
        ("SHARED".to_owned(), "manifest".to_owned()),
    ]);
    spec.process.as_mut().expect("process block").env = BTreeMap::from([
        ("LISTEN".to_owned(), "127.0.0.1:{port}".to_owned()),
        ("SHARED".to_owned(), "process".to_owned()),
    ]);
    let instance = env.start(&runtime, &spec).await;
    let port = instance.host_port.expect("port");

    let log = wait_for("the environment in the log", DEADLINE, || async {
        let log = runtime.logs_tail(&instance.id, 1000).await.expect("logs");
        log.contains("LISTEN=").then_some(log)
    })
    .await;
    let vars: BTreeMap<&str, &str> = log.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("FROM_MANIFEST"), Some(&"v2.0.1"), "{log}");
    assert_eq!(
        vars.get("LISTEN"),
        Some(&format!("127.0.0.1:{port}").as_str()),
        "{log}"
    );
    assert_eq!(
        vars.get("SHARED"),
        Some(&"process"),
        "the process block wins: {log}"
    );
    assert!(
        !log.contains(SECRET),
        "the agent's environment leaked: {log}"
    );
    if let Some(path) = std::env::var_os("PATH") {
        assert_eq!(vars.get("PATH").copied(), path.to_str(), "{log}");
    }
    // Nothing else from the agent gets through; the shell adds a few of its own.
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "FROM_MANIFEST",
        "LISTEN",
        "SHARED",
        // The start's nonce, by which a crashed agent's unrecorded children are found.
        mcp_orchestration::runtime::process::NONCE_ENV,
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    for name in vars.keys() {
        assert!(allowed.contains(name), "unexpected variable {name}: {log}");
    }

    runtime.remove(&instance.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_stop_sends_sigterm_then_sigkill() {
    let env = Env::new();
    let runtime = env.runtime();

    // Ignores SIGTERM, and so does the `sleep` it forks (an ignored signal stays ignored
    // across exec): only the SIGKILL after the grace ends the group.
    let stubborn = env
        .start(
            &runtime,
            &spec(
                "stubborn",
                "1.0.0",
                "/bin/sh",
                &["-c", "trap '' TERM; echo trapped; sleep 60; echo done"],
            ),
        )
        .await;
    let (pgid, _) = parse_id(&stubborn.id);
    // The trap must be in place before the SIGTERM, or the shell would just die of it.
    wait_for("the trap to be set", DEADLINE, || async {
        let log = runtime.logs_tail(&stubborn.id, 10).await.expect("logs");
        (log.contains("trapped") && group_members(pgid).len() >= 2).then_some(())
    })
    .await;

    let grace = Duration::from_millis(700);
    let started = Instant::now();
    runtime.stop(&stubborn.id, grace).await.expect("stop");
    let took = started.elapsed();
    assert!(
        took >= grace,
        "stop returned after {took:?}, before the grace"
    );
    assert!(!is_alive(&stubborn.id));
    wait_for("the whole group to be gone", DEADLINE, || async {
        group_members(pgid).is_empty().then_some(())
    })
    .await;
    let state = listed(&runtime, &stubborn.id).await.expect("listed").state;
    assert!(
        matches!(state, InstanceState::Exited { .. }),
        "after SIGKILL: {state:?}"
    );
    // Stopping again is fine.
    runtime
        .stop(&stubborn.id, grace)
        .await
        .expect("stop an exited instance");

    let server = env.start(&runtime, &example_spec("polite", "1.0.0")).await;
    wait_healthy(&server).await;
    let started = Instant::now();
    runtime
        .stop(&server.id, Duration::from_secs(10))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a server that honours SIGTERM took {took:?}"
    );
    assert!(!is_alive(&server.id));
    let state = wait_for("the exit to be recorded", DEADLINE, || async {
        match listed(&runtime, &server.id).await?.state {
            state @ InstanceState::Exited { code: Some(_) } => Some(state),
            _ => None,
        }
    })
    .await;
    assert_eq!(state, InstanceState::Exited { code: Some(0) });
}

#[tokio::test(flavor = "multi_thread")]
async fn process_list_readopts_after_runtime_restart() {
    let env = Env::new();
    let mut spec = example_spec("adopted", "3.1.4");
    spec.revision = "feedfacefeedfacefeedfacefeedfacefeedface".to_owned();
    let first = env.runtime();
    let instance = env.start(&first, &spec).await;
    wait_healthy(&instance).await;
    drop(first);

    let second = env.runtime();
    let instances = second.list().await.expect("list");
    assert_eq!(instances.len(), 1, "{instances:?}");
    let adopted = &instances[0];
    assert_eq!(adopted.id, instance.id);
    assert_eq!(adopted.state, InstanceState::Running);
    assert_eq!(adopted.server_id, "adopted");
    assert_eq!(adopted.version, Version::new(3, 1, 4));
    assert_eq!(adopted.revision, spec.revision);
    assert_eq!(adopted.spec_hash, spec.spec_hash);
    assert_eq!(adopted.host_port, instance.host_port);
    assert_eq!(adopted.started_at, instance.started_at);
    assert!(
        second
            .logs_tail(&adopted.id, 5)
            .await
            .expect("logs")
            .contains("listening")
    );

    second
        .stop(&adopted.id, Duration::from_secs(5))
        .await
        .expect("stop through the new runtime");
    assert!(!is_alive(&adopted.id));
    let state = listed(&second, &adopted.id).await.expect("listed").state;
    assert!(matches!(state, InstanceState::Exited { .. }), "{state:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_exit_is_reported() {
    let env = Env::new();
    let runtime = env.runtime();
    let mut events = runtime.subscribe();
    let instance = env.start(&runtime, &example_spec("crashy", "1.0.0")).await;
    wait_healthy(&instance).await;

    let url = format!("{}/admin/exit/3", instance.base_url().expect("port"));
    let response = http().post(&url).send().await.expect("POST /admin/exit/3");
    assert_eq!(response.status(), 200);

    let exit = next_event_for(&mut events, &instance.id, DEADLINE).await;
    assert_eq!(exit.server_id, "crashy");
    assert_eq!(exit.kind, RuntimeEventKind::Exited { code: Some(3) });
    let listed = listed(&runtime, &instance.id).await.expect("listed");
    assert_eq!(listed.state, InstanceState::Exited { code: Some(3) });

    // The pid file records it too, for an agent that restarts later.
    let pid_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.pid_files()[0]).expect("pid file"))
            .expect("json");
    assert_eq!(pid_file["exit_code"], 3);
    let restarted = env.runtime();
    let relisted = restarted.list().await.expect("list");
    assert_eq!(relisted[0].state, InstanceState::Exited { code: Some(3) });
}

#[tokio::test(flavor = "multi_thread")]
async fn process_exit_is_reported_through_subscribe() {
    let env = Env::new();
    let runtime = env.runtime();
    let mut events = runtime.subscribe();
    let instance = env.start(&runtime, &example_spec("killed", "1.0.0")).await;
    wait_healthy(&instance).await;

    sigkill(&instance.id);
    let killed = Instant::now();
    let event = next_event_for(&mut events, &instance.id, DEADLINE).await;
    let took = killed.elapsed();

    assert_eq!(event.server_id, "killed");
    assert_eq!(
        event.kind,
        RuntimeEventKind::Exited { code: Some(137) },
        "SIGKILL reads as 128 + 9"
    );
    assert!(
        took < Duration::from_secs(1),
        "the exit was reported {took:?} after the kill"
    );
    let state = listed(&runtime, &instance.id).await.expect("listed").state;
    assert_eq!(state, InstanceState::Exited { code: Some(137) });
}

#[tokio::test(flavor = "multi_thread")]
async fn process_exit_of_an_adopted_instance_is_reported() {
    let env = Env::new();
    let first = env.runtime();
    let instance = env.start(&first, &example_spec("orphaned", "1.0.0")).await;
    let bystander = env.start(&first, &example_spec("bystander", "1.0.0")).await;
    wait_healthy(&instance).await;
    wait_healthy(&bystander).await;
    drop(first);

    // As after an agent restart: the processes are not this runtime's children.
    let second = env.runtime();
    let mut events = second.subscribe();
    sigkill(&instance.id);
    let killed = Instant::now();
    let event = next_event_for(&mut events, &instance.id, DEADLINE).await;
    let took = killed.elapsed();

    assert_eq!(event.server_id, "orphaned");
    assert_eq!(
        event.kind,
        RuntimeEventKind::Exited { code: None },
        "only a parent learns the code"
    );
    assert!(
        took < Duration::from_secs(2),
        "the adopted instance's exit was reported {took:?} after the kill"
    );
    let state = listed(&second, &instance.id).await.expect("listed").state;
    assert!(matches!(state, InstanceState::Exited { .. }), "{state:?}");

    // The instance that still runs is still watched: its stop through the new runtime is
    // reported too, and the dead one is not reported again in between.
    second
        .stop(&bystander.id, Duration::from_secs(5))
        .await
        .expect("stop the other adopted instance");
    let mut between = Vec::new();
    let next = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.expect("event channel");
            if event.instance_id == bystander.id {
                break event;
            }
            between.push(event);
        }
    })
    .await
    .expect("the stop is reported");
    assert_eq!(next.kind, RuntimeEventKind::Exited { code: None });
    assert!(between.is_empty(), "reported once: {between:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_missing_command_is_a_start_error() {
    let env = Env::new();
    let runtime = env.runtime();

    let err = runtime
        .start(&spec("ghost", "1.0.0", "/nonexistent/bin/server", &[]))
        .await
        .expect_err("a missing command cannot start");
    match &err {
        RuntimeError::Start {
            server, message, ..
        } => {
            assert_eq!(server, "ghost");
            assert!(message.contains("/nonexistent/bin/server"), "{message}");
            assert!(message.contains("No such file"), "{message}");
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(env.pid_files(), Vec::<PathBuf>::new());
    let leftover: Vec<_> = std::fs::read_dir(env.data_dir().join("logs").join("ghost"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftover.is_empty(), "{leftover:?}");

    let mut no_process = spec("ghost", "1.0.0", "/bin/true", &[]);
    no_process.process = None;
    let err = runtime
        .start(&no_process)
        .await
        .expect_err("no process block");
    assert!(
        matches!(&err, RuntimeError::Start { message, .. } if message.contains("process")),
        "{err}"
    );
    assert!(runtime.list().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn process_remove_is_idempotent() {
    let env = Env::new();
    let runtime = env.runtime();
    let instance = env.start(&runtime, &example_spec("tidy", "1.0.0")).await;
    wait_healthy(&instance).await;
    let log = env
        .data_dir()
        .join("logs")
        .join("tidy")
        .join(format!("{}.log", instance.id));

    // Removing a running instance stops it first.
    runtime.remove(&instance.id).await.expect("remove");
    assert!(!is_alive(&instance.id));
    assert_eq!(env.pid_files(), Vec::<PathBuf>::new());
    assert!(runtime.list().await.expect("list").is_empty());
    assert!(log.exists(), "the log is history and stays");
    assert!(
        runtime
            .logs_tail(&instance.id, 5)
            .await
            .expect("logs after remove")
            .contains("listening")
    );

    runtime.remove(&instance.id).await.expect("remove again");
    runtime
        .remove("p999999999-1")
        .await
        .expect("remove an unknown id");
    runtime.remove("not-an-id").await.expect("remove garbage");
    assert!(matches!(
        runtime.stop(&instance.id, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        runtime.logs_tail("p999999999-1", 5).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn process_fixed_port_is_used_and_a_taken_one_is_a_start_error() {
    let env = Env::new();
    let runtime = env.runtime();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let mut busy = example_spec("fixed", "1.0.0");
    busy.host_port = Some(taken_port);
    let err = runtime.start(&busy).await.expect_err("the port is taken");
    assert!(
        matches!(&err, RuntimeError::Start { message, .. } if message.contains(&taken_port.to_string())),
        "{err}"
    );
    assert_eq!(env.pid_files(), Vec::<PathBuf>::new());

    drop(taken);
    let instance = env.start(&runtime, &busy).await;
    assert_eq!(instance.host_port, Some(taken_port));
    wait_healthy(&instance).await;
    runtime.remove(&instance.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_a_child_a_crashed_agent_never_recorded_is_killed_on_the_next_list() {
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().expect("data dir");
    let runtime = ProcessRuntime::new(data.path()).expect("runtime");
    // A dead "agent": a process that has exited and been reaped.
    let mut dead = std::process::Command::new("/bin/true")
        .spawn()
        .expect("true");
    let dead_pid = dead.id();
    dead.wait().expect("reaped");
    // What that agent left: an intent, and a child it spawned but never wrote a pid file for.
    let nonce = format!("crashed-{}", std::process::id());
    std::fs::write(
        data.path()
            .join("processes")
            .join(format!(".intent-{nonce}")),
        format!(r#"{{"agent_pid":{dead_pid},"nonce":"{nonce}","server_id":"orphan"}}"#),
    )
    .expect("intent");
    let mut orphan = std::process::Command::new("/bin/sleep")
        .arg("60")
        .env(mcp_orchestration::runtime::process::NONCE_ENV, &nonce)
        .process_group(0)
        .spawn()
        .expect("sleep");

    assert!(
        runtime.list().await.expect("list").is_empty(),
        "an unrecorded child is not an instance"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = orphan.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        !data
            .path()
            .join("processes")
            .join(format!(".intent-{nonce}"))
            .exists(),
        "the stale intent is cleaned up"
    );
}
