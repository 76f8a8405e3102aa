//! Regression tests for what a new user and an outside attack ran into (issue 10, items
//! 18-25), each named after what it prevents. Real binaries, real git, real HTTP.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{Options, TestAgent, kill_fleet, process_manifest};
use crate::support::docker::free_port;
use crate::support::{BIN, REPO, eventually, stderr};

/// The binary with `args`, with none of the caller's `MCP_ORCHESTRATION_*` settings, so
/// only what a test passes decides where the CLI looks.
fn cli(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    without_settings(&mut command)
        .args(args)
        .env("NO_COLOR", "1");
    command
}

/// The quickstart, run as a user would, in its own process group so that it (the agent it
/// `exec`s) can be stopped; the fleet it started is killed too.
struct Quickstart {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the process group this test created for the quickstart.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        kill_fleet(&self.dir.path().join("qs/data"));
    }
}

/// Removes the caller's `MCP_ORCHESTRATION_*` settings from `command`.
fn without_settings(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MCP_ORCHESTRATION_") {
            command.env_remove(name);
        }
    }
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_prints_the_environment_that_lets_the_cli_change_things() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut command = tokio::process::Command::new("bash");
    without_settings(&mut command)
        .arg(Path::new(REPO).join("examples/quickstart.sh"))
        .env("QUICKSTART_DIR", dir.path().join("qs"))
        .env("QUICKSTART_LISTEN", &listen)
        // Not the default 127.0.0.1:7071, which an agent of the developer's may hold.
        .env("MCP_ORCHESTRATION_GATEWAY_LISTEN", "127.0.0.1:0")
        // A fresh home: the CLI's default data dir holds no key of any other agent.
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("quickstart.log")).unwrap(),
        ))
        .process_group(0);
    let mut child = command.spawn().expect("bash runs the quickstart");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let qs = Quickstart { child, dir };
    let log = || std::fs::read_to_string(qs.dir.path().join("quickstart.log")).unwrap_or_default();

    // What the quickstart tells the user to do, up to the agent's start (it builds first).
    let mut printed = Vec::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let last = line.contains("status hello");
            printed.push(line);
            if last {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .is_err()
    {
        panic!(
            "the quickstart printed its instructions within 300 s:\n{}",
            log()
        );
    }
    let text = printed.join("\n");
    let exports: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("export "))
        .collect();
    assert!(
        exports
            .iter()
            .any(|l| l.starts_with("export MCP_ORCHESTRATION_DATA_DIR=")),
        "the quickstart says where the agent's data dir (and key) is:\n{text}\n{}",
        log()
    );

    // The agent is up and the example server runs.
    let url = format!("http://{listen}");
    eventually(Duration::from_secs(60), "hello to run", || async {
        let hello: Value = reqwest::get(format!("{url}/servers/hello"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (hello["state"] == "running").then_some(())
    })
    .await;

    // In "another terminal": the printed exports, then a command that changes something.
    let script = format!("{}\nmcp-orchestration deploy hello", exports.join("\n"));
    let deploy = without_settings(&mut tokio::process::Command::new("bash"))
        .args(["-c", &script])
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(
        deploy.status.success(),
        "deploy with the quickstart's environment:\n{}",
        stderr(&deploy)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_cli_says_which_data_dir_it_read_the_key_from() {
    let repo = crate::support::git::ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().display().to_string();

    // No key in that data dir: the message names the file and how to point elsewhere.
    let out = cli(&[
        "deploy",
        "nope",
        "--agent-url",
        &agent.url,
        "--data-dir",
        &dir,
    ])
    .output()
    .await
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains(&format!("{dir}/api-key")), "{err}");
    assert!(err.contains("MCP_ORCHESTRATION_DATA_DIR"), "{err}");

    // Another agent's key in it: refused, and the message says which file it came from.
    std::fs::write(elsewhere.path().join("api-key"), "mcpo_not_this_agents\n").unwrap();
    let out = cli(&["deploy", "nope", "--agent-url", &agent.url])
        .env("MCP_ORCHESTRATION_DATA_DIR", &dir)
        .output()
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("the key in {dir}/api-key")), "{err}");
    assert!(err.contains("MCP_ORCHESTRATION_DATA_DIR"), "{err}");
}

/// Runs the binary with `args` and a stdout whose reader is already gone (`| head` after
/// it had enough), within a deadline; returns the exit code and stderr.
async fn with_closed_stdout(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // Not `output()`, which would capture stdout in a pipe of its own.
    let child = cli(args)
        .current_dir(dir)
        .stdout(writer)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} with a closed stdout exits within 30 s"))
        .unwrap();
    (out.status.code(), stderr(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_the_cli_quietly_with_its_usual_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ecosystem-manifest.yaml"),
        "version: \"1.1\"\nservers:\n  - id: Bad_Id\n    version: one\n",
    )
    .unwrap();
    let repo = crate::support::git::ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;

    let url = agent.url.as_str();
    for (args, code) in [
        (vec!["validate", "--output", "json"], 1),
        (vec!["validate"], 1),
        (vec!["schema"], 0),
        (vec!["--help"], 0),
        (vec!["status", "--agent-url", url], 0),
        (vec!["revisions", "--agent-url", url], 0),
        (vec!["events", "--agent-url", url], 0),
        // It would follow for ever; with nobody reading it ends.
        (vec!["events", "--follow", "--agent-url", url], 0),
    ] {
        let (got, err) = with_closed_stdout(&args, dir.path()).await;
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?} says nothing about the closed pipe");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repo_path_that_does_not_exist_stops_the_agent_at_start_instead_of_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-manifest.git");
    let data = dir.path().join("data");
    let agent = cli(&[
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ])
    .arg("--repo")
    .arg(&missing)
    .arg("--data-dir")
    .arg(&data)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), agent.wait_with_output())
        .await
        .expect("the agent gives up at once rather than retrying for ever")
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} does not exist", missing.display())),
        "{err}"
    );
    assert!(!err.contains("unsupported URL protocol"), "{err}");
}

/// An agent with no servers, for the tests of its interfaces.
async fn empty_agent() -> (crate::support::git::ManifestRepo, TestAgent) {
    let repo = crate::support::git::ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    (repo, agent)
}

/// `mcp-orchestration mcp` towards `agent_url`, with `key` (or none).
fn stdio_bridge(agent_url: &str, key: Option<&str>, data_dir: &Path) -> tokio::process::Command {
    let mut command = cli(&["mcp", "--agent-url", agent_url]);
    command
        .env("MCP_ORCHESTRATION_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("MCP_ORCHESTRATION_API_KEY", key);
    }
    command
}

/// Whether `text` names a Rust type or path (`rmcp::transport::…`, `WorkerTransport<…>`).
fn names_rust_types(text: &str) -> bool {
    text.contains("::") || text.contains("WorkerTransport")
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_type_names_do_not_leak_into_the_stdio_bridges_errors() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientConfig};
    let (_repo, agent) = empty_agent().await;
    let empty = tempfile::tempdir().unwrap();

    // A refused key: stderr says so in words.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        stdio_bridge(&agent.url, Some("wrong-key"), empty.path()).output(),
    )
    .await
    .expect("the bridge gives up within 20 s")
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let message = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("an error line: {err}"));
    assert!(message.contains("the API key is not valid"), "{message}");
    assert!(!names_rust_types(message), "{message}");

    // A tool called after the agent went away: the result says so in words.
    let mut child = stdio_bridge(
        &agent.url,
        Some(crate::support::agent::TEST_API_KEY),
        empty.path(),
    )
    .spawn()
    .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut logs = tokio::io::BufReader::new(child.stderr.take().unwrap());
    tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut logs, &mut sink).await;
    });
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        ClientConfig::default().serve((stdout, stdin)),
    )
    .await
    .expect("the bridge answers within 20 s")
    .expect("an MCP session over stdio");
    let _data = agent.stop().await;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        client.call_tool(CallToolRequestParams::new("list_servers")),
    )
    .await
    .expect("the bridge answers within 30 s")
    .expect("a tool result, not a protocol error");
    assert_eq!(result.is_error, Some(true));
    let text = &result.content[0].as_text().unwrap().text;
    assert!(text.starts_with("AGENT_UNREACHABLE: "), "{text}");
    assert!(!names_rust_types(text), "{text}");
    let _ = client.cancel().await;
    // Closing stdin ends the bridge; waiting for it keeps kill_on_drop from killing it while
    // it exits (under coverage, while it writes its profile: a truncated one fails the run).
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_argument_errors_carry_the_documented_error_code() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientConfig};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let (_repo, agent) = empty_agent().await;
    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", agent.url))
                .auth_header(crate::support::agent::TEST_API_KEY),
        ))
        .await
        .unwrap();
    for (tool, args, says) in [
        (
            "server_status",
            serde_json::json!({}),
            "missing field `server_id`",
        ),
        (
            "rollout_history",
            serde_json::json!({ "server_id": "a", "limit": -1 }),
            "expected a non-negative integer",
        ),
    ] {
        let params =
            CallToolRequestParams::new(tool).with_arguments(args.as_object().unwrap().clone());
        let r = client.call_tool(params).await.unwrap();
        assert_eq!(r.is_error, Some(true), "{tool}: {r:?}");
        let text = &r.content[0].as_text().unwrap().text;
        assert!(text.starts_with("VALIDATION_FAILED: "), "{tool}: {text}");
        assert!(text.contains(says), "{tool}: {text}");
        assert!(!names_rust_types(text), "{tool}: {text}");
        assert_eq!(
            r.structured_content.as_ref().unwrap()["error"]["code"],
            "VALIDATION_FAILED",
            "{tool}: {r:?}"
        );
    }
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_valid_key_is_challenged_with_www_authenticate() {
    let (_repo, agent) = empty_agent().await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::POST, "/mcp"),
        (reqwest::Method::GET, "/mcp"),
        (reqwest::Method::POST, "/servers/x/deploy"),
    ] {
        for key in [None, Some("wrong-key")] {
            let mut request = http.request(method.clone(), format!("{}{path}", agent.url));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
            let challenge = r
                .headers()
                .get("www-authenticate")
                .unwrap_or_else(|| panic!("{method} {path} {key:?}: no WWW-Authenticate"))
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            assert_eq!(
                challenge.contains(r#"error="invalid_token""#),
                key.is_some(),
                "{challenge}"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_an_mcp_session_is_not_answered_as_merely_accepted() {
    let (_repo, agent) = empty_agent().await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", agent.url);
    let key = crate::support::agent::TEST_API_KEY;
    let init = http
        .post(&url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "test", "version": "1" },
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(init);
    let end = http
        .delete(&url)
        .bearer_auth(key)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(
        end.status() == 200 || end.status() == 204,
        "the session ended: {}",
        end.status()
    );
    // It is gone: the session id no longer works.
    let again = http
        .post(&url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&serde_json::json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "the ended session is unknown");
}

/// A manifest whose second line holds a Latin-1 `é` (0xe9): not UTF-8.
const LATIN1_MANIFEST: &[u8] = b"version: \"1.1\"\nservers: [] # caf\xe9\n";
const LATIN1_ERROR: &str = "ecosystem-manifest.yaml:2:18: error: not UTF-8 text: byte 0xe9 at \
                            offset 32 (line 2, column 18) is not valid UTF-8; save the file as UTF-8";

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_is_not_utf8_is_invalid_not_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ecosystem-manifest.yaml"), LATIN1_MANIFEST).unwrap();
    let out = cli(&["validate"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let text = crate::support::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.lines().any(|l| l == LATIN1_ERROR), "{text}");

    let out = cli(&["validate", "--output", "json"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json[0]["line"], &json[0]["column"], &json[0]["severity"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(18),
            &serde_json::json!("error")
        )
    );

    // The agent's validate stage rejects such a commit like any other invalid one.
    let repo = crate::support::git::ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;
    std::fs::write(repo.work().join("ecosystem-manifest.yaml"), LATIN1_MANIFEST).unwrap();
    repo.git(&["commit", "-qam", "saved as Latin-1"]);
    repo.git(&["push", "-q", "origin", "HEAD:main"]);
    let bad = repo.git(&["rev-parse", "HEAD"]);
    let run = eventually(Duration::from_secs(20), "the rejected run", || async {
        let (status, run) = agent.get(&format!("/revisions/{bad}")).await;
        (status == 200 && run["result"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["result"], "rejected", "{run}");
    let error = &run["errors"][0];
    assert_eq!(
        (&error["line"], &error["column"]),
        (&serde_json::json!(2), &serde_json::json!(18)),
        "{run}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("offset 32"),
        "{run}"
    );
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap()
}

#[test]
fn the_license_cargo_toml_names_ships_with_the_source() {
    let cargo = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).unwrap();
    assert!(cargo.contains("license = \"Apache-2.0\""));
    let license = std::fs::read_to_string(Path::new(REPO).join("LICENSE"))
        .expect("a LICENSE file beside Cargo.toml");
    for part in [
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
    ] {
        assert!(license.contains(part), "LICENSE lacks {part:?}");
    }
}

#[test]
fn the_readme_installs_the_binary_and_its_snippets_survive_a_cd() {
    let text = readme();
    assert!(
        text.contains("cargo install --locked --path ."),
        "hooks and desktop clients need the binary on PATH: the README says how"
    );
    // In every shell snippet, a relative `target/...` binary only works before a `cd`.
    let mut in_sh = false;
    let mut moved = false;
    for (n, line) in text.lines().enumerate() {
        let code = line.split('#').next().unwrap_or("").trim();
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            moved = false;
        } else if in_sh {
            moved |= code.starts_with("cd ");
            assert!(
                !(moved && code.starts_with("target/")),
                "README.md:{}: `{code}` after a `cd` names a relative binary",
                n + 1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_names_the_trigger_a_restart_is_recorded_with() {
    let repo = crate::support::git::ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("again", "1.0.0")]), "one server");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent
        .wait_running("again", "1.0.0", Duration::from_secs(20))
        .await;
    let r = reqwest::Client::new()
        .post(format!("{}/servers/again/restart", agent.url))
        .bearer_auth(crate::support::agent::TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let trigger = eventually(Duration::from_secs(20), "the restart's rollout", || async {
        let (_, v) = agent.get("/servers/again/rollouts").await;
        let rollouts = v["rollouts"].as_array()?;
        (rollouts.len() >= 2).then(|| rollouts[0]["trigger"].as_str().unwrap().to_owned())
    })
    .await;

    // The README's list of rollout triggers, from its **History.** item.
    let text = readme();
    let history = text
        .split("**History.**")
        .nth(1)
        .and_then(|rest| rest.split("from → to version").next())
        .expect("the README's History item");
    assert!(
        history.contains(&format!("`{trigger}`")),
        "a restart is recorded with trigger `{trigger}`, which the README's History does not name: {history}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_json_answer_matches_the_schema_the_api_documents() {
    let repo = crate::support::git::ManifestRepo::new();
    let waiting = "  - id: waiting\n    version: \"1.0.0\"\n    process: { command: /bin/true }\n    config_requirements:\n      - { name: NEVER_GIVEN, secret: true }\n";
    let manifest = format!("{}{waiting}", process_manifest(&[("watched", "1.0.0")]));
    let commit = repo.push_manifest(&manifest, "one server that runs, one that cannot");
    let mut trust = crate::support::agent::test_trust();
    trust.allowed_commands.push("/bin".into());
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            trust: Some(trust),
            // Client configurations point at the gateway.
            gateway: true,
            ..Options::default()
        },
    )
    .await;
    agent
        .wait_running("watched", "1.0.0", Duration::from_secs(20))
        .await;
    // A published configuration, for the artifact routes.
    let (status, _) = agent
        .call(reqwest::Method::POST, "/v1/keys/initialize", None)
        .await;
    assert_eq!(status, 200);
    let (status, published) = agent
        .call(
            reqwest::Method::POST,
            "/v1/config/cursor/default/publish",
            None,
        )
        .await;
    assert_eq!(status, 201, "{published}");
    let artifact = published["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "watched to be healthy", || async {
        let (_, h) = agent.get("/servers/watched/health").await;
        (h["state"] == "healthy").then_some(())
    })
    .await;
    let (_, waiting) = agent.get("/servers/waiting").await;
    assert_ne!(waiting["state"], "running", "{waiting}");
    let (_, rollouts) = agent.get("/servers/watched/rollouts").await;
    let rollout = rollouts["rollouts"][0]["id"].as_i64().unwrap();

    let (_, doc) = agent.get("/openapi.json").await;
    let mut checked = 0;
    let mut broken = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let Some(schema) = ops
            .get("get")
            .and_then(|op| op.pointer("/responses/200/content/application~1json/schema"))
        else {
            continue;
        };
        let ids: &[&str] = if path.contains("{id}") && !path.starts_with("/rollouts") {
            &["watched", "waiting"]
        } else {
            &["-"]
        };
        for id in ids {
            let real = path
                .replace("{commit}", &commit)
                .replace("/rollouts/{id}", &format!("/rollouts/{rollout}"))
                .replace("{id}", id)
                .replace("{server_id}", "watched")
                .replace("{client_id}", "cursor")
                .replace("{profile}", "default")
                .replace("{artifact_id}", &artifact);
            let (status, body) = agent.get(&real).await;
            assert_eq!(status, 200, "GET {real}: {body}");
            let wrong = crate::support::schema::violations(&doc, schema, &body);
            if !wrong.is_empty() {
                broken.push(format!(
                    "GET {real} breaks its schema: {wrong:#?}\n{body:#}"
                ));
            }
            checked += 1;
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(checked >= 15, "{checked} answers checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_method_is_405_not_a_demand_for_a_key() {
    let (_repo, agent) = empty_agent().await;
    let http = reqwest::Client::new();
    for (method, path, allow) in [
        ("TRACE", "/servers", "GET, HEAD"),
        ("PUT", "/servers/x", "GET, DELETE, HEAD"),
        ("PATCH", "/mcp", "POST, GET, DELETE, HEAD"),
        ("OPTIONS", "/health", "GET, HEAD"),
        ("TRACE", "/webhooks/git", "POST"),
        ("DELETE", "/servers/x/deploy", "POST"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, format!("{}{path}", agent.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(
            r.headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some(allow.to_owned()),
            "{method} {path}"
        );
        assert!(r.headers().get("x-request-id").is_some());
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "METHOD_NOT_ALLOWED",
            "{method} {path}"
        );
    }
    // A path the API does not serve is a 404 for any method, key or not.
    for method in ["TRACE", "POST", "GET"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, format!("{}/no/such/route", agent.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    // A served method still needs its key.
    let r = http
        .post(format!("{}/servers/x/deploy", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
