//! Order between servers (`depends_on`, schema 1.2): starts and upgrades wait for their
//! dependencies' healthy transition, removals go dependents first, and a server that
//! waits says so. Real git, real processes, the monitor's own probes, HTTP on 127.0.0.1.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::support::agent::{Options, TestAgent};
use crate::support::eventually;
use crate::support::example_server_bin;
use crate::support::git::ManifestRepo;

const WAIT: Duration = Duration::from_secs(30);

/// A 1.2 manifest of example servers: (id, version, depends_on). The dependencies need
/// three good probes in a row to count as healthy, so starting a dependent too early
/// would show.
fn manifest(servers: &[(&str, &str, &[&str])]) -> String {
    let bin = example_server_bin();
    if servers.is_empty() {
        return "version: \"1.2\"\nservers: []\n".to_owned();
    }
    let mut text = String::from("version: \"1.2\"\nservers:\n");
    for (id, version, deps) in servers {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 3 }}\n    depends_on: [{}]\n",
            bin.display(),
            deps.join(", ")
        ));
    }
    text
}

fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// The newest rollout of `server` with `action`.
async fn rollout(agent: &TestAgent, server: &str, action: &str) -> Value {
    let (_, page) = agent.get(&format!("/servers/{server}/rollouts")).await;
    page["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("no {action} rollout of {server}: {page}"))
}

/// When `server` (its `instance`) first became healthy.
async fn healthy_at(agent: &TestAgent, server: &str, instance: &str) -> Timestamp {
    let (_, page) = agent
        .get(&format!("/servers/{server}/health/events?limit=500"))
        .await;
    let at = page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["kind"] == "transition" && e["to_state"] == "healthy" && e["instance_id"] == instance
        })
        .map(|e| ts(&e["at"]))
        .min();
    at.unwrap_or_else(|| panic!("{server} ({instance}) never became healthy: {page}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_and_upgrades_wait_for_healthy_dependencies_and_removals_go_in_reverse() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[
            ("api", "1.0.0", &["db"]),
            ("db", "1.0.0", &[]),
            ("web", "1.0.0", &["api", "db"]),
        ]),
        "db, api on db, web on both",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    for id in ["db", "api", "web"] {
        agent.wait_running(id, "1.0.0", WAIT).await;
    }
    // Each start came after the healthy transition of what it depends on.
    let db = rollout(&agent, "db", "deploy").await;
    let api = rollout(&agent, "api", "deploy").await;
    let web = rollout(&agent, "web", "deploy").await;
    let db_healthy = healthy_at(&agent, "db", db["instance_id"].as_str().unwrap()).await;
    let api_healthy = healthy_at(&agent, "api", api["instance_id"].as_str().unwrap()).await;
    assert!(
        db_healthy < ts(&api["started_at"]),
        "api started at {} before db was healthy at {db_healthy}",
        api["started_at"]
    );
    assert!(
        api_healthy < ts(&web["started_at"]),
        "web started at {} before api was healthy at {api_healthy}",
        web["started_at"]
    );

    // One commit upgrades both: api's upgrade waits for db's new version to be healthy.
    repo.push_manifest(
        &manifest(&[
            ("api", "1.1.0", &["db"]),
            ("db", "1.1.0", &[]),
            ("web", "1.0.0", &["api", "db"]),
        ]),
        "db and api 1.1.0",
    );
    agent.wait_running("api", "1.1.0", WAIT).await;
    let db = rollout(&agent, "db", "update").await;
    let api = rollout(&agent, "api", "update").await;
    let db_healthy = healthy_at(&agent, "db", db["instance_id"].as_str().unwrap()).await;
    assert!(
        db_healthy < ts(&api["started_at"]),
        "api's upgrade started at {} before db 1.1.0 was healthy at {db_healthy}",
        api["started_at"]
    );

    // db stopped by an operator: api's next upgrade waits, and says for what.
    let (status, body) = agent
        .call(reqwest::Method::DELETE, "/servers/db", None)
        .await;
    assert_eq!(status, 200, "{body}");
    repo.push_manifest(
        &manifest(&[
            ("api", "1.2.0", &["db"]),
            ("db", "1.1.0", &[]),
            ("web", "1.0.0", &["api", "db"]),
        ]),
        "api 1.2.0",
    );
    let waiting = eventually(WAIT, "api to say it waits for db", || async {
        let s = agent.server("api").await?;
        (s["blocked_by"] == serde_json::json!(["db"])).then_some(s)
    })
    .await;
    assert_eq!(waiting["running_version"], "1.1.0", "{waiting}");
    let out = std::process::Command::new(crate::support::BIN)
        .args(["status", "--agent-url", &agent.url])
        .env("NO_COLOR", "1")
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("api: waits for db to be healthy (depends_on)"),
        "{text}"
    );
    // db back: api goes on by itself (its wake-up is db's healthy transition).
    let (status, body) = agent
        .call(reqwest::Method::POST, "/servers/db/deploy", None)
        .await;
    assert_eq!(status, 202, "{body}");
    agent.wait_running("api", "1.2.0", WAIT).await;
    assert_eq!(agent.server("api").await.unwrap().get("blocked_by"), None);

    // Removing all three: web first, then api, then db, also when the agent that removes
    // them was restarted since it applied their dependencies.
    let data = agent.stop().await;
    let agent =
        TestAgent::start_in(repo.remote().to_str().unwrap(), Options::default(), data).await;
    agent.wait_running("web", "1.0.0", WAIT).await;
    repo.push_manifest(&manifest(&[]), "remove everything");
    eventually(WAIT, "the three to be removed", || async {
        let (_, fleet) = agent.get("/servers").await;
        fleet["servers"].as_array()?.is_empty().then_some(())
    })
    .await;
    let web = rollout(&agent, "web", "remove").await;
    let api = rollout(&agent, "api", "remove").await;
    let db = rollout(&agent, "db", "remove").await;
    assert!(
        ts(&web["finished_at"]) <= ts(&api["started_at"]),
        "api's removal began before web's ended: {web} {api}"
    );
    assert!(
        ts(&api["finished_at"]) <= ts(&db["started_at"]),
        "db's removal began before api's ended: {api} {db}"
    );
}
