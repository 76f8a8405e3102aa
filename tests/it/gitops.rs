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
    // The old instance stops answering a moment before its pid file is removed.
    eventually(FAST, "exactly one instance to be left", || async {
        (agent.pid_files().len() == 1).then_some(())
    })
    .await;

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

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_remote_keeps_the_fleet_running_reports_the_error_and_recovers() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("theta", "1.0.0")]), "theta");
    let poll = Duration::from_millis(300);
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            poll_interval: poll,
            ..Options::default()
        },
    )
    .await;
    let before = agent
        .wait_running("theta", "1.0.0", Duration::from_secs(10))
        .await;

    // The remote disappears.
    let moved = repo.dir.path().join("moved.git");
    std::fs::rename(repo.remote(), &moved).unwrap();
    let fleet = eventually(
        Duration::from_secs(10),
        "the fetch error to be reported",
        || async {
            let (_, fleet) = agent.get("/servers").await;
            fleet["source_error"].is_string().then_some(fleet)
        },
    )
    .await;
    assert!(
        fleet["source_error"]
            .as_str()
            .unwrap()
            .contains("cannot fetch"),
        "{fleet}"
    );
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["status"], "degraded");
    let now = agent.server("theta").await.unwrap();
    assert_eq!(now["instance_id"], before["instance_id"]);
    assert!(
        health_of(now["endpoint"].as_str().unwrap()).await.is_some(),
        "theta keeps serving"
    );

    // It comes back, with a new commit: the agent recovers and applies it.
    std::fs::rename(&moved, repo.remote()).unwrap();
    repo.push_manifest(&process_manifest(&[("theta", "1.1.0")]), "theta 1.1.0");
    agent
        .wait_running("theta", "1.1.0", Duration::from_secs(15))
        .await;
    // The error clears when the sync that fetched the new commit publishes its view.
    eventually(
        Duration::from_secs(10),
        "the source error to clear",
        || async {
            let (_, fleet) = agent.get("/servers").await;
            fleet["source_error"].is_null().then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_stop_needs_a_key_and_is_respected_until_deploy() {
    use crate::support::agent::TEST_API_KEY;
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("iota", "1.0.0")]), "iota");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let running = agent
        .wait_running("iota", "1.0.0", Duration::from_secs(10))
        .await;
    let http = reqwest::Client::new();
    let url = format!("{}/servers/iota", agent.url);

    let anonymous = http.delete(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .delete(&url)
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        health_of(running["endpoint"].as_str().unwrap())
            .await
            .is_some(),
        "refused requests change nothing"
    );

    let stopped = http
        .delete(&url)
        .header("x-api-key", TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let body: Value = stopped.json().await.unwrap();
    assert_eq!(body["stopped_instances"], 1);
    assert!(
        health_of(running["endpoint"].as_str().unwrap())
            .await
            .is_none()
    );

    // A commit touching another server does not bring it back.
    repo.push_manifest(
        &process_manifest(&[("iota", "1.0.0"), ("kappa", "1.0.0")]),
        "add kappa",
    );
    agent.wait_running("kappa", "1.0.0", FAST).await;
    let view = agent.server("iota").await.unwrap();
    assert_eq!(view["state"], "stopped");
    assert!(view["running_version"].is_null(), "{view}");

    // Deploy lifts the stop.
    let deployed = http
        .post(format!("{url}/deploy"))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 202);
    agent.wait_running("iota", "1.0.0", FAST).await;

    let missing = http
        .delete(format!("{}/servers/nope", agent.url))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let envelope: Value = missing.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "SERVER_NOT_FOUND");
    assert!(envelope["error"]["request_id"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_the_fleet_its_rollouts_and_probe_latency() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("nu", "1.0.0")]), "nu");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent
        .wait_running("nu", "1.0.0", Duration::from_secs(10))
        .await;
    let text = eventually(
        Duration::from_secs(10),
        "a healthy server in the metrics",
        || async {
            let r = reqwest::get(format!("{}/metrics", agent.url)).await.ok()?;
            let kind = r.headers().get("content-type")?.to_str().ok()?.to_owned();
            assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
            let text = r.text().await.ok()?;
            text.contains("mcp_orchestration_server_health{state=\"healthy\"} 1\n")
                .then_some(text)
        },
    )
    .await;
    assert!(
        text.contains("mcp_orchestration_servers{state=\"running\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("mcp_orchestration_rollouts_total{outcome=\"succeeded\"} 1\n"),
        "{text}"
    );
    let probes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("mcp_orchestration_probe_duration_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(probes >= 1, "{text}");
    assert!(
        text.contains("# TYPE mcp_orchestration_sync_duration_seconds histogram"),
        "{text}"
    );
}
