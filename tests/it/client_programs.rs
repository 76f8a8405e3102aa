//! Real MCP client programs read what we write. For Claude Code, Codex and Gemini CLI (the
//! pinned npm packages `.ci/run` installs under `MCP_TEST_CLIENTS_DIR`), a throwaway home
//! holds a realistic config of that client's own; `clients::entry::render` makes our entry
//! for a profile of a real agent's gateway, `clients::deploy::deploy` writes it, and the
//! real program, offline, lists it as connected (Codex: lists our profile's tools over its
//! app-server protocol). The file keeps everything else it had, and
//! `clients::deploy::restore_backup` gives its original bytes back. With keys required, the
//! entry holds only a reference to an environment variable, and the program connects only
//! when that variable holds the key: the real client expands the reference we wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mcp_orchestration::clients::registry::{self, Client, Env, Os, Scope};
use mcp_orchestration::clients::{deploy, entry};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::eventually;
use crate::support::git::ManifestRepo;

const DEADLINE: Duration = Duration::from_secs(30);
/// The most one run of a client program may take (they take 0.5 to 3 s here).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// What the programs wait for a server before calling it down (Claude Code's `MCP_TIMEOUT`).
const MCP_TIMEOUT_MS: &str = "10000";
/// The variable the keyed entries reference.
const KEY_ENV: &str = "MCP_ORCHESTRATION_API_KEY";
/// A value of `KEY_ENV` the gateway refuses.
const WRONG_KEY: &str = "not-the-key";
/// Our entry's name in each client's file.
const ENTRY: &str = "mcp-orchestration-team";

/// Where `.ci/run` installs the programs: `$DIR/<name>/node_modules/.bin/<name>`.
struct Programs {
    dir: PathBuf,
    /// `PATH` for the programs: the directory of `node` (Codex and Gemini CLI are Node
    /// scripts), then the system's.
    path: String,
}

impl Programs {
    fn bin(&self, name: &str) -> PathBuf {
        self.dir
            .join(name)
            .join("node_modules")
            .join(".bin")
            .join(name)
    }
}

/// The installed programs, or `None` (with a message) when `MCP_TEST_CLIENTS_DIR` is not
/// set; under `CI=true` that fails the test instead.
fn programs() -> Option<Programs> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let Some(dir) = std::env::var_os("MCP_TEST_CLIENTS_DIR").map(PathBuf::from) else {
        assert!(
            !ci,
            "MCP_TEST_CLIENTS_DIR is not set (.ci/run installs Claude Code, Codex and Gemini CLI and sets it)"
        );
        eprintln!(
            "skipping: set MCP_TEST_CLIENTS_DIR to a prefix made by .ci/install-mcp-clients.sh"
        );
        return None;
    };
    let node = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("node").is_file())
        .expect("node on PATH: Codex and Gemini CLI are Node programs");
    let programs = Programs {
        path: format!("{}:/usr/bin:/bin", node.display()),
        dir,
    };
    for name in ["claude", "codex", "gemini"] {
        let bin = programs.bin(name);
        assert!(
            bin.exists(),
            "{} is missing: MCP_TEST_CLIENTS_DIR names a prefix without {name} (.ci/install-mcp-clients.sh)",
            bin.display()
        );
    }
    Some(programs)
}

/// A throwaway home for one client: `HOME`, with a `work` directory to run in and its
/// own `TMPDIR`.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().expect("temp home");
        std::fs::create_dir(dir.path().join("work")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn codex_home(&self) -> PathBuf {
        self.path().join(".codex")
    }

    /// Where `client` keeps its user file in this home, as the registry says.
    fn config(&self, client: &Client) -> PathBuf {
        let (home, codex_home) = (self.path().to_owned(), self.codex_home());
        let env = Env::from_vars(Os::Linux, |name| match name {
            "HOME" => Some(home.clone().into_os_string()),
            "CODEX_HOME" => Some(codex_home.clone().into_os_string()),
            _ => None,
        })
        .unwrap();
        registry::config_path(client, Os::Linux, &Scope::User, &env).unwrap()
    }

    /// The environment a program gets, and nothing else: no proxy, no real home or temp
    /// dir, no telemetry; `key`, when given, in `KEY_ENV`.
    fn env(&self, programs: &Programs, key: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".into(), programs.path.clone()),
            ("HOME".into(), self.path().display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            // Claude Code keeps a directory per working directory in $TMPDIR/claude-<uid>.
            (
                "TMPDIR".into(),
                self.path().join("tmp").display().to_string(),
            ),
            ("CODEX_HOME".into(), self.codex_home().display().to_string()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
            ("MCP_TIMEOUT".into(), MCP_TIMEOUT_MS.into()),
            ("GEMINI_CLI_TRUST_WORKSPACE".into(), "true".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        if let Some(key) = key {
            env.push((KEY_ENV.into(), key.into()));
        }
        env
    }

    fn command(&self, bin: &Path, env: &[(String, String)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(bin);
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.path().join("work"))
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// Runs `bin args` in `home` with stdin closed, within `RUN_LIMIT`; (stdout, stderr).
async fn run(home: &Home, bin: &Path, args: &[&str], env: &[(String, String)]) -> (String, String) {
    let child = home
        .command(bin, env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
    let pid = child.id();
    let out = match tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await {
        Ok(out) => out.expect("the program's output"),
        Err(_) => {
            kill_group(pid);
            panic!(
                "{} {args:?} did not finish within {RUN_LIMIT:?}",
                bin.display()
            );
        }
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        bin.display(),
        out.status
    );
    (stdout, stderr)
}

/// Kills the process group a program we started leads (it is still running).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.filter(|p| *p > 1) {
        // SAFETY: kill(2) on the process group of a child this test spawned with
        // `process_group(0)`, which has not been reaped.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

/// Codex's app-server, over its JSON-RPC on stdio: `initialize`, then
/// `mcpServerStatus/list` (which connects to every configured server and lists its tools).
async fn codex_server_status(home: &Home, bin: &Path, env: &[(String, String)]) -> Value {
    let errors = std::fs::File::create(home.path().join("app-server.log")).unwrap();
    let mut child = home
        .command(bin, env)
        .arg("app-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(errors)
        .spawn()
        .expect("codex app-server starts");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let exchange = async {
        for message in [
            json!({ "id": 1, "method": "initialize",
                    "params": { "clientInfo": { "name": "mcp-orchestration-test", "version": "0" } } }),
            json!({ "method": "initialized" }),
            json!({ "id": 2, "method": "mcpServerStatus/list", "params": {} }),
        ] {
            stdin
                .write_all(format!("{message}\n").as_bytes())
                .await
                .unwrap();
        }
        stdin.flush().await.unwrap();
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {line}"));
            if v["id"] == 2 {
                return v;
            }
            seen.push(line);
        }
        panic!("codex app-server ended without answering; it said:\n{seen:#?}");
    };
    let answer = tokio::time::timeout(RUN_LIMIT, exchange).await;
    drop(stdin);
    kill_group(pid);
    let _ = child.wait().await;
    answer.unwrap_or_else(|_| {
        panic!(
            "codex app-server did not answer within {RUN_LIMIT:?}:\n{}",
            std::fs::read_to_string(home.path().join("app-server.log")).unwrap_or_default()
        )
    })
}

/// A 1.2 manifest: example servers `a` and `b`, and the profile `team` (all of a, b's
/// echo only).
fn manifest() -> String {
    let text = process_manifest(&[("a", "1.0.0"), ("b", "1.0.0")]).replacen(
        "version: \"1.1\"",
        "version: \"1.2\"",
        1,
    );
    format!("{text}profiles:\n  - id: team\n    servers: [a, {{ id: b, tools: [echo] }}]\n")
}

/// The tools `team` shows, under their gateway names.
fn team_tools() -> Vec<String> {
    ["a_echo", "a_server_version", "a_sleep", "b_echo"]
        .map(str::to_owned)
        .to_vec()
}

/// An agent with the gateway on serving `team`, once the gateway lists its tools (so both
/// servers run and the gateway has its sessions with them); the profile's URL.
async fn agent(keys: bool) -> (ManifestRepo, TestAgent, String) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "a and b, profile team");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            require_key_for_reads: keys,
            ..Default::default()
        },
    )
    .await;
    let base = agent
        .gateway
        .clone()
        .unwrap()
        .trim_end_matches("/mcp")
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(DEADLINE, "the gateway to list team's tools", || async {
        let v: Value = http
            .get(format!("{base}/profiles"))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let team = v["profiles"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == "team")?;
        let mut tools: Vec<String> = serde_json::from_value(team["tools"].clone()).ok()?;
        tools.sort();
        (tools == team_tools()).then_some(())
    })
    .await;
    (repo, agent, format!("{base}/profiles/team/mcp"))
}

/// Writes our entry for `url` into `client`'s file in `home`, over `original`; checks the
/// deploy changed the file and kept a backup.
fn write_entry(home: &Home, client: &Client, original: &str, url: &str, keyed: bool) -> PathBuf {
    let path = home.config(client);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, original).unwrap();
    let target = entry::Target {
        key_env: keyed.then(|| KEY_ENV.to_owned()),
        ..entry::Target::new(ENTRY, url, "team")
    };
    let rendered = entry::render(client, &target).expect("an entry for this client");
    assert_eq!(
        rendered.get("headers").is_some() || rendered.get("bearer_token_env_var").is_some(),
        keyed,
        "a key reference exactly when keys are required: {rendered}"
    );
    let managed = BTreeMap::from([(ENTRY.to_owned(), rendered)]);
    let deployed = deploy::deploy(&path, client, &managed, &BTreeSet::new()).expect("deployed");
    assert!(deployed.changed, "{deployed:?}");
    assert!(deployed.backup.is_some(), "{deployed:?}");
    assert_eq!(
        deploy::status(&path, client, &managed).unwrap(),
        deploy::FileStatus::InSync
    );
    path
}

/// Puts the backup back and checks the file is byte for byte what it was.
fn restore(path: &Path, original: &str) {
    deploy::restore_backup(path).expect("the backup is restored");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        original,
        "restore_backup gives back the original bytes"
    );
}

/// The line `claude mcp list` (stdout) or `gemini mcp list` (stderr) prints for `name`.
fn line_of<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    output.lines().map(str::trim).find(|l| {
        l.strip_prefix("✓ ")
            .or_else(|| l.strip_prefix("✗ "))
            .unwrap_or(l)
            .starts_with(&prefix)
    })
}

const CLAUDE_JSON: &str = r#"{
  "numStartups": 14,
  "theme": "dark",
  "hasCompletedOnboarding": true,
  "autoUpdates": false,
  "projects": {
    "/home/someone/src/app": {
      "allowedTools": ["Bash(git status)"],
      "mcpServers": {}
    }
  },
  "mcpServers": {
    "tickets": {
      "type": "http",
      "url": "http://127.0.0.1:1/mcp",
      "headers": {
        "Authorization": "Bearer ${TICKETS_TOKEN}"
      }
    },
    "files": {
      "type": "stdio",
      "command": "/nonexistent/bin/mcp-files",
      "args": ["--root", "/home/someone"],
      "env": {}
    }
  }
}
"#;

/// Claude Code: `claude mcp list` says our entry is connected; the file keeps its other
/// servers and settings; the backup restores it.
async fn claude_code(programs: &Programs, url: &str, key: Option<&str>) {
    let client = registry::client("claude-code").unwrap();
    let home = Home::new();
    let path = write_entry(&home, client, CLAUDE_JSON, url, key.is_some());
    assert_eq!(path, home.path().join(".claude.json"));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut expected: Value = serde_json::from_str(CLAUDE_JSON).unwrap();
    expected["mcpServers"][ENTRY] = json!({ "type": "http", "url": url });
    if key.is_some() {
        expected["mcpServers"][ENTRY]["headers"] =
            json!({ "Authorization": format!("Bearer ${{{KEY_ENV}}}") });
    }
    assert_eq!(written, expected, "only our entry was added");
    let env = home.env(programs, key);
    let (stdout, stderr) = run(&home, &programs.bin("claude"), &["mcp", "list"], &env).await;
    let ours = line_of(&stdout, ENTRY)
        .unwrap_or_else(|| panic!("claude mcp list shows no {ENTRY}:\n{stdout}\n{stderr}"));
    assert_eq!(
        ours,
        format!("{ENTRY}: {url} (HTTP) - ✔ Connected"),
        "{stdout}"
    );
    for other in ["tickets", "files"] {
        assert!(line_of(&stdout, other).is_some(), "{other}: {stdout}");
    }
    if key.is_some() {
        // The same file with another value in the variable: not connected. The
        // reference, expanded by the client, carried the key.
        let wrong = home.env(programs, Some(WRONG_KEY));
        let (stdout, _) = run(&home, &programs.bin("claude"), &["mcp", "list"], &wrong).await;
        let line = line_of(&stdout, ENTRY).unwrap_or_default();
        assert!(
            line.contains("Failed to connect") && line.contains("HTTP 401"),
            "with a wrong key: {stdout}"
        );
    }
    // Claude Code rewrites the file itself (its bookkeeping added, `theme` moved to its
    // settings); the servers, ours included, stay as they were written.
    let now: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(now["mcpServers"], expected["mcpServers"], "{now}");
    restore(&path, CLAUDE_JSON);
}

const GEMINI_SETTINGS: &str = r#"{
  // Hand-edited; Gemini CLI reads comments.
  "general": {
    "preferredEditor": "vim",
    "disableAutoUpdate": true
  },
  "ui": {
    "theme": "GitHub"
  },
  "security": {
    "auth": {
      "selectedType": "gemini-api-key"
    }
  },
  "mcpServers": {
    // The weather service, when its tunnel is up.
    "weather": {
      "httpUrl": "http://127.0.0.1:1/mcp",
      "timeout": 5000
    }
  }
}
"#;

/// `text` without its `//` comment lines, as JSON.
fn json_without_comments(text: &str) -> Value {
    let stripped: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    serde_json::from_str(&stripped).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Gemini CLI: `gemini mcp list` (on stderr) says our entry is connected; the comments,
/// settings and other server stay; the backup restores the file.
async fn gemini_cli(programs: &Programs, url: &str, key: Option<&str>) {
    let client = registry::client("gemini-cli").unwrap();
    let home = Home::new();
    let path = write_entry(&home, client, GEMINI_SETTINGS, url, key.is_some());
    assert_eq!(path, home.path().join(".gemini").join("settings.json"));
    let comments = [
        "// Hand-edited; Gemini CLI reads comments.",
        "// The weather service, when its tunnel is up.",
    ];
    let written = std::fs::read_to_string(&path).unwrap();
    for comment in comments {
        assert!(written.contains(comment), "{written}");
    }
    let mut expected = json_without_comments(GEMINI_SETTINGS);
    expected["mcpServers"][ENTRY] = json!({ "type": "http", "url": url });
    if key.is_some() {
        expected["mcpServers"][ENTRY]["headers"] =
            json!({ "Authorization": format!("Bearer ${{{KEY_ENV}}}") });
    }
    assert_eq!(
        json_without_comments(&written),
        expected,
        "only our entry was added"
    );

    let env = home.env(programs, key);
    let (stdout, stderr) = run(&home, &programs.bin("gemini"), &["mcp", "list"], &env).await;
    let ours = line_of(&stderr, ENTRY)
        .unwrap_or_else(|| panic!("gemini mcp list shows no {ENTRY}:\n{stderr}\n{stdout}"));
    assert_eq!(
        ours,
        format!("✓ {ENTRY}: {url} (http) - Connected"),
        "{stderr}"
    );
    assert!(line_of(&stderr, "weather").is_some(), "{stderr}");
    if key.is_some() {
        let wrong = home.env(programs, Some(WRONG_KEY));
        let (_, stderr) = run(&home, &programs.bin("gemini"), &["mcp", "list"], &wrong).await;
        let line = line_of(&stderr, ENTRY).unwrap_or_default();
        assert!(
            line.starts_with('✗') && line.ends_with("Disconnected"),
            "with a wrong key: {stderr}"
        );
    }
    // Gemini CLI migrates old settings in place (`disableAutoUpdate` became
    // `enableAutoUpdate`), keeping the comments; the servers stay as written.
    let text = std::fs::read_to_string(&path).unwrap();
    for comment in comments {
        assert!(text.contains(comment), "{text}");
    }
    let now = json_without_comments(&text);
    assert_eq!(now["mcpServers"], expected["mcpServers"], "{now}");
    restore(&path, GEMINI_SETTINGS);
}

const CODEX_TOML: &str = r#"# Codex settings, kept by hand.
model = "gpt-5-codex"
model_reasoning_effort = "high"

[tui]
notifications = true # tell me when a turn ends

# The docs server, through the team's tunnel.
[mcp_servers.docs]
url = "http://127.0.0.1:1/mcp"
startup_timeout_sec = 5

[projects."/home/someone/src/app"]
trust_level = "trusted"
"#;

/// Codex: `codex mcp list --json` has our entry with the URL (and the key's variable);
/// its app-server connects and lists the profile's tools, without a tools error; the
/// comments, settings and other server stay; the backup restores the file.
async fn codex(programs: &Programs, url: &str, key: Option<&str>) {
    let client = registry::client("codex").unwrap();
    let home = Home::new();
    let path = write_entry(&home, client, CODEX_TOML, url, key.is_some());
    assert_eq!(path, home.codex_home().join("config.toml"));
    let bin = programs.bin("codex");
    let env = home.env(programs, key);
    let (stdout, _) = run(&home, &bin, &["mcp", "list", "--json"], &env).await;
    let listed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ENTRY)
        .unwrap_or_else(|| panic!("codex mcp list has no {ENTRY}: {listed}"));
    assert_eq!(ours["enabled"], true, "{ours}");
    assert_eq!(ours["transport"]["type"], "streamable_http", "{ours}");
    assert_eq!(ours["transport"]["url"], url, "{ours}");
    assert_eq!(
        ours["transport"]["bearer_token_env_var"],
        key.map_or(Value::Null, |_| json!(KEY_ENV)),
        "{ours}"
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "docs"),
        "{listed}"
    );

    let status = codex_server_status(&home, &bin, &env).await;
    let servers = status["result"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    let ours = servers
        .iter()
        .find(|s| s["name"] == ENTRY)
        .unwrap_or_else(|| panic!("no {ENTRY} in {status}"));
    assert_eq!(ours["toolsError"], Value::Null, "{ours}");
    assert_eq!(
        ours["serverInfo"]["name"], "mcp-orchestration-gateway",
        "{ours}"
    );
    let mut tools: Vec<String> = ours["tools"]
        .as_object()
        .unwrap_or_else(|| panic!("no tools: {ours}"))
        .keys()
        .cloned()
        .collect();
    tools.sort();
    assert_eq!(tools, team_tools(), "{ours}");
    if key.is_some() {
        let wrong = home.env(programs, Some(WRONG_KEY));
        let status = codex_server_status(&home, &bin, &wrong).await;
        let ours = status["result"]["data"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == ENTRY).cloned())
            .unwrap_or_else(|| panic!("no {ENTRY} in {status}"));
        assert!(ours["toolsError"].is_string(), "with a wrong key: {ours}");
        assert_eq!(ours["tools"], json!({}), "with a wrong key: {ours}");
    }

    let text = std::fs::read_to_string(&path).unwrap();
    for comment in [
        "# Codex settings, kept by hand.",
        "# tell me when a turn ends",
        "# The docs server, through the team's tunnel.",
    ] {
        assert!(text.contains(comment), "{text}");
    }
    let now: toml_edit::DocumentMut = text.parse().unwrap();
    let before: toml_edit::DocumentMut = CODEX_TOML.parse().unwrap();
    for key in ["model", "model_reasoning_effort", "tui", "projects"] {
        assert_eq!(
            now[key].to_string(),
            before[key].to_string(),
            "{key}: {text}"
        );
    }
    assert_eq!(
        now["mcp_servers"]["docs"].to_string(),
        before["mcp_servers"]["docs"].to_string()
    );
    assert_eq!(
        now["mcp_servers"][ENTRY]["url"].as_str(),
        Some(url),
        "{text}"
    );
    restore(&path, CODEX_TOML);
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_codex_and_gemini_cli_connect_to_a_profile_through_the_entries_we_write() {
    let Some(programs) = programs() else {
        return;
    };
    let (_repo, _agent, url) = agent(false).await;
    claude_code(&programs, &url, None).await;
    gemini_cli(&programs, &url, None).await;
    codex(&programs, &url, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_required_each_client_expands_the_key_reference_we_write() {
    let Some(programs) = programs() else {
        return;
    };
    let (_repo, _agent, url) = agent(true).await;
    claude_code(&programs, &url, Some(TEST_API_KEY)).await;
    gemini_cli(&programs, &url, Some(TEST_API_KEY)).await;
    codex(&programs, &url, Some(TEST_API_KEY)).await;
}
