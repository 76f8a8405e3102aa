//! The tool-set guard with the process runtime and real example servers: a version that
//! removes a tool, or whose input schema refuses calls that were valid, is held back and
//! rolled back with the diff recorded; `allow_breaking_tool_changes: true` lets it through.

use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{Options, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::{eventually, example_server_bin};

const DEADLINE: Duration = Duration::from_secs(30);

/// The example server `guarded` at `version`, started with `env`, under `policy`.
fn manifest(version: &str, env: &str, policy: &str) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: guarded\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n      env: {{ {env} }}\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n    update_policy: {{ version_strategy: pinned{policy} }}\n",
        example_server_bin().display()
    )
}

/// The newest rollout of `guarded` to `version` once it has ended.
async fn ended_rollout(agent: &TestAgent, version: &str) -> Value {
    eventually(DEADLINE, "the rollout to end", || async {
        let (_, v) = agent.get("/servers/guarded/rollouts?limit=20").await;
        v["rollouts"]
            .as_array()?
            .iter()
            .find(|r| r["to_version"] == version && r["outcome"] != "in_progress")
            .cloned()
    })
    .await
}

async fn steps(agent: &TestAgent, rollout: &Value) -> Vec<(String, String)> {
    let (_, detail) = agent
        .get(&format!("/rollouts/{}", rollout["id"].as_i64().unwrap()))
        .await;
    detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_breaks_its_tools_is_held_back_unless_the_policy_allows_it() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("1.0.0", "", ""), "guarded 1.0.0");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            poll_interval: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let first = agent.wait_running("guarded", "1.0.0", DEADLINE).await;

    // 1.1.0 drops `sleep`: tools_removed, rolled back, 1.0.0 kept serving.
    repo.push_manifest(
        &manifest("1.1.0", "EXAMPLE_SERVER_DROP_TOOLS: sleep", ""),
        "guarded 1.1.0 drops sleep",
    );
    let removed = ended_rollout(&agent, "1.1.0").await;
    assert_eq!(removed["outcome"], "rolled_back", "{removed}");
    let reason = removed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "guarded 1.1.0 failed its tool-set guard: tools_removed: the new version no longer offers `sleep`"
        ),
        "{reason}"
    );
    assert_eq!(
        removed["tool_diff"]["removed"],
        serde_json::json!(["sleep"])
    );
    assert_eq!(removed["tool_diff"]["added"], serde_json::json!([]));
    let s = agent.server("guarded").await.unwrap();
    assert_eq!(s["running_version"], "1.0.0", "{s}");
    assert_eq!(
        s["instance_id"], first["instance_id"],
        "1.0.0 never stopped"
    );
    let timeline = steps(&agent, &removed).await;
    assert!(
        timeline
            .iter()
            .any(|(step, detail)| step == "tools" && detail == "removed `sleep`"),
        "{timeline:?}"
    );

    // 1.2.0 makes `echo` require `times`: tools_changed.
    repo.push_manifest(
        &manifest("1.2.0", "EXAMPLE_SERVER_STRICT_ECHO: \"true\"", ""),
        "guarded 1.2.0 strict echo",
    );
    let changed = ended_rollout(&agent, "1.2.0").await;
    assert_eq!(changed["outcome"], "rolled_back", "{changed}");
    assert!(
        changed["reason"].as_str().unwrap().contains(
            "tools_changed: calls valid before would be refused by `echo` (`times` is now required)"
        ),
        "{changed}"
    );
    let echo = &changed["tool_diff"]["changed"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["breaking"], true);
    // Remembered like any failed version: not retried by the next syncs.
    agent.syncs_pass(2, "guarded").await;
    let (_, all) = agent.get("/servers/guarded/rollouts?limit=20").await;
    let tries = all["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["to_version"] == "1.2.0")
        .count();
    assert_eq!(tries, 1, "a failed version is not tried again: {all}");

    // The same change, allowed by the policy: rolled out, the diff still recorded.
    repo.push_manifest(
        &manifest(
            "1.3.0",
            "EXAMPLE_SERVER_STRICT_ECHO: \"true\"",
            ", allow_breaking_tool_changes: true",
        ),
        "guarded 1.3.0 allowed",
    );
    let allowed = ended_rollout(&agent, "1.3.0").await;
    assert_eq!(allowed["outcome"], "succeeded", "{allowed}");
    assert_eq!(allowed["tool_diff"]["changed"][0]["breaking"], true);
    let timeline = steps(&agent, &allowed).await;
    assert!(
        timeline.iter().any(|(step, detail)| step == "tools_allowed"
            && detail.starts_with("allow_breaking_tool_changes: tools_changed")),
        "{timeline:?}"
    );
    agent.wait_running("guarded", "1.3.0", DEADLINE).await;

    // `rollout show` lists the tools that changed.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["rollout", "show", &allowed["id"].to_string()])
        .args(["--agent-url", &agent.url])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tools:\n  ! echo  `times` is now required"),
        "{text}"
    );
}
