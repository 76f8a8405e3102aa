//! `kill -9` of the agent in the middle of applying a commit: the restarted agent converges
//! to the commit with no duplicate or orphan process and a consistent store.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{docker_manifest, kill_fleet, pid_files, process_manifest, test_trust};
use crate::support::docker::{docker, docker_or_skip, example_image};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, eventually};

#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Process,
    Docker,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Docker => "docker",
        }
    }

    fn manifest(self, servers: &[(&str, &str)]) -> String {
        match self {
            Runtime::Process => process_manifest(servers),
            Runtime::Docker => docker_manifest(servers),
        }
    }
}

/// Containers of the agent whose data dir is `data`, with `version`, counted by label.
fn containers(data: &std::path::Path, version: &str, running_only: bool) -> usize {
    let Ok(owner) = std::fs::read_to_string(data.join("agent-id")) else {
        return 0;
    };
    let mut args = vec!["ps", "-q"];
    if !running_only {
        args.push("-a");
    }
    let owner = format!("label=io.mcp-orchestration.owner={}", owner.trim());
    let version = format!("label=io.mcp-orchestration.version={version}");
    args.extend(["--filter", &owner, "--filter", &version]);
    docker(&args).lines().count()
}

/// Instances with `version`, whatever the runtime: processes found in /proc, or containers.
fn instances(runtime: Runtime, data: &std::path::Path, version: &str) -> usize {
    match runtime {
        Runtime::Process => live_servers_with_version(version),
        Runtime::Docker => containers(data, version, false),
    }
}

struct AgentProcess {
    child: Child,
    url: String,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_agent(
    repo: &ManifestRepo,
    data: &std::path::Path,
    log: &str,
    runtime: Runtime,
) -> AgentProcess {
    start_agent_with_gateway(repo, data, log, runtime, None)
}

/// An agent whose gateway listens on `gateway` (a port), else on any free port.
fn start_agent_with_gateway(
    repo: &ManifestRepo,
    data: &std::path::Path,
    log: &str,
    runtime: Runtime,
    gateway: Option<u16>,
) -> AgentProcess {
    std::fs::create_dir_all(data).expect("data dir");
    let trust = data.join("../trust.yaml");
    let t = test_trust();
    std::fs::write(
        &trust,
        format!(
            "allowed_images: [\"mcp-orch-test/\"]\nallowed_commands: [\"{}\"]\n",
            t.allowed_commands[0]
        ),
    )
    .expect("trust policy");
    let port = free_port();
    let log = std::fs::File::create(data.join(format!("../{log}"))).expect("log file");
    let child = Command::new(BIN)
        .args([
            "agent",
            "--runtime",
            runtime.name(),
            "--poll-interval",
            "60s",
        ])
        // Not the default 127.0.0.1:7071: agents of tests running at once would share it.
        .env(
            "MCP_ORCHESTRATION_GATEWAY_LISTEN",
            format!("127.0.0.1:{}", gateway.unwrap_or(0)),
        )
        .arg("--repo")
        .arg(repo.remote())
        .arg("--data-dir")
        .arg(data)
        .arg("--trust-policy")
        .arg(&trust)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the agent starts");
    AgentProcess {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn get(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// Live example-server processes started with `--version` `version`, found in /proc.
fn live_servers_with_version(version: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Zombies have exited; they serve nothing.
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            state != Some('Z')
                && args.first().is_some_and(|a| a.ends_with(b"example-server"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--version" && w[1] == version.as_bytes())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_applying_then_restart_converges_without_duplicates() {
    kill_9_mid_apply(Runtime::Process).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_kill_9_in_the_middle_of_applying_then_restart_converges_without_duplicates() {
    if !docker_or_skip("docker_kill_9_in_the_middle_of_applying") {
        return;
    }
    example_image("7.0.0");
    example_image("7.1.0");
    kill_9_mid_apply(Runtime::Docker).await;
}

async fn kill_9_mid_apply(runtime: Runtime) {
    // Versions unique to this test, so concurrent tests' servers are not counted.
    let (old, new) = ("7.0.0", "7.1.0");
    let pid = std::process::id();
    let ids = ["a", "b", "c"].map(|s| format!("crash-{}-{s}-{pid}", runtime.name()));
    let servers = |v: &'static str| ids.iter().map(|i| (i.as_str(), v)).collect::<Vec<_>>();
    let repo = ManifestRepo::new();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _logs = LogsOnPanic(root.path().to_owned());
    // Declared after `root`, so it runs first on drop: the fleet dies even if we panic.
    let _fleet = FleetGuard(data.clone(), runtime);
    repo.push_manifest(&runtime.manifest(&servers(old)), "three servers");

    let agent = start_agent(&repo, &data, "agent1.log", runtime);
    eventually(Duration::from_secs(30), "three servers running", || async {
        let fleet = get(&format!("{}/servers", agent.url)).await?;
        let servers = fleet["servers"].as_array()?;
        (servers.len() == 3 && servers.iter().all(|s| s["state"] == "running")).then_some(())
    })
    .await;

    let commit = repo.push_manifest(&runtime.manifest(&servers(new)), "upgrade all three");
    // Kill the agent the moment the first new instance exists: mid-apply.
    eventually(
        Duration::from_secs(20),
        "a new instance to appear",
        || async {
            let count = match runtime {
                Runtime::Process => pid_files(&data)
                    .iter()
                    .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(new)))
                    .count(),
                Runtime::Docker => containers(&data, new, false),
            };
            (count >= 1).then_some(())
        },
    )
    .await;
    let mut agent = agent;
    agent.child.kill().expect("kill -9");
    agent.child.wait().expect("reaped");
    drop(agent);

    let agent = start_agent(&repo, &data, "agent2.log", runtime);
    let fleet = eventually(
        Duration::from_secs(30),
        "the fleet converged on the new commit",
        || async {
            let fleet = get(&format!("{}/servers", agent.url)).await?;
            let servers = fleet["servers"].as_array()?;
            (fleet["applied_revision"] == commit.as_str()
                && servers.len() == 3
                && servers
                    .iter()
                    .all(|s| s["state"] == "running" && s["running_version"] == new))
            .then_some(fleet)
        },
    )
    .await;
    eventually(Duration::from_secs(20), "old instances gone", || async {
        (instances(runtime, &data, old) == 0).then_some(())
    })
    .await;
    assert_eq!(
        instances(runtime, &data, new),
        3,
        "one instance per server, no orphans: {fleet}"
    );
    if runtime == Runtime::Process {
        assert_eq!(pid_files(&data).len(), 3);
    } else {
        assert_eq!(containers(&data, new, true), 3, "all three running");
    }

    // The store says what happened: the interrupted run, then the one that applied it.
    let runs = get(&format!("{}/revisions", agent.url)).await.unwrap();
    let results: Vec<(String, String)> = runs["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["commit_id"] == commit.as_str())
        .map(|r| {
            (
                r["result"].as_str().unwrap().to_owned(),
                r["trigger"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("applied".to_owned(), "startup".to_owned()),
            ("interrupted".to_owned(), "watch".to_owned())
        ]
    );
    drop(agent);
}

/// The gateway's client sessions outlive the agent: after `kill -9` and a restart on the
/// same data dir, a client's next request on its old session id is served (the session is
/// rebuilt from what the data dir kept), and an id the agent never signed is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_session_survives_kill_9_of_the_agent() {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let id = format!("crash-gw-{}", std::process::id());
    let repo = ManifestRepo::new();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _logs = LogsOnPanic(root.path().to_owned());
    let _fleet = FleetGuard(data.clone(), Runtime::Process);
    repo.push_manifest(&process_manifest(&[(&id, "7.2.0")]), "one server");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let agent = start_agent_with_gateway(&repo, &data, "agent1.log", Runtime::Process, Some(port));

    // A real client that does not start a new session by itself when the gateway forgets
    // its session (rmcp would, by default).
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
    config.reinit_on_expired_session = false;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(Duration::from_secs(30), "the gateway to listen", || async {
        http.get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let client = ()
        .serve(StreamableHttpClientTransport::with_client(
            http.clone(),
            config,
        ))
        .await
        .expect("a session with the gateway");
    let echo = format!("{id}_echo");
    let call = |text: &'static str| {
        let params = rmcp::model::CallToolRequestParams::new(echo.clone()).with_arguments(
            serde_json::json!({ "text": text })
                .as_object()
                .unwrap()
                .clone(),
        );
        let peer = client.peer().clone();
        async move { peer.call_tool(params).await }
    };
    let answer_text = |r: &rmcp::model::CallToolResult| {
        serde_json::to_value(&r.content).unwrap()[0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    eventually(
        Duration::from_secs(30),
        "a call through the gateway",
        || async {
            let r = call("before").await.ok()?;
            (answer_text(&r) == "before").then_some(())
        },
    )
    .await;
    // The same session, by hand, as a second client would hold it.
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "by-hand", "version": "0" } }
    });
    let opened = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(opened);
    let list = |session: String| {
        http.post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&serde_json::json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }))
            .send()
    };

    let mut agent = agent;
    agent.child.kill().expect("kill -9");
    agent.child.wait().expect("reaped");
    drop(agent);
    let _agent = start_agent_with_gateway(&repo, &data, "agent2.log", Runtime::Process, Some(port));
    eventually(
        Duration::from_secs(30),
        "the new agent's gateway",
        || async {
            http.get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    let listed = list(session.clone()).await.unwrap();
    assert_eq!(listed.status(), 200, "the old session id is served");
    let forged = format!("{}0", &session[..session.len() - 1]);
    let forged = if forged == session {
        format!("{}1", &session[..session.len() - 1])
    } else {
        forged
    };
    assert_eq!(
        list(forged).await.unwrap().status(),
        404,
        "a forged id is not"
    );
    eventually(
        Duration::from_secs(30),
        "the first client's calls to go through on its old session",
        || async {
            let r = call("after").await.ok()?;
            (answer_text(&r) == "after").then_some(())
        },
    )
    .await;
    assert!(!client.is_closed(), "the same client session throughout");
}

/// Kills every process, or removes every container, of the agent owning a data dir when
/// dropped, even during a panic.
struct FleetGuard(std::path::PathBuf, Runtime);

impl Drop for FleetGuard {
    fn drop(&mut self) {
        match self.1 {
            Runtime::Process => kill_fleet(&self.0),
            Runtime::Docker => {
                let Ok(owner) = std::fs::read_to_string(self.0.join("agent-id")) else {
                    return;
                };
                let filter = format!("label=io.mcp-orchestration.owner={}", owner.trim());
                let ids = docker(&["ps", "-aq", "--filter", &filter]);
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    docker(&args);
                }
            }
        }
    }
}

/// Prints the agents' logs when the test fails, since their temp dir goes with it.
struct LogsOnPanic(std::path::PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in ["agent1.log", "agent2.log"] {
                if let Ok(text) = std::fs::read_to_string(self.0.join(log)) {
                    eprintln!("--- {log}\n{text}");
                }
            }
        }
    }
}
