//! Continuous health monitoring and bounded auto-recovery, with real processes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agent::{Options, TEST_API_KEY, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::{admin, eventually, example_server_bin};

/// Example servers with fast probes; `extra` is appended to each server's args.
fn manifest(ids: &[&str], recovery: &str, extra_args: &str, interval: f64) -> String {
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for id in ids {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"{extra_args}]\n    health_check: {{ interval_seconds: {interval}, timeout_seconds: 0.15, failure_threshold: 3, success_threshold: 2 }}\n    recovery: {recovery}\n",
            example_server_bin().display()
        ));
    }
    text
}

async fn health(agent: &TestAgent, id: &str) -> Value {
    agent.get(&format!("/servers/{id}/health")).await.1
}

async fn wait_health(agent: &TestAgent, id: &str, state: &str, deadline: Duration) -> Value {
    eventually(deadline, &format!("{id} to be {state}"), || async {
        let h = health(agent, id).await;
        (h["state"] == state).then_some(h)
    })
    .await
}

/// Events of one server, oldest first.
async fn events(agent: &TestAgent, id: &str) -> Vec<Value> {
    let (_, v) = agent
        .get(&format!("/servers/{id}/health/events?limit=1000"))
        .await;
    let mut all = v["events"].as_array().cloned().unwrap_or_default();
    all.reverse();
    all
}

fn transitions(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["kind"] == "transition")
        .map(|e| {
            (
                e["from_state"].as_str().unwrap().to_owned(),
                e["to_state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_five_goes_unhealthy_after_exactly_the_threshold_is_recovered_and_the_others_are_untouched()
 {
    let ids = ["h-a", "h-b", "h-c", "h-d", "h-e"];
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(
            &ids,
            "{ max_attempts: 3, backoff_seconds: 0.3, backoff_multiplier: 2 }",
            "",
            0.2,
        ),
        "five servers",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    // The monitor knows each instance as soon as its rollout publishes it; the fleet view
    // lists the servers once the sync that started them has finished. Both, then.
    for id in ids {
        wait_health(&agent, id, "healthy", Duration::from_secs(15)).await;
        agent
            .wait_running(id, "1.0.0", Duration::from_secs(15))
            .await;
    }
    // The fleet view carries each server's live health for the gateway and `status`.
    let (_, fleet) = agent.get("/servers").await;
    assert_eq!(
        fleet["servers"].as_array().unwrap().len(),
        ids.len(),
        "{fleet}"
    );
    for s in fleet["servers"].as_array().unwrap() {
        assert_eq!(s["health"], "healthy", "{s}");
        assert!(s["health_since"].is_string(), "{s}");
    }
    let sick = "h-c";
    let view = fleet["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sick)
        .cloned()
        .expect("h-c in the fleet");
    let before = Instant::now();
    admin(
        view["endpoint"].as_str().unwrap(),
        "/admin/health/unhealthy",
    )
    .await;

    wait_health(&agent, sick, "unhealthy", Duration::from_secs(5)).await;
    eprintln!("unhealthy after {:?}", before.elapsed());
    let view = agent.server(sick).await.unwrap();
    assert!(
        view["health"] == "unhealthy" || view["health"] == "starting",
        "the server's view shows its health: {view}"
    );
    let log = events(&agent, sick).await;
    let t = transitions(&log);
    assert_eq!(
        t[..3],
        [
            ("unknown".into(), "healthy".into()),
            ("healthy".into(), "degraded".into()),
            ("degraded".into(), "unhealthy".into())
        ]
    );
    let to_unhealthy = log.iter().find(|e| e["to_state"] == "unhealthy").unwrap();
    assert!(
        to_unhealthy["detail"]
            .as_str()
            .unwrap()
            .starts_with("3 failed probes in a row: HTTP 503"),
        "{to_unhealthy}"
    );

    // Recovery: the first attempt (a restart) after its 0.3 s backoff brings it back. The
    // new instance is probed at once, so it may be healthy before the attempt's outcome is
    // recorded: wait for both.
    wait_health(&agent, sick, "healthy", Duration::from_secs(15)).await;
    let recovery: Vec<String> = eventually(
        Duration::from_secs(15),
        "the recovery attempt's outcome",
        || async {
            let recovery: Vec<String> = events(&agent, sick)
                .await
                .iter()
                .filter(|e| e["kind"] == "recovery")
                .map(|e| e["detail"].as_str().unwrap().to_owned())
                .collect();
            (recovery.len() >= 2).then_some(recovery)
        },
    )
    .await;
    assert_eq!(recovery[0], "attempt 1/3 in 0.3s", "{recovery:?}");
    assert_eq!(
        recovery[1], "attempt 1/3: restart: done, a new instance passed its health gate",
        "{recovery:?}"
    );
    let (_, rollouts) = agent.get(&format!("/servers/{sick}/rollouts")).await;
    assert_eq!(rollouts["rollouts"][0]["trigger"], "recovery");

    // The four others: one transition each (unknown → healthy), no failed probe, fast probes.
    for id in ids.iter().filter(|i| **i != sick) {
        let t = transitions(&events(&agent, id).await);
        assert_eq!(
            t,
            [("unknown".to_owned(), "healthy".to_owned())],
            "{id} changed state"
        );
        let h = health(&agent, id).await;
        assert_eq!(h["consecutive_failures"], 0, "{id}: {h}");
        // Nothing slowed their probes: each answered well inside the 150 ms probe timeout.
        let latency = h["last_probe"]["latency_ms"].as_f64().unwrap();
        assert!(latency < 150.0, "{id} probe took {latency} ms");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_server_is_detected_within_interval_times_threshold_plus_timeout() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&["hang"], "{ max_attempts: 0 }", "", 0.2),
        "one server",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let view = agent
        .wait_running("hang", "1.0.0", Duration::from_secs(10))
        .await;
    wait_health(&agent, "hang", "healthy", Duration::from_secs(10)).await;
    let hung = Instant::now();
    admin(view["endpoint"].as_str().unwrap(), "/admin/health/hang").await;
    // With no recovery attempts it moves on to `failed` at once, so watch the transition.
    let h = eventually(
        Duration::from_secs(5),
        "hang to become unhealthy",
        || async {
            events(&agent, "hang")
                .await
                .into_iter()
                .find(|e| e["to_state"] == "unhealthy")
        },
    )
    .await;
    let took = hung.elapsed();
    // interval × threshold + timeout = 0.2 × 3 + 0.15 s; allow one interval of phase and
    // scheduling slack on a loaded machine.
    let bound = Duration::from_secs_f64(0.2 * 3.0 + 0.15 + 0.2 + 0.25);
    assert!(took <= bound, "detected after {took:?}, bound {bound:?}");
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("no answer within 0.1s"),
        "{h}"
    );
    eprintln!("hang detected after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_process_is_seen_at_once_and_restarted() {
    let repo = ManifestRepo::new();
    // Probes every 5 s: only the exit event can explain a detection within a second.
    repo.push_manifest(
        &manifest(
            &["kill"],
            "{ max_attempts: 3, backoff_seconds: 0.1 }",
            "",
            5.0,
        ),
        "one server",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let before = agent
        .wait_running("kill", "1.0.0", Duration::from_secs(10))
        .await;
    let pid_file = agent.pid_files().into_iter().next().unwrap();
    let pid =
        serde_json::from_str::<Value>(&std::fs::read_to_string(pid_file).unwrap()).unwrap()["pid"]
            .as_i64()
            .unwrap();
    let killed = Instant::now();
    // SAFETY: kill(2) of the server process this test's agent started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    eventually(
        Duration::from_secs(1),
        "the exit to make it unhealthy",
        || async {
            let log = events(&agent, "kill").await;
            log.iter().find(|e| e["to_state"] == "unhealthy").cloned()
        },
    )
    .await;
    eprintln!("SIGKILL seen after {:?}", killed.elapsed());
    let after = agent
        .wait_running("kill", "1.0.0", Duration::from_secs(10))
        .await;
    assert_ne!(
        after["instance_id"], before["instance_id"],
        "a new instance serves"
    );
    let log = events(&agent, "kill").await;
    let unhealthy = log.iter().find(|e| e["to_state"] == "unhealthy").unwrap();
    assert_eq!(unhealthy["detail"], "the instance exited with code 137");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stays_broken_ends_failed_and_heals_through_degraded_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("health");
    let repo = ManifestRepo::new();
    let extra = format!(", \"--health-file\", \"{}\"", flag.display());
    repo.push_manifest(
        &manifest(
            &["broken"],
            "{ max_attempts: 3, backoff_seconds: 0.1, backoff_multiplier: 2 }",
            &extra,
            0.2,
        ),
        "one server",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    wait_health(&agent, "broken", "healthy", Duration::from_secs(10)).await;

    // Broken for every instance, restarts included.
    std::fs::write(&flag, "unhealthy").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&agent, "broken").await["state"] != "failed" {
        if Instant::now() > deadline {
            panic!(
                "not failed after 30 s; events: {:#?}",
                events(&agent, "broken").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = events(&agent, "broken").await;
    let recovery: Vec<&str> = log
        .iter()
        .filter(|e| e["kind"] == "recovery")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(
        recovery
            .iter()
            .any(|r| r.starts_with("attempt 1/3: restart")),
        "{recovery:?}"
    );
    assert!(
        recovery
            .iter()
            .any(|r| r.starts_with("attempt 2/3: recreate")),
        "{recovery:?}"
    );
    assert!(
        recovery
            .iter()
            .any(|r| r.starts_with("attempt 3/3: notify")),
        "{recovery:?}"
    );
    assert!(
        recovery
            .iter()
            .any(|r| r.starts_with("3 recovery attempt(s) did not bring it back")),
        "{recovery:?}"
    );
    // The backoff doubles: 0.1, 0.2, 0.4 s.
    assert!(
        recovery.contains(&"attempt 1/3 in 0.1s")
            && recovery.contains(&"attempt 2/3 in 0.2s")
            && recovery.contains(&"attempt 3/3 in 0.4s"),
        "{recovery:?}"
    );

    // Fixed: failed → degraded → healthy, with success_threshold (2) successes.
    std::fs::remove_file(&flag).unwrap();
    wait_health(&agent, "broken", "healthy", Duration::from_secs(10)).await;
    let t = transitions(&events(&agent, "broken").await);
    let tail = &t[t.len() - 3..];
    assert_eq!(
        tail,
        [
            ("unhealthy".to_owned(), "failed".to_owned()),
            ("failed".to_owned(), "degraded".to_owned()),
            ("degraded".to_owned(), "healthy".to_owned())
        ]
    );

    // The restarts that failed their gate ran the version in force: each is a failed
    // rollout, neither rolled back onto the broken instance nor remembered as a failed
    // version, so the healed server is simply running again (not frozen as failed).
    let (_, rollouts) = agent.get("/servers/broken/rollouts").await;
    let restarts: Vec<&Value> = rollouts["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "recovery")
        .collect();
    assert_eq!(restarts.len(), 2, "restart and recreate: {rollouts:#}");
    for r in &restarts {
        assert_eq!(r["outcome"], "failed", "{r:#}");
        assert!(r["rolled_back_to"].is_null(), "{r:#}");
    }
    let db = rusqlite::Connection::open(agent.data.path().join("state.db")).unwrap();
    let remembered: i64 = db
        .query_row("SELECT count(*) FROM failed_versions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(remembered, 0, "a restart's failure is not a failed version");
    let before = agent.sync_count().await;
    agent
        .call(
            reqwest::Method::POST,
            "/servers/broken/rollout/resume",
            None,
        )
        .await;
    agent.wait_syncs(before + 1).await;
    let server = agent.server("broken").await.unwrap();
    assert_eq!(server["state"], "running", "{server:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_is_bounded_and_recorded_and_needs_a_key() {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&["ovr"], "{ max_attempts: 0 }", "", 0.2),
        "one server",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    wait_health(&agent, "ovr", "healthy", Duration::from_secs(10)).await;
    let url = format!("{}/servers/ovr/health/override", agent.url);
    let body = serde_json::json!({ "state": "unhealthy", "duration_seconds": 0.8, "reason": "maintenance" });
    let http = reqwest::Client::new();
    assert_eq!(
        http.post(&url).json(&body).send().await.unwrap().status(),
        401
    );
    let r = http
        .post(&url)
        .bearer_auth(TEST_API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(health(&agent, "ovr").await["state"], "unhealthy");
    // It ends by itself.
    wait_health(&agent, "ovr", "healthy", Duration::from_secs(5)).await;
    let log = events(&agent, "ovr").await;
    assert!(
        log.iter()
            .any(|e| e["kind"] == "override"
                && e["detail"].as_str().unwrap().starts_with("maintenance")),
        "{log:?}"
    );
    let too_long = serde_json::json!({ "state": "healthy", "duration_seconds": 100000 });
    let r = http
        .post(&url)
        .bearer_auth(TEST_API_KEY)
        .json(&too_long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_kill_is_seen_within_a_second_and_the_server_is_restarted() {
    use crate::support::docker::{ContainerGuard, docker, docker_or_skip, example_image};
    if !docker_or_skip("docker_kill_is_seen_within_a_second_and_the_server_is_restarted") {
        return;
    }
    example_image("1.0.0");
    let guard = ContainerGuard::new("hk");
    let id = guard.server_id().to_owned();
    let repo = ManifestRepo::new();
    // Probes every 5 s: only the Docker event can explain a detection within a second.
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n  - id: {id}\n    version: \"1.0.0\"\n    docker: {{ image: mcp-orch-test/example-server, port: 8080 }}\n    health_check: {{ interval_seconds: 5, timeout_seconds: 1, failure_threshold: 3, success_threshold: 1 }}\n    recovery: {{ max_attempts: 3, backoff_seconds: 0.1 }}\n"
        ),
        "one container",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: mcp_orchestration::settings::RuntimeChoice::Docker,
            ..Options::default()
        },
    )
    .await;
    let before = agent
        .wait_running(&id, "1.0.0", Duration::from_secs(30))
        .await;
    let container = before["instance_id"].as_str().unwrap().to_owned();
    docker(&["kill", &container]);
    let killed = Instant::now();
    let seen = eventually(
        Duration::from_secs(1),
        "the kill to make it unhealthy",
        || async {
            events(&agent, &id)
                .await
                .into_iter()
                .find(|e| e["to_state"] == "unhealthy")
        },
    )
    .await;
    eprintln!("docker kill seen after {:?}", killed.elapsed());
    assert_eq!(seen["detail"], "the instance exited with code 137");
    let after = agent
        .wait_running(&id, "1.0.0", Duration::from_secs(30))
        .await;
    assert_ne!(
        after["instance_id"], before["instance_id"],
        "a new container serves"
    );
}

/// A counter of `GET /metrics` for one gateway.
async fn counter(agent: &TestAgent, gateway: &str, name: &str) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", agent.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{gateway=\"{gateway}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{name} for {gateway} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_health_transition_reaches_the_gateway_within_a_second_in_order_across_a_gateway_restart()
{
    use crate::support::receiver::Receiver;
    let gateway = Receiver::start().await;
    let port = gateway.port;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&["gw"], "{ max_attempts: 0 }", "", 0.2),
        "one server",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway_urls: vec![gateway.url.clone()],
            ..Options::default()
        },
    )
    .await;
    let backend = |body: &Value| {
        body["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["id"] == "gw").cloned())
    };
    eventually(
        Duration::from_secs(10),
        "the gateway to learn of a healthy gw",
        || async {
            gateway.bodies().iter().rev().find_map(|b| {
                backend(b).filter(|b| b["health"] == "healthy" && b["routable"] == true)
            })
        },
    )
    .await;

    // A transition reaches the gateway within a second of happening.
    let view = agent.server("gw").await.unwrap();
    admin(
        view["endpoint"].as_str().unwrap(),
        "/admin/health/unhealthy",
    )
    .await;
    let transition = eventually(
        Duration::from_secs(5),
        "the degraded transition",
        || async {
            events(&agent, "gw")
                .await
                .into_iter()
                .find(|e| e["to_state"] == "degraded")
        },
    )
    .await;
    let delivered = eventually(
        Duration::from_secs(5),
        "the gateway to learn of it",
        || async {
            gateway
                .bodies()
                .into_iter()
                .find(|b| backend(b).is_some_and(|x| x["health"] == "degraded"))
        },
    )
    .await;
    let at: jiff::Timestamp = transition["at"].as_str().unwrap().parse().unwrap();
    let received: jiff::Timestamp = delivered["received_at"].as_str().unwrap().parse().unwrap();
    let latency = received.duration_since(at).as_secs_f64();
    assert!(latency < 1.0, "transition → gateway took {latency:.3} s");
    eprintln!("transition → gateway in {:.1} ms", latency * 1000.0);

    // The gateway goes down; the server goes unhealthy (then failed) meanwhile.
    let before_restart = gateway.bodies();
    let url = gateway.url.clone();
    drop(gateway);
    eventually(Duration::from_secs(5), "gw to be failed", || async {
        (health(&agent, "gw").await["state"] == "failed").then_some(())
    })
    .await;
    // The attempts while it is down are counted for the operator.
    eventually(
        Duration::from_secs(10),
        "a failed delivery to be counted",
        || async {
            (counter(
                &agent,
                &url,
                "mcp_orchestration_gateway_publish_failures_total",
            )
            .await
                >= 1)
                .then_some(())
        },
    )
    .await;
    // Back on the same port: it receives the latest state, nothing older.
    let gateway = Receiver::start_on(port).await;
    let latest = eventually(
        Duration::from_secs(10),
        "the gateway to catch up",
        || async {
            gateway
                .bodies()
                .into_iter()
                .find(|b| backend(b).is_some_and(|x| x["health"] == "failed"))
        },
    )
    .await;
    assert_eq!(backend(&latest).unwrap()["routable"], false);
    let delivered = counter(&agent, &url, "mcp_orchestration_gateway_publishes_total").await;
    assert!(delivered >= 2, "{delivered} deliveries counted");
    let sequences: Vec<u64> = before_restart
        .iter()
        .chain(gateway.bodies().iter())
        .map(|b| b["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequences must only grow: {sequences:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_restarts_between_changes_gets_the_latest_state_again() {
    use crate::support::receiver::Receiver;
    let gateway = Receiver::start().await;
    let port = gateway.port;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&["gw-r"], "{ max_attempts: 0 }", "", 0.2),
        "one server",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway_urls: vec![gateway.url.clone()],
            gateway_resend_interval: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .await;
    let healthy = |b: &Value| {
        b["backends"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["id"] == "gw-r" && b["health"] == "healthy")
        })
    };
    let applied = eventually(Duration::from_secs(10), "a healthy gw-r", || async {
        gateway.bodies().into_iter().rev().find(|b| healthy(b))
    })
    .await;
    // The gateway restarts and forgets; nothing changes in the fleet.
    drop(gateway);
    let gateway = Receiver::start_on(port).await;
    let again = eventually(Duration::from_secs(5), "the state sent again", || async {
        gateway.bodies().into_iter().find(|b| healthy(b))
    })
    .await;
    assert!(
        again["sequence"].as_u64() >= applied["sequence"].as_u64(),
        "never older: {again} after {applied}"
    );
    assert_eq!(agent.server("gw-r").await.unwrap()["health"], "healthy");
}
