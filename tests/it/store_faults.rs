//! The core fails closed: while the state database cannot answer (a real SQLite failure,
//! injected from outside), stopped servers stay stopped, failed versions are not retried
//! and nothing else changes; when it answers again, everything is as it was.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{Options, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::{eventually, example_server_bin};

const DEADLINE: Duration = Duration::from_secs(20);

/// `steady` and `stopped` are healthy; `flaky` reads its health from `flag`.
fn manifest(flag: &Path) -> String {
    let bin = example_server_bin();
    let server = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"{extra}]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n",
            bin.display()
        )
    };
    format!(
        "version: \"1.1\"\nservers:\n{}{}{}",
        server("steady", ""),
        server("stopped", ""),
        server(
            "flaky",
            &format!(", \"--health-file\", \"{}\"", flag.display())
        ),
    )
}

async fn state_of(agent: &TestAgent, id: &str) -> Value {
    agent.server(id).await.expect("the server is listed")
}

async fn rollout_count(agent: &TestAgent, id: &str) -> usize {
    let (status, v) = agent
        .get(&format!("/servers/{id}/rollouts?limit=500"))
        .await;
    assert_eq!(status, 200, "{v}");
    v["rollouts"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_and_failed_servers_stay_as_they_are_while_the_store_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("health");
    std::fs::write(&flag, "unhealthy").unwrap();
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(&flag), "three servers, one failing");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            poll_interval: Duration::from_millis(200),
            ..Options::default()
        },
    )
    .await;
    agent
        .wait_running("steady", "1.0.0", Duration::from_secs(10))
        .await;
    agent
        .wait_running("stopped", "1.0.0", Duration::from_secs(10))
        .await;
    eventually(DEADLINE, "flaky to fail its gate", || async {
        (state_of(&agent, "flaky").await["state"] == "failed").then_some(())
    })
    .await;
    let (status, body) = agent
        .call(reqwest::Method::DELETE, "/servers/stopped", None)
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(DEADLINE, "stopped to show stopped", || async {
        (state_of(&agent, "stopped").await["state"] == "stopped").then_some(())
    })
    .await;
    // From here a retry of flaky would pass: only the failed-version memory holds it.
    std::fs::remove_file(&flag).unwrap();
    let rollouts = (
        rollout_count(&agent, "flaky").await,
        rollout_count(&agent, "stopped").await,
        rollout_count(&agent, "steady").await,
    );

    // A real failing statement: the tables of stops, pins and failed versions are gone.
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "ALTER TABLE servers RENAME TO servers_away;
         ALTER TABLE server_pins RENAME TO server_pins_away;
         ALTER TABLE failed_versions RENAME TO failed_versions_away;",
    )
    .unwrap();
    let before = agent.sync_count().await;
    agent.wait_syncs(before + 3).await;
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read the failed versions")),
        "{health}"
    );
    assert_eq!(state_of(&agent, "stopped").await["state"], "stopped");
    assert_eq!(state_of(&agent, "flaky").await["state"], "failed");
    assert_eq!(state_of(&agent, "steady").await["state"], "running");
    assert_eq!(
        (
            rollout_count(&agent, "flaky").await,
            rollout_count(&agent, "stopped").await,
            rollout_count(&agent, "steady").await,
        ),
        rollouts,
        "nothing was deployed, retried or restarted while the store could not be read"
    );

    // The store answers again: the same stops and failures, and the error is gone.
    db.execute_batch(
        "ALTER TABLE servers_away RENAME TO servers;
         ALTER TABLE server_pins_away RENAME TO server_pins;
         ALTER TABLE failed_versions_away RENAME TO failed_versions;",
    )
    .unwrap();
    let before = agent.sync_count().await;
    agent.wait_syncs(before + 2).await;
    let (_, health) = agent.get("/health").await;
    assert!(health["store_error"].is_null(), "{health}");
    assert_eq!(state_of(&agent, "stopped").await["state"], "stopped");
    assert_eq!(state_of(&agent, "flaky").await["state"], "failed");
    assert_eq!(
        (
            rollout_count(&agent, "flaky").await,
            rollout_count(&agent, "stopped").await,
        ),
        (rollouts.0, rollouts.1)
    );

    // What held flaky was the memory: an operator's retry deploys it now.
    let (status, body) = agent
        .call(reqwest::Method::POST, "/servers/flaky/rollout/retry", None)
        .await;
    assert_eq!(status, 202, "{body}");
    agent
        .wait_running("flaky", "1.0.0", Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_action_the_store_cannot_record_fails_with_its_cause_and_changes_nothing() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &crate::support::agent::process_manifest(&[("kept", "1.0.0")]),
        "one server",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let running = agent
        .wait_running("kept", "1.0.0", Duration::from_secs(10))
        .await;
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_holds BEFORE INSERT ON servers BEGIN SELECT RAISE(FAIL, 'injected: disk full'); END;",
    )
    .unwrap();

    let (status, body) = agent
        .call(reqwest::Method::DELETE, "/servers/kept", None)
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("injected: disk full"),
        "the cause is kept: {message}"
    );
    // Not stopped: the stop could not be recorded, so its instance was left alone.
    let now = state_of(&agent, "kept").await;
    assert_eq!(now["state"], "running", "{now}");
    assert_eq!(now["instance_id"], running["instance_id"]);
}
