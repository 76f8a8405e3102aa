//! Registry-driven upgrades under update policies, health-gated rollout and automatic
//! rollback, against a real registry on 127.0.0.1 and a real Docker Engine.

use std::time::{Duration, Instant};

use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::RuntimeChoice;
use serde_json::Value;

use crate::support::agent::{Options, TestAgent};
use crate::support::docker::{ContainerGuard, TestRegistry, docker_or_skip, registry_or_skip};
use crate::support::eventually;
use crate::support::git::ManifestRepo;
use crate::support::images::publish;
use crate::support::receiver::Receiver;

const POLL: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(30);

fn server(id: &str, host: &str, version: &str, policy: &str) -> String {
    format!(
        "  - id: {id}\n    version: \"{version}\"\n    docker: {{ image: {host}/example/server, port: 8080 }}\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 2 }}\n    update_policy: {policy}\n"
    )
}

fn manifest(servers: &[String]) -> String {
    format!("version: \"1.1\"\nservers:\n{}", servers.concat())
}

/// An agent on the test registry; `channels` are the notification URLs its trust policy
/// allows.
async fn agent_for(repo: &ManifestRepo, host: &str, channels: &[&str]) -> TestAgent {
    TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Docker,
            registry_poll_interval: POLL,
            trust: Some(TrustPolicy {
                allowed_images: vec![format!("{host}/")],
                allowed_commands: vec![],
                allowed_notification_urls: channels.iter().map(|c| c.to_string()).collect(),
                source: "test".into(),
                ..Default::default()
            }),
            ..Options::default()
        },
    )
    .await
}

async fn rollouts(agent: &TestAgent, id: &str) -> Vec<Value> {
    let (_, v) = agent
        .get(&format!("/servers/{id}/rollouts?limit=100"))
        .await;
    v["rollouts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_upgrades_follow_each_update_policy() {
    if !docker_or_skip("registry_upgrades_follow_each_update_policy")
        || !registry_or_skip("registry_upgrades_follow_each_update_policy")
    {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    publish(&host, "1.0.0", "healthy");
    publish(&host, "2.0.0", "healthy");

    let guards = [
        ContainerGuard::new("up-sem"),
        ContainerGuard::new("up-pin"),
        ContainerGuard::new("up-lat"),
    ];
    let [sem, pin, lat] = guards.each_ref().map(|g| g.server_id().to_owned());
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[
            server(&sem, &host, "1.0.0", "standard"),
            server(&pin, &host, "1.0.0", "pinned"),
            server(&lat, &host, "1.0.0", "latest"),
        ]),
        "three policies",
    );
    let agent = agent_for(&repo, &host, &[]).await;
    agent.wait_running(&lat, "2.0.0", DEADLINE).await;
    agent.wait_running(&sem, "1.0.0", DEADLINE).await;
    agent.wait_running(&pin, "1.0.0", DEADLINE).await;

    let published = Instant::now();
    publish(&host, "1.1.0", "healthy");
    agent
        .wait_running(&sem, "1.1.0", POLL + Duration::from_secs(5))
        .await;
    eprintln!("1.1.0 published → running after {:?}", published.elapsed());
    // The new version serves before its rollout record closes (the old one still drains).
    let upgrade = eventually(DEADLINE, "the upgrade's rollout to finish", || async {
        let all = rollouts(&agent, &sem).await;
        (all[0]["outcome"] != "in_progress").then_some(all)
    })
    .await;
    assert_eq!(upgrade[0]["trigger"], "registry");
    assert_eq!(upgrade[0]["from_version"], "1.0.0");
    assert_eq!(upgrade[0]["to_version"], "1.1.0");
    assert_eq!(upgrade[0]["outcome"], "succeeded");
    assert!(
        upgrade[0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{}",
        upgrade[0]
    );

    // Never to 2.0.0 under `allow: minor`; pinned never moves; latest stays on the highest.
    for r in rollouts(&agent, &sem).await {
        assert_ne!(r["to_version"], "2.0.0", "{r}");
    }
    assert_eq!(
        agent.server(&pin).await.unwrap()["running_version"],
        "1.0.0"
    );
    assert_eq!(
        rollouts(&agent, &pin).await.len(),
        1,
        "only its first deploy"
    );
    assert_eq!(
        agent.server(&lat).await.unwrap()["running_version"],
        "2.0.0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_version_is_rolled_back_remembered_and_skipped_until_a_newer_one() {
    if !docker_or_skip("a_failing_version_is_rolled_back")
        || !registry_or_skip("a_failing_version_is_rolled_back")
    {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    publish(&host, "1.0.0", "healthy");
    publish(&host, "1.1.0", "healthy");
    let receiver = Receiver::start().await;
    let guard = ContainerGuard::new("rb");
    let id = guard.server_id().to_owned();
    let policy = format!(
        "{{ version_strategy: semantic, allow: minor, rollback_on_failure: true, progress_deadline_seconds: 20, notification_channel: \"{}\" }}",
        receiver.url
    );
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[server(&id, &host, "1.0.0", &policy)]),
        "one server",
    );
    let agent = agent_for(&repo, &host, &[&receiver.url]).await;
    let good = agent.wait_running(&id, "1.1.0", DEADLINE).await;

    publish(&host, "1.2.0", "unhealthy");
    let failed = eventually(DEADLINE, "the 1.2.0 rollout to be rolled back", || async {
        rollouts(&agent, &id)
            .await
            .into_iter()
            .find(|r| r["to_version"] == "1.2.0" && r["outcome"] != "in_progress")
    })
    .await;
    assert_eq!(failed["outcome"], "rolled_back", "{failed}");
    assert_eq!(failed["rolled_back_to"], "1.1.0");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("1.2.0 failed its health gate: 2 failed probes in a row"),
        "{reason}"
    );
    assert!(
        reason.contains("HTTP 503"),
        "the last probe result is in the reason: {reason}"
    );

    // 1.1.0 never stopped serving and is healthy.
    let now = agent.wait_running(&id, "1.1.0", DEADLINE).await;
    assert_eq!(now["instance_id"], good["instance_id"]);

    // The timeline and probes are kept; the notification went out.
    let (_, detail) = agent.get(&format!("/rollouts/{}", failed["id"])).await;
    let steps: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"gate_failed") && steps.contains(&"rolled_back"),
        "{steps:?}"
    );
    assert!(
        detail["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["outcome"] == "unhealthy")
    );
    let event = eventually(
        Duration::from_secs(10),
        "the rollback notification",
        || async {
            receiver
                .bodies()
                .into_iter()
                .find(|b| b["event"] == "rollout_rolled_back")
        },
    )
    .await;
    assert_eq!(event["server_id"], id.as_str());
    assert_eq!(event["to_version"], "1.2.0");
    assert_eq!(event["rolled_back_to"], "1.1.0");

    // Five more syncs: 1.2.0 is not tried again.
    agent.syncs_pass(5, &id).await;
    let attempts = rollouts(&agent, &id)
        .await
        .into_iter()
        .filter(|r| r["to_version"] == "1.2.0")
        .count();
    assert_eq!(attempts, 1, "1.2.0 was retried");
    let view = agent.server(&id).await.unwrap();
    assert_eq!(view["running_version"], "1.1.0");

    // A newer, healthy release is rolled out.
    publish(&host, "1.3.0", "healthy");
    agent
        .wait_running(&id, "1.3.0", POLL + Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_with_a_dynamic_port_has_zero_downtime() {
    if !docker_or_skip("an_upgrade_with_a_dynamic_port_has_zero_downtime")
        || !registry_or_skip("an_upgrade_with_a_dynamic_port_has_zero_downtime")
    {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    publish(&host, "1.0.0", "healthy");
    let guard = ContainerGuard::new("zd");
    let id = guard.server_id().to_owned();
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[server(&id, &host, "1.0.0", "standard")]),
        "one server",
    );
    let mut options = Options {
        runtime: RuntimeChoice::Docker,
        registry_poll_interval: POLL,
        drain: Duration::from_millis(500),
        trust: Some(TrustPolicy {
            allowed_images: vec![format!("{host}/")],
            allowed_commands: vec![],
            source: "test".into(),
            ..Default::default()
        }),
        ..Options::default()
    };
    options.poll_interval = Duration::from_secs(120);
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), options).await;
    agent.wait_running(&id, "1.0.0", DEADLINE).await;

    // A client that, every 50 ms, asks the agent where the server is and calls it there.
    let stop = tokio_util::sync::CancellationToken::new();
    let client = {
        let stop = stop.clone();
        let url = format!("{}/servers/{id}", agent.url);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let (mut ok, mut failures, mut versions) = (0u32, Vec::new(), Vec::new());
            while !stop.is_cancelled() {
                let view: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                let endpoint = view["endpoint"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("/mcp", "/health");
                match http.get(&endpoint).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        let body: Value = r.json().await.unwrap_or_default();
                        versions.push(body["version"].as_str().unwrap_or("").to_owned());
                    }
                    Ok(r) => failures.push(format!("{endpoint}: HTTP {}", r.status())),
                    Err(e) => failures.push(format!("{endpoint}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failures, versions)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&host, "1.1.0", "healthy");
    agent.wait_running(&id, "1.1.0", DEADLINE).await;
    // Keep probing through the drain and the old container's stop.
    eventually(DEADLINE, "the old container to be gone", || async {
        (guard.containers().len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (ok, failures, versions) = client.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests out of {}: {failures:?}",
        failures.len(),
        ok as usize + failures.len()
    );
    assert!(
        versions.iter().any(|v| v == "1.0.0") && versions.iter().any(|v| v == "1.1.0"),
        "{versions:?}"
    );
    eprintln!("{ok} requests every 50 ms across the upgrade, none failed");
}

/// Issue 16 item 4: a deny window holds a registry upgrade, `GET /servers` says which window
/// holds what and until when, an operator's deploy still goes through (recorded as the
/// operator's), and the held upgrade rolls out right after the window's end.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_window_holds_a_registry_upgrade_until_its_end() {
    let test = "a_sync_window_holds_a_registry_upgrade_until_its_end";
    if !docker_or_skip(test) || !registry_or_skip(test) {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    publish(&host, "1.0.0", "healthy");
    publish(&host, "1.1.0", "healthy");

    let guards = [
        ContainerGuard::new("win-held"),
        ContainerGuard::new("win-op"),
    ];
    let [held, op] = guards.each_ref().map(|g| g.server_id().to_owned());
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[
            server(&held, &host, "1.0.0", "standard"),
            server(&op, &host, "1.0.0", "standard"),
        ]),
        "two servers that may follow minors",
    );
    // A one-off deny window, open from now for a fractional number of seconds: long
    // enough for the first deploy and the checks below, short enough for a test.
    let opened = jiff::Timestamp::now();
    let end = opened + jiff::SignedDuration::from_secs_f64(10.5);
    let windows = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        windows.path(),
        format!(
            "windows:\n  - name: release-freeze\n    kind: deny\n    start: {opened}\n    duration: 10.5s\n"
        ),
    )
    .unwrap();
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Docker,
            registry_poll_interval: POLL,
            sync_windows: Some(windows.path().to_owned()),
            trust: Some(TrustPolicy {
                allowed_images: vec![format!("{host}/")],
                source: "test".into(),
                ..Default::default()
            }),
            ..Options::default()
        },
    )
    .await;
    // The first deploy is the manifest's version: the newer tag waits for the window.
    agent.wait_running(&held, "1.0.0", DEADLINE).await;
    agent.wait_running(&op, "1.0.0", DEADLINE).await;
    let shown = eventually(
        DEADLINE,
        "the view to say what the window holds",
        || async {
            let s = agent.server(&held).await?;
            (s["held_by_window"]["what"] == "1.1.0").then_some(s)
        },
    )
    .await;
    assert!(
        jiff::Timestamp::now() < end,
        "the first deploy took longer than the window; the test cannot show the hold"
    );
    let hold = &shown["held_by_window"];
    assert_eq!(hold["window"], "release-freeze", "{shown}");
    assert_eq!(hold["kind"], "deny", "{shown}");
    assert_eq!(hold["change"], "registry", "{shown}");
    assert_eq!(hold["until"], end.to_string(), "{shown}");
    let (_, fleet) = agent.get("/servers").await;
    assert_eq!(fleet["windows"][0]["name"], "release-freeze", "{fleet}");
    assert_eq!(fleet["windows"][0]["until"], end.to_string(), "{fleet}");
    // Syncs pass (each woken by an operator action that changes nothing) and the upgrade
    // still waits.
    agent.syncs_pass(2, &held).await;
    assert_eq!(
        agent.server(&held).await.unwrap()["running_version"],
        "1.0.0"
    );

    // An operator's deploy goes through the window, recorded as the operator's.
    let (status, body) = agent
        .call(
            reqwest::Method::POST,
            &format!("/servers/{op}/deploy"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    agent.wait_running(&op, "1.1.0", DEADLINE).await;
    let by_operator = rollouts(&agent, &op).await;
    assert_eq!(by_operator[0]["to_version"], "1.1.0");
    assert_eq!(by_operator[0]["trigger"], "operator");
    let before_end = jiff::Timestamp::now();
    if before_end < end {
        assert_eq!(
            agent.server(&held).await.unwrap()["running_version"],
            "1.0.0",
            "the window still holds the other server"
        );
    }

    // The window ends: the held upgrade rolls out right after, without waiting for a poll.
    agent
        .wait_running(&held, "1.1.0", Duration::from_secs(30))
        .await;
    let after = rollouts(&agent, &held).await;
    let upgrade = after
        .iter()
        .find(|r| r["to_version"] == "1.1.0")
        .expect("the upgrade's rollout");
    let started: jiff::Timestamp = upgrade["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= end, "started {started}, the window ended {end}");
    assert!(
        started < end + jiff::SignedDuration::from_secs(5),
        "released promptly: started {started}, the window ended {end}"
    );
    // The sync that rolled it out publishes a view without the hold (the new instance
    // was shown earlier, as it was switched to).
    eventually(DEADLINE, "the view without the window", || async {
        let (_, fleet) = agent.get("/servers").await;
        let server = fleet["servers"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == held)?;
        (server.get("held_by_window").is_none() && fleet["windows"] == serde_json::json!([]))
            .then_some(())
    })
    .await;
}
