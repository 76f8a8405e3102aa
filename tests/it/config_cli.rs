//! `mcp-orchestration config …` as an operator runs it: the real binary against a real
//! agent (gateway on, two example servers), with its own `HOME`, `XDG_CONFIG_HOME` and
//! `XDG_STATE_HOME` in temporary directories, so the client files it deploys, the keys it
//! pins and its record of deployments are the test's. Exit codes: 0 ok, 1 the checked
//! thing is bad (the agent's coded refusals included), 2 usage or environment (an unknown
//! client or profile included).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use rmcp::ServiceExt;
use serde_json::{Value, json};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, eventually};

const DEADLINE: Duration = Duration::from_secs(20);

/// Two example servers and a profile `dev` showing the first.
fn manifest() -> String {
    process_manifest(&[("cfg-a", "1.0.0"), ("cfg-b", "1.0.0")]).replace(
        "version: \"1.1\"",
        "version: \"1.2\"\nprofiles:\n  - id: dev\n    servers: [cfg-a]",
    )
}

async fn fleet() -> (ManifestRepo, TestAgent) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "two servers, one profile");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            gateway: true,
            ..Options::default()
        },
    )
    .await;
    for id in ["cfg-a", "cfg-b"] {
        agent.wait_running(id, "1.0.0", DEADLINE).await;
    }
    (repo, agent)
}

/// An operator's machine: its own home, config and state directories.
struct Operator {
    home: tempfile::TempDir,
    agent_url: String,
}

impl Operator {
    fn new(agent_url: &str) -> Operator {
        Operator {
            home: tempfile::tempdir().expect("home"),
            agent_url: agent_url.to_owned(),
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn trusted_keys(&self) -> PathBuf {
        self.home()
            .join("xdg-config/mcp-orchestration/trusted-keys.json")
    }

    fn deployments(&self) -> PathBuf {
        self.home()
            .join("xdg-state/mcp-orchestration/deployments.json")
    }

    fn cursor_file(&self) -> PathBuf {
        self.home().join(".cursor/mcp.json")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .current_dir(self.home())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join("xdg-config"))
            .env("XDG_STATE_HOME", self.home().join("xdg-state"))
            .env("MCP_ORCHESTRATION_URL", &self.agent_url)
            .env("MCP_ORCHESTRATION_API_KEY", TEST_API_KEY)
            .env(
                "MCP_ORCHESTRATION_DATA_DIR",
                self.home().join("no-agent-here"),
            )
            .env("NO_COLOR", "1");
        // An instrumented build writes its profile where this says: without it the CLI's
        // runs would not count in the coverage measurement (COVERAGE.md).
        if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
            command.env("LLVM_PROFILE_FILE", profile);
        }
        command
    }

    /// `mcp-orchestration config ARGS`.
    async fn config(&self, args: &[&str]) -> Output {
        let mut all = vec!["config"];
        all.extend_from_slice(args);
        self.command(&all).output().await.expect("the binary runs")
    }

    /// `config ARGS --output json`: the exit code and the JSON printed.
    async fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let o = self.config(&all).await;
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "config {args:?}: not JSON ({e}): {}{}",
                text(&o.stdout),
                text(&o.stderr)
            )
        });
        (code(&o), v)
    }

    /// `config ARGS` must exit 0; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.config(args).await;
        assert_eq!(
            code(&o),
            0,
            "config {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("an exit code")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A Cursor file the user had before: a server and a setting of their own.
const THEIRS_BEFORE: &str = "{\n  \"mcpServers\": {\n    \"theirs\": { \"command\": \"their-server\", \"args\": [\"--flag\"] }";
const THEIRS_AFTER: &str = "  },\n  \"editor.fontSize\": 14\n}\n";

const CURSOR: [&str; 4] = ["--client", "cursor", "--profile", "default"];

fn with<'a>(args: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(more);
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_on_this_machine_pins_the_key_keeps_the_user_s_file_and_status_follows_it() {
    let (repo, agent) = fleet().await;
    let op = Operator::new(&agent.url);
    let gateway = agent.gateway.clone().unwrap().replace("/mcp", "");

    // The operator's own file, with a server and a setting that are not ours.
    let file = op.cursor_file();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let original = format!("{THEIRS_BEFORE}\n{THEIRS_AFTER}");
    std::fs::write(&file, &original).unwrap();

    let (status, keys) = op.json(&["keys", "init"]).await;
    assert_eq!(
        (status, keys["created"].clone()),
        (0, json!(true)),
        "{keys}"
    );
    let (status, draft) = op
        .json(&with(
            &["draft", "add"],
            &with(&CURSOR, &["--server", "cfg-a"]),
        ))
        .await;
    assert_eq!(status, 0, "{draft}");
    assert_eq!(
        draft["payload"],
        json!({
            "mcp-orchestration": { "url": format!("{gateway}/mcp") },
            "cfg-a": { "url": format!("{gateway}/servers/cfg-a/mcp") },
        })
    );
    let out = op.ok(&with(&["validate"], &CURSOR)).await;
    assert!(out.contains("cursor/default: valid"), "{out}");
    let published = op.ok(&with(&["publish"], &CURSOR)).await;
    let first = published.trim().to_owned();
    assert!(
        first.starts_with("sha256:") && first.len() == 71,
        "{published}"
    );

    // Deployed here: our entries beside theirs, everything of theirs byte for byte.
    let (status, report) = op.json(&with(&["deploy"], &CURSOR)).await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["artifact"], first.as_str());
    assert_eq!(report["changed"], true);
    assert_eq!(report["entries"], json!(["cfg-a", "mcp-orchestration"]));
    assert_eq!(report["removed"], json!([]));
    assert_eq!(report["path"], file.display().to_string());
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with(THEIRS_BEFORE), "{written}");
    assert!(written.ends_with(THEIRS_AFTER), "{written}");
    let doc = read_json(&file);
    assert_eq!(
        doc["mcpServers"]["theirs"],
        json!({ "command": "their-server", "args": ["--flag"] })
    );
    assert_eq!(doc["mcpServers"]["cfg-a"], draft["payload"]["cfg-a"]);
    assert_eq!(
        doc["mcpServers"]["mcp-orchestration"],
        draft["payload"]["mcp-orchestration"]
    );
    assert_eq!(doc["editor.fontSize"], 14);
    let backup = PathBuf::from(report["backup"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    // The agent's key is pinned on first use, owner-only; the deploy is recorded.
    assert_eq!(mode(&op.trusted_keys()), 0o600);
    let pinned = read_json(&op.trusted_keys());
    let key_id = keys["keys"][0]["key_id"].as_str().unwrap();
    assert_eq!(
        pinned["agents"][&agent.url][0]["key_id"], key_id,
        "{pinned}"
    );
    assert_eq!(pinned["agents"][&agent.url][0]["how"], "first-use");
    assert_eq!(mode(&op.deployments()), 0o600);
    let state = read_json(&op.deployments());
    let record = &state["files"][file.display().to_string()][0];
    assert_eq!(record["client"], "cursor");
    assert_eq!(record["profile"], "default");
    assert_eq!(record["artifact"], first.as_str());
    assert_eq!(record["entries"], json!(["cfg-a", "mcp-orchestration"]));
    assert_eq!(record["agent_url"], agent.url.as_str());

    // Again: nothing changes, not even the backup.
    let before = std::fs::read(&file).unwrap();
    let out = op.ok(&with(&["deploy"], &CURSOR)).await;
    assert!(out.contains("changed:  no"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    let (status, report) = op.json(&["status"]).await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["deployments"][0]["status"], "in_sync", "{report}");
    let out = op.ok(&["status"]).await;
    assert!(out.contains("in sync"), "{out}");

    // A newer configuration is published: pending until deployed.
    op.ok(&with(
        &["draft", "add"],
        &with(&CURSOR, &["--server", "cfg-b"]),
    ))
    .await;
    let second = op.ok(&with(&["publish"], &CURSOR)).await.trim().to_owned();
    let (status, report) = op.json(&["status", "--client", "cursor"]).await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["deployments"][0]["status"], "pending_update");
    assert_eq!(report["deployments"][0]["latest_artifact"], second.as_str());
    let o = op.config(&["status"]).await;
    assert_eq!(code(&o), 1);
    assert!(
        text(&o.stdout).contains("pending update"),
        "{}",
        text(&o.stdout)
    );
    let (status, report) = op.json(&with(&["deploy"], &CURSOR)).await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(
        report["entries"],
        json!(["cfg-a", "cfg-b", "mcp-orchestration"])
    );
    let (status, report) = op.json(&["status"]).await;
    assert_eq!(
        (status, &report["deployments"][0]["status"]),
        (0, &json!("in_sync"))
    );

    // An entry removed from the configuration is removed from the file by the next deploy
    // (the record says it was ours); theirs stays.
    op.ok(&with(&["draft", "remove"], &with(&CURSOR, &["cfg-b"])))
        .await;
    op.ok(&with(&["publish"], &CURSOR)).await;
    let (status, report) = op.json(&with(&["deploy"], &CURSOR)).await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["removed"], json!(["cfg-b"]));
    let doc = read_json(&file);
    assert!(doc["mcpServers"].get("cfg-b").is_none(), "{doc}");
    assert!(doc["mcpServers"].get("theirs").is_some(), "{doc}");

    // Edited by hand: modified outside, naming the entry.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("/servers/cfg-a/mcp", "/servers/elsewhere/mcp");
    std::fs::write(&file, edited).unwrap();
    let (status, report) = op.json(&["status"]).await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["deployments"][0]["status"], "modified_outside");
    assert_eq!(report["deployments"][0]["entries"], json!(["cfg-a"]));
    // Its entries gone altogether: missing.
    std::fs::remove_file(&file).unwrap();
    let (status, report) = op.json(&["status"]).await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["deployments"][0]["status"], "missing");
    // Filters: nothing of another client, which is all in sync.
    let (status, report) = op.json(&["status", "--client", "zed"]).await;
    assert_eq!((status, report["deployments"].clone()), (0, json!([])));
    drop(repo);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_and_altered_artifacts_are_refused_and_bad_client_files_are_left_as_they_were()
{
    let (_repo, agent) = fleet().await;
    let op = Operator::new(&agent.url);
    let file = op.cursor_file();

    op.ok(&["keys", "init"]).await;
    op.ok(&with(&["publish"], &CURSOR)).await;
    op.ok(&with(&["deploy"], &CURSOR)).await;
    let deployed = std::fs::read(&file).unwrap();

    // A rotated key does not break trust in what the old one signed.
    let (status, rotated) = op.json(&["keys", "rotate"]).await;
    assert_eq!(status, 0, "{rotated}");
    let (_, listed) = op.json(&["keys", "list"]).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
    let new = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["active"] == true)
        .unwrap();
    let (new_id, new_hex) = (
        new["key_id"].as_str().unwrap(),
        new["public_key"].as_str().unwrap(),
    );
    op.ok(&with(&["deploy"], &CURSOR)).await;

    // What the new key signs is refused until the operator trusts it, naming how.
    op.ok(&with(
        &["draft", "add"],
        &with(&CURSOR, &["--server", "cfg-a"]),
    ))
    .await;
    op.ok(&with(&["publish"], &CURSOR)).await;
    let o = op.config(&with(&["deploy"], &CURSOR)).await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.contains(&format!("--trust-key {new_id}={new_hex}")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        deployed,
        "the file is untouched"
    );
    let trust = format!("{new_id}={new_hex}");
    let (status, report) = op
        .json(&with(&["deploy"], &with(&CURSOR, &["--trust-key", &trust])))
        .await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["changed"], true);
    let pinned = read_json(&op.trusted_keys());
    assert_eq!(pinned["agents"][&agent.url][1]["key_id"], new_id);
    assert_eq!(pinned["agents"][&agent.url][1]["how"], "explicit");
    let deployed = std::fs::read(&file).unwrap();

    // A malformed --trust-key is a usage error.
    let o = op
        .config(&with(
            &["deploy"],
            &with(&CURSOR, &["--trust-key", "nonsense"]),
        ))
        .await;
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));

    // An artifact altered where the agent keeps it: refused, the file untouched.
    let (_, latest) = agent.get("/v1/config/cursor/default/artifact").await;
    let id = latest["id"].as_str().unwrap().to_owned();
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let body: String = db
        .query_row(
            "SELECT body FROM config_artifacts WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let set_body = |body: &str| {
        db.execute(
            "UPDATE config_artifacts SET body = ?1 WHERE id = ?2",
            [body, id.as_str()],
        )
        .unwrap()
    };
    assert_eq!(
        set_body(&body.replace("/servers/cfg-a/mcp", "/servers/evil/mcp")),
        1
    );
    // The agent itself no longer serves it as the latest (ARTIFACT_UNTRUSTED), so nothing
    // is drafted or deployed from it; the CLI's own check is behind that one.
    let o = op.config(&with(&["deploy"], &CURSOR)).await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("ARTIFACT_UNTRUSTED"), "{err}");
    assert!(err.contains("it was altered"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        deployed,
        "the file is untouched"
    );
    // `status` cannot vouch for it either.
    let (status, report) = op.json(&["status"]).await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["deployments"][0]["status"], "unknown", "{report}");
    assert!(
        report["deployments"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("altered"),
        "{report}"
    );
    // Put back as signed, it verifies again.
    set_body(&body);
    drop(db);
    let (status, report) = op.json(&["status"]).await;
    assert_eq!(
        (status, &report["deployments"][0]["status"]),
        (0, &json!("in_sync"))
    );

    // A client file that is not JSON: refused with its place, left as it was.
    let broken = "{\n  \"mcpServers\": {\n    \"theirs\": { \"command\": \"x\", }\n  ]\n}\n";
    std::fs::write(&file, broken).unwrap();
    let o = op.config(&with(&["deploy"], &CURSOR)).await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains(&format!("{}:", file.display())), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    let position = err
        .split(&format!("{}:", file.display()))
        .nth(1)
        .unwrap_or_default()
        .split(':')
        .take(2)
        .map(|n| n.parse::<usize>().is_ok())
        .collect::<Vec<_>>();
    assert_eq!(position, [true, true], "line and column: {err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken);

    // A read-only file: refused precisely, left as it was.
    let theirs = "{\n  \"mcpServers\": {}\n}\n";
    std::fs::write(&file, theirs).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let o = op.config(&with(&["deploy"], &CURSOR)).await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.contains(&format!("{} is read-only", file.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), theirs);
    assert_eq!(mode(&file), 0o444);
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_validate_remote_deploy_errors_and_the_profile_bridge() {
    let (_repo, agent) = fleet().await;
    let op = Operator::new(&agent.url);
    let file = op.cursor_file();
    op.ok(&["keys", "init"]).await;

    // Listings, as tables and as the agent's JSON.
    let out = op.ok(&["clients"]).await;
    assert!(
        out.contains("cursor") && out.contains(&file.display().to_string()),
        "{out}"
    );
    let (status, profiles) = op.json(&["profiles", "--client", "cursor"]).await;
    assert_eq!(status, 0);
    let ids: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "dev"]);
    let (_, servers) = op.json(&["servers"]).await;
    assert_eq!(servers["servers"].as_array().unwrap().len(), 2, "{servers}");

    // An invalid draft: every problem with its code and place, exit 1; publishing it is
    // the agent's CONFIG_INVALID refusal, also exit 1, with the problems.
    op.ok(&with(
        &["draft", "add"],
        &with(
            &CURSOR,
            &["--entry-json", r#"{"command": 1}"#, "--name", "bad"],
        ),
    ))
    .await;
    let o = op.config(&with(&["validate"], &CURSOR)).await;
    assert_eq!(code(&o), 1);
    let out = text(&o.stdout);
    assert!(
        out.contains("error  INVALID_TYPE  bad.command: must be a string"),
        "{out}"
    );
    let (status, report) = op.json(&with(&["validate"], &CURSOR)).await;
    assert_eq!((status, report["valid"].clone()), (1, json!(false)));
    let o = op.config(&with(&["publish"], &CURSOR)).await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.contains("CONFIG_INVALID") && err.contains("bad.command"),
        "{err}"
    );
    let (status, cleared) = op.json(&with(&["draft", "clear"], &CURSOR)).await;
    assert_eq!((status, cleared["cleared"].clone()), (0, json!(true)));
    op.ok(&with(&["publish"], &CURSOR)).await;

    // diff --file: a file elsewhere, read here.
    let (status, report) = op
        .json(&with(
            &["diff"],
            &with(&CURSOR, &["--file", file.to_str().unwrap()]),
        ))
        .await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["status"], "not_deployed");
    op.ok(&with(&["deploy"], &CURSOR)).await;
    let (status, report) = op
        .json(&with(
            &["diff"],
            &with(&CURSOR, &["--file", file.to_str().unwrap()]),
        ))
        .await;
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["status"], "up_to_date");
    assert_eq!(report["compared"], file.display().to_string());
    assert_eq!(report["changes"], json!([]));
    // A file holding an older configuration, with an entry the latest one dropped, is
    // outdated (its names come from the whole history), not up to date.
    op.ok(&with(
        &["draft", "add"],
        &with(&CURSOR, &["--server", "cfg-a"]),
    ))
    .await;
    op.ok(&with(&["publish"], &CURSOR)).await;
    op.ok(&with(&["deploy"], &CURSOR)).await;
    op.ok(&with(&["draft", "remove"], &with(&CURSOR, &["cfg-a"])))
        .await;
    op.ok(&with(&["publish"], &CURSOR)).await;
    let (status, report) = op
        .json(&with(
            &["diff"],
            &with(&CURSOR, &["--file", file.to_str().unwrap()]),
        ))
        .await;
    assert_eq!(
        (status, report["status"].clone()),
        (1, json!("outdated")),
        "{report}"
    );
    op.ok(&with(&["deploy"], &CURSOR)).await;
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("/mcp\"", "/elsewhere\"");
    std::fs::write(&file, edited).unwrap();
    let (status, report) = op
        .json(&with(
            &["diff"],
            &with(&CURSOR, &["--file", file.to_str().unwrap()]),
        ))
        .await;
    assert_eq!(status, 1, "{report}");
    assert_eq!(report["status"], "diverged");
    assert_eq!(report["changes"][0]["path"], "mcp-orchestration.url");
    assert_eq!(report["changes"][0]["change"], "changed");
    let out = text(
        &op.config(&with(
            &["diff"],
            &with(&CURSOR, &["--file", file.to_str().unwrap()]),
        ))
        .await
        .stdout,
    );
    assert!(
        out.contains("diverged") && out.contains("~ mcp-orchestration.url"),
        "{out}"
    );

    // Without --file the agent compares its own host's file; --remote deploys there.
    let (status, report) = op.json(&with(&["diff"], &CURSOR)).await;
    assert_eq!(
        (status, report["status"].clone()),
        (1, json!("not_deployed"))
    );
    let (status, report) = op.json(&with(&["deploy", "--remote"], &CURSOR)).await;
    assert_eq!(status, 0, "{report}");
    let agents_file = agent.data.path().join("clients-home/.cursor/mcp.json");
    assert_eq!(report["path"], agents_file.display().to_string());
    let (status, report) = op.json(&with(&["diff"], &CURSOR)).await;
    assert_eq!((status, report["status"].clone()), (0, json!("up_to_date")));

    // A project's file, relative to the current directory; a user file has no project.
    let (status, report) = op
        .json(&with(
            &["deploy"],
            &with(&CURSOR, &["--project-dir", "proj"]),
        ))
        .await;
    assert_eq!(status, 0, "{report}");
    let project_file = op.home().join("proj/.cursor/mcp.json");
    assert_eq!(report["path"], project_file.display().to_string());
    assert!(read_json(&project_file)["mcpServers"]["mcp-orchestration"].is_object());
    let o = op
        .config(&with(
            &["deploy"],
            &with(&CURSOR, &["--scope", "user", "--project-dir", "proj"]),
        ))
        .await;
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));

    // Errors: the agent's code and message; an unknown name is a usage error (2).
    for args in [
        vec!["show", "--client", "nope"],
        vec!["deploy", "--client", "nope"],
        vec!["profiles", "--client", "nope"],
    ] {
        let o = op.config(&args).await;
        let err = text(&o.stderr);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        assert!(
            err.contains("CLIENT_NOT_FOUND: no MCP client `nope`"),
            "{args:?}: {err}"
        );
    }
    let o = op
        .config(&["show", "--client", "cursor", "--profile", "nope"])
        .await;
    let err = text(&o.stderr);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("PROFILE_NOT_FOUND: no profile `nope`"),
        "{err}"
    );
    let mut unreachable = op.command(&["config", "clients", "--agent-url", "http://127.0.0.1:9"]);
    let o = unreachable.output().await.unwrap();
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cannot reach the agent"),
        "{}",
        text(&o.stderr)
    );

    // Claude Desktop's entry for a profile runs the bridge with the profile's whole URL and
    // `--profile`: it serves that profile's tools only.
    let (_, view) = op
        .json(&["show", "--client", "claude-desktop", "--profile", "dev"])
        .await;
    let entry = &view["payload"]["mcp-orchestration-dev"];
    assert_eq!(entry["command"], "mcp-orchestration", "{view}");
    let args: Vec<String> = entry["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let gateway = agent.gateway.clone().unwrap().replace("/mcp", "");
    assert_eq!(
        args,
        [
            "gateway",
            "--url",
            &format!("{gateway}/profiles/dev/mcp"),
            "--profile",
            "dev"
        ]
    );
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = op
        .command(&arg_refs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let client = tokio::time::timeout(DEADLINE, ().serve((stdout, stdin)))
        .await
        .expect("the bridge answers")
        .expect("an MCP session over stdio");
    eventually(
        DEADLINE,
        "the dev profile's tools through the bridge",
        || async {
            let tools = client.list_all_tools().await.ok()?;
            let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
            names.sort();
            (names == ["cfg-a_echo", "cfg-a_server_version", "cfg-a_sleep"]).then_some(())
        },
    )
    .await;
    drop(client);

    // A profile that is not the endpoint's is refused before anything starts.
    let o = op
        .command(&[
            "gateway",
            "--url",
            &format!("{gateway}/mcp"),
            "--profile",
            "dev",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("not of profile `dev`"),
        "{}",
        text(&o.stderr)
    );
}
