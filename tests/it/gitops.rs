//! The GitOps loop end to end, with the process runtime: real git pushes, real processes,
//! real SQLite, real HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agent::{Options, TestAgent, process_manifest};
use crate::support::eventually;
use crate::support::git::ManifestRepo;

/// The issue's promise for the webhook and the local watch.
const FAST: Duration = Duration::from_secs(3);

async fn instance_ids(agent: &TestAgent, server: &str) -> Vec<String> {
    let (_, fleet) = agent.get("/servers").await;
    fleet["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["id"] == server)
        .filter_map(|s| s["instance_id"].as_str().map(str::to_owned))
        .collect()
}

async fn health_of(endpoint: &str) -> Option<Value> {
    let url = endpoint.replace("/mcp", "/health");
    reqwest::get(url).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_server_is_deployed_updated_and_removed_through_the_local_watch() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_runs(1).await;

    // Add a server.
    let pushed = Instant::now();
    repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "add alpha");
    let first = agent.wait_running("alpha", "1.0.0", FAST).await;
    eprintln!("deploy seen and healthy after {:?}", pushed.elapsed());
    let old_endpoint = first["endpoint"].as_str().unwrap().to_owned();

    // Change its version: the old instance goes, the new one serves.
    let pushed = Instant::now();
    repo.push_manifest(&process_manifest(&[("alpha", "1.1.0")]), "bump alpha");
    let second = agent.wait_running("alpha", "1.1.0", FAST).await;
    eprintln!("update seen and healthy after {:?}", pushed.elapsed());
    assert_ne!(first["instance_id"], second["instance_id"]);
    eventually(FAST, "the old instance to stop answering", || async {
        health_of(&old_endpoint).await.is_none().then_some(())
    })
    .await;
    assert_eq!(agent.pid_files().len(), 1, "exactly one instance is left");

    // Remove it.
    let pushed = Instant::now();
    repo.push_manifest(&process_manifest(&[]), "remove alpha");
    let endpoint = second["endpoint"].as_str().unwrap().to_owned();
    eventually(FAST, "alpha to be removed", || async {
        (agent.server("alpha").await.is_none()
            && agent.pid_files().is_empty()
            && health_of(&endpoint).await.is_none())
        .then_some(())
    })
    .await;
    eprintln!("removal done after {:?}", pushed.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_alone_sees_a_push_within_one_interval() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    // A file:// URL is fetched but not watched, so only the poll can see the push.
    let poll = Duration::from_secs(1);
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            poll_interval: poll,
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;
    repo.push_manifest(&process_manifest(&[("beta", "2.0.0")]), "add beta");
    agent.wait_running("beta", "2.0.0", poll + FAST).await;
    let (_, runs) = agent.get("/revisions").await;
    assert_eq!(runs["revisions"][0]["trigger"], "poll");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_triggers_a_sync_and_an_unsigned_one_is_refused() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            webhook_secret: Some("s3cret".into()),
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;
    repo.push_manifest(&process_manifest(&[("gamma", "1.0.0")]), "add gamma");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/git", agent.url);

    let unsigned = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let envelope: Value = unsigned.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "UNAUTHORIZED");
    let forged = http
        .post(&url)
        .header(
            "x-hub-signature-256",
            mcp_orchestration::api::sign_webhook(b"wrong", &body),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let pushed = Instant::now();
    let signed = http
        .post(&url)
        .header(
            "x-hub-signature-256",
            mcp_orchestration::api::sign_webhook(b"s3cret", &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 202);
    agent.wait_running("gamma", "1.0.0", FAST).await;
    eprintln!("webhook → healthy after {:?}", pushed.elapsed());
    let (_, runs) = agent.get("/revisions").await;
    assert_eq!(runs["revisions"][0]["trigger"], "webhook");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_manifest_is_rejected_with_located_errors_and_nothing_changes() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("delta", "1.0.0")]), "add delta");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let before = agent
        .wait_running("delta", "1.0.0", Duration::from_secs(10))
        .await;

    let broken = process_manifest(&[("delta", "1.1.0")]).replace("    process:", "    proces:");
    let bad = repo.push_manifest(&broken, "typo");
    let run = eventually(FAST, "the rejected run", || async {
        let (status, run) = agent.get(&format!("/revisions/{bad}")).await;
        (status == 200 && run["result"] == "rejected").then_some(run)
    })
    .await;
    let errors = run["errors"].as_array().unwrap();
    let error = errors
        .iter()
        .find(|e| e["path"] == "servers[0].proces")
        .unwrap_or_else(|| panic!("no error about `proces` in {errors:?}"));
    assert_eq!(error["file"], "ecosystem-manifest.yaml");
    assert_eq!(error["line"], 5);
    assert_eq!(error["column"], 5);
    assert_eq!(
        error["message"],
        "unknown field `proces`, did you mean `process`?"
    );
    let stages: Vec<(String, String)> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("fetch".to_owned(), "succeeded".to_owned()),
            ("validate".to_owned(), "failed".to_owned())
        ]
    );

    // Still the same instance, same version.
    let after = agent.server("delta").await.unwrap();
    assert_eq!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["running_version"], "1.0.0");
    assert!(
        health_of(after["endpoint"].as_str().unwrap())
            .await
            .is_some()
    );

    // The CLI says why.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["revisions", "show", &bad[..8], "--agent-url", &agent.url])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("result   rejected"), "{text}");
    assert!(
        text.contains(
            "ecosystem-manifest.yaml:5:5: error: unknown field `proces`, did you mean `process`?"
        ),
        "{text}"
    );
    assert_eq!(instance_ids(&agent, "delta").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_force_push_to_an_older_commit_converges_back() {
    let repo = ManifestRepo::new();
    let old = repo.push_manifest(&process_manifest(&[("eps", "1.0.0")]), "eps 1.0.0");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent
        .wait_running("eps", "1.0.0", Duration::from_secs(10))
        .await;
    repo.push_manifest(
        &process_manifest(&[("eps", "1.1.0"), ("zeta", "1.0.0")]),
        "eps 1.1.0 and zeta",
    );
    agent.wait_running("eps", "1.1.0", FAST).await;
    agent.wait_running("zeta", "1.0.0", FAST).await;

    repo.force_push(&old);
    agent.wait_running("eps", "1.0.0", FAST).await;
    eventually(FAST, "zeta to be removed", || async {
        agent.server("zeta").await.is_none().then_some(())
    })
    .await;
    let (_, fleet) = agent.get("/servers").await;
    assert_eq!(fleet["applied_revision"], old.as_str());
    eventually(FAST, "one instance left", || async {
        (agent.pid_files().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_adopts_its_fleet_without_restarting_it() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("eta", "1.0.0")]), "eta");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let before = agent
        .wait_running("eta", "1.0.0", Duration::from_secs(10))
        .await;
    let data = agent.stop().await;
    // The fleet outlives the agent.
    assert!(
        health_of(before["endpoint"].as_str().unwrap())
            .await
            .is_some()
    );

    let agent =
        TestAgent::start_in(repo.remote().to_str().unwrap(), Options::default(), data).await;
    let after = agent
        .wait_running("eta", "1.0.0", Duration::from_secs(10))
        .await;
    assert_eq!(
        after["instance_id"], before["instance_id"],
        "adopted, not restarted"
    );
    let (_, runs) = agent.get("/revisions").await;
    assert_eq!(
        runs["revisions"].as_array().unwrap().len(),
        1,
        "the same commit is not run twice"
    );
}
