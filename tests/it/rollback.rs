//! Rollbacks with the process runtime: a commit that pins a failing version, and an
//! operator's rollback through the CLI, held until resumed.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{Options, TEST_API_KEY, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, eventually, example_server_bin};

/// One example server at `version`; `health` is its `/health` mode.
fn manifest(id: &str, version: &str, health: &str) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: {id}\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\", \"--health\", \"{health}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n",
        example_server_bin().display()
    )
}

fn cli(agent: &TestAgent, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--agent-url", &agent.url, "--api-key", TEST_API_KEY])
        .env("NO_COLOR", "1")
        .output()
        .expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn rollouts(agent: &TestAgent, id: &str) -> Vec<Value> {
    let (_, v) = agent
        .get(&format!("/servers/{id}/rollouts?limit=100"))
        .await;
    v["rollouts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_pinning_a_failing_version_is_rolled_back_and_status_says_why() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("lambda", "1.0.0", "healthy"), "lambda 1.0.0");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            poll_interval: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let good = agent
        .wait_running("lambda", "1.0.0", Duration::from_secs(10))
        .await;

    repo.push_manifest(
        &manifest("lambda", "1.1.0", "unhealthy"),
        "lambda 1.1.0 (broken)",
    );
    let view = eventually(
        Duration::from_secs(15),
        "lambda to be marked failed",
        || async {
            let s = agent.server("lambda").await?;
            (s["state"] == "failed").then_some(s)
        },
    )
    .await;
    assert_eq!(view["desired_version"], "1.1.0");
    assert_eq!(
        view["running_version"], "1.0.0",
        "1.0.0 kept serving: {view}"
    );
    assert_eq!(view["instance_id"], good["instance_id"]);
    assert!(
        view["reason"]
            .as_str()
            .unwrap()
            .starts_with("1.1.0 failed: lambda 1.1.0 failed its health gate"),
        "{view}"
    );
    let failed = rollouts(&agent, "lambda").await;
    assert_eq!(failed[0]["outcome"], "rolled_back");
    assert_eq!(failed[0]["trigger"], "commit");

    // `status` says desired ≠ running and why, and exits 1.
    let (code, text) = cli(&agent, &["status", "lambda"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("desired_version: 1.1.0") && text.contains("running_version: 1.0.0"),
        "{text}"
    );
    assert!(text.contains("failed its health gate"), "{text}");

    // Three syncs later it has not been tried again.
    agent.syncs_pass(3, "lambda").await;
    let attempts = rollouts(&agent, "lambda")
        .await
        .iter()
        .filter(|r| r["to_version"] == "1.1.0")
        .count();
    assert_eq!(attempts, 1);

    // A commit that changes the server is a new attempt.
    repo.push_manifest(
        &manifest("lambda", "1.1.0", "healthy"),
        "lambda 1.1.0 (fixed)",
    );
    agent
        .wait_running("lambda", "1.1.0", Duration::from_secs(15))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_rollback_shows_progress_and_holds_the_version_until_resume() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("mu", "1.0.0", "healthy"), "mu 1.0.0");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent
        .wait_running("mu", "1.0.0", Duration::from_secs(10))
        .await;
    repo.push_manifest(&manifest("mu", "1.1.0", "healthy"), "mu 1.1.0");
    agent
        .wait_running("mu", "1.1.0", Duration::from_secs(10))
        .await;

    let (code, text) = cli(&agent, &["rollback", "mu"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("rolling mu back to 1.0.0"), "{text}");
    // Piped: plain lines, no live line drawn over them.
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    assert!(
        text.contains("healthy") && text.contains("mu: succeeded"),
        "{text}"
    );
    let view = agent
        .wait_running("mu", "1.0.0", Duration::from_secs(10))
        .await;
    assert_eq!(view["pinned_version"], "1.0.0");
    let history = rollouts(&agent, "mu").await;
    assert_eq!(history[0]["trigger"], "operator");
    assert_eq!(history[0]["from_version"], "1.1.0");
    assert_eq!(history[0]["to_version"], "1.0.0");

    // `history` lists it; a new commit does not move the held server.
    let (code, text) = cli(&agent, &["history", "mu", "--output", "json"]);
    assert_eq!(code, 0, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed[0]["trigger"], "operator");
    repo.push_manifest(&manifest("mu", "1.2.0", "healthy"), "mu 1.2.0");
    agent.wait_runs(3).await;
    assert_eq!(
        agent.server("mu").await.unwrap()["running_version"],
        "1.0.0"
    );

    // Resume: the manifest's version applies again.
    let (code, text) = cli(&agent, &["rollout", "resume", "mu"]);
    assert_eq!(code, 0, "{text}");
    agent
        .wait_running("mu", "1.2.0", Duration::from_secs(10))
        .await;

    // `rollout show` prints the operator rollout's timeline.
    let id = history[0]["id"].to_string();
    let (code, text) = cli(&agent, &["rollout", "show", &id]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("trigger operator") && text.contains("instance_started"),
        "{text}"
    );
}

/// On a terminal, `rollback` draws a live line (spinner, step, time) while it waits (piped,
/// it does not: the test above). The version rolled back to fails its health checks (a
/// health file per version), and its gate takes 20 failed probes 0.2 s apart to give up,
/// so the wait outlasts `--timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_on_a_terminal_shows_a_live_progress_line() {
    let health = tempfile::tempdir().unwrap();
    let manifest = |version: &str| {
        format!(
            "version: \"1.1\"\nservers:\n  - id: pi\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\", \"--health-file\", \"{}/{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 20, success_threshold: 1 }}\n",
            example_server_bin().display(),
            health.path().display()
        )
    };
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("1.0.0"), "pi 1.0.0");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent
        .wait_running("pi", "1.0.0", Duration::from_secs(10))
        .await;
    repo.push_manifest(&manifest("1.1.0"), "pi 1.1.0");
    agent
        .wait_running("pi", "1.1.0", Duration::from_secs(10))
        .await;
    std::fs::write(health.path().join("1.0.0"), "unhealthy").unwrap();

    let command = format!(
        "{BIN} rollback pi --to 1.0.0 --timeout 1500ms --agent-url {} --api-key {TEST_API_KEY}",
        agent.url
    );
    let on_terminal = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(!on_terminal.status.success(), "{shown}");
    assert!(shown.contains("rolling pi back to 1.0.0"), "{shown}");
    assert!(
        shown.contains("\r\x1b[2K") && shown.contains(" · ") && shown.contains(" s"),
        "no live line in {shown:?}"
    );
    assert!(
        ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
            .iter()
            .any(|c| shown.contains(*c)),
        "no spinner in {shown:?}"
    );
    assert!(shown.contains("did not finish within"), "{shown}");

    std::fs::remove_file(health.path().join("1.0.0")).unwrap();
}
