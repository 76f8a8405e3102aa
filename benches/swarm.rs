//! `--runtime swarm` on a real three-node swarm (`tests/kit/swarm.rs`), measured beside its
//! baselines in one run:
//!
//! - **Node lost.** A one-replica server on a worker; the worker's engine is stopped. From
//!   that instant: the manager declares the node down, Swarm runs a replacement task on
//!   the other worker (both Swarm's own doing, polled through the manager), the agent
//!   shows the server healthy at the new task's address, and a call through the agent's
//!   gateway is answered by it. Rounds alternate between the two workers.
//! - **Commit → healthy.** A version bump pushed to the watched repository until the new
//!   version runs and answers its health endpoint: on the swarm, and on the single host
//!   engine with `--runtime docker`.
//!
//! `cargo bench --bench swarm` (root, Docker; `BENCH_ROUNDS`, `BENCH_PUSHES`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kit::agent::Options;
use common::kit::docker::example_image;
use common::kit::eventually;
use common::kit::git::ManifestRepo;
use common::kit::swarm::{Swarm, swarm_or_skip};
use common::{percentile, start_agent};
use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::RuntimeChoice;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::Value;

mod common;

const DEADLINE: Duration = Duration::from_secs(120);

fn manifest(version: &str, docker_extra: &str) -> String {
    format!(
        "version: \"1.2\"\nservers:\n  - id: bench\n    version: \"{version}\"\n    docker:\n      image: mcp-orch-test/example-server\n      port: 8080\n{docker_extra}    health_check: {{ interval_seconds: 0.25, timeout_seconds: 0.2, failure_threshold: 2, success_threshold: 1 }}\n    recovery: {{ max_attempts: 3, backoff_seconds: 0.5 }}\n"
    )
}

fn options(runtime: RuntimeChoice, docker_host: Option<String>) -> Options {
    Options {
        runtime,
        docker_host,
        gateway: true,
        trust: Some(TrustPolicy {
            allowed_images: vec!["mcp-orch-test/".into()],
            source: "bench".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `bench`'s view when it runs `version`, healthy, answering at its endpoint.
async fn healthy(http: &reqwest::Client, url: &str, version: &str) -> Option<Value> {
    let s: Value = http
        .get(format!("{url}/servers/bench"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    if s["running_version"] != version || s["health"] != "healthy" {
        return None;
    }
    let endpoint = s["endpoint"].as_str()?.replace("/mcp", "/health");
    let b: Value = http.get(endpoint).send().await.ok()?.json().await.ok()?;
    (b["version"] == version && b["status"] == "healthy").then_some(s)
}

/// Milliseconds from each push of a version bump to the new version healthy.
async fn commit_to_healthy(
    runtime: RuntimeChoice,
    swarm: Option<&Swarm>,
    pushes: usize,
) -> Vec<f64> {
    let extra = if swarm.is_some() {
        "      placement: { constraints: [\"node.role==worker\"] }\n"
    } else {
        ""
    };
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("1.0.0", extra), "start");
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        options(runtime, swarm.map(|s| s.docker_host().to_owned())),
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(DEADLINE, "1.0.0 healthy", || {
        healthy(&http, &agent.url, "1.0.0")
    })
    .await;
    let mut samples = Vec::new();
    for i in 0..pushes {
        let version = if i % 2 == 0 { "1.1.0" } else { "1.0.0" };
        std::fs::write(
            repo.work().join("ecosystem-manifest.yaml"),
            manifest(version, extra),
        )
        .unwrap();
        repo.git(&["commit", "-qam", version]);
        repo.git(&["push", "-q", "origin", "HEAD:main"]);
        let pushed = Instant::now();
        while healthy(&http, &agent.url, version).await.is_none() {
            assert!(pushed.elapsed() < DEADLINE, "push {i} not healthy in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(pushed.elapsed().as_secs_f64() * 1000.0);
    }
    drop(agent);
    samples
}

/// When each step of one node loss happened, in ms after the engine stopped.
#[derive(Debug, Default)]
struct Loss {
    down: f64,
    swarm_running: f64,
    agent_healthy: f64,
    routed: f64,
}

async fn node_losses(swarm: Arc<Swarm>, rounds: usize) -> Vec<Loss> {
    // The server may run on either worker; the test moves it by stopping the one it is on.
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(
            "1.0.0",
            "      placement: { constraints: [\"node.role==worker\"] }\n",
        ),
        "one replica on a worker",
    );
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        options(RuntimeChoice::Swarm, Some(swarm.docker_host().to_owned())),
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(DEADLINE, "the server healthy", || {
        healthy(&http, &agent.url, "1.0.0")
    })
    .await;
    let gateway = agent.gateway.clone().unwrap();
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("swarm-bench", "0"),
    )
    .serve(StreamableHttpClientTransport::from_uri(gateway))
    .await
    .unwrap();
    let mut losses = Vec::new();
    for round in 0..rounds {
        let view = healthy(&http, &agent.url, "1.0.0").await.unwrap();
        let node = view["tasks"][0]["node"].as_str().unwrap().to_owned();
        let lost = swarm.node_index(&node).unwrap();
        let other = if lost == 2 { 3 } else { 2 };
        let other_addr = swarm.node_addr(other).to_string();
        let service = view["instance_id"].as_str().unwrap().to_owned();

        let s = swarm.clone();
        let stopped = Instant::now();
        blocking(move || s.stop_node(lost)).await;
        let ms = move || stopped.elapsed().as_secs_f64() * 1000.0;
        // Swarm's side, watched through the manager in the blocking pool meanwhile.
        let s = swarm.clone();
        let swarm_side = blocking(move || {
            let (mut down, mut running) = (None, None);
            while down.is_none() || running.is_none() {
                assert!(
                    stopped.elapsed() < DEADLINE,
                    "Swarm did not replace the task"
                );
                if down.is_none() && s.node_state(lost) == "down" {
                    down = Some(ms());
                }
                if running.is_none() && s.running_tasks(&service).iter().any(|t| t.node == other) {
                    running = Some(ms());
                }
            }
            (down.unwrap(), running.unwrap())
        });
        let mut loss = Loss::default();
        let mut seen_healthy = None;
        loop {
            assert!(
                stopped.elapsed() < DEADLINE,
                "round {round}: not routed in time"
            );
            if seen_healthy.is_none()
                && let Some(v) = healthy(&http, &agent.url, "1.0.0").await
                && v["endpoint"]
                    .as_str()
                    .is_some_and(|e| e.contains(&format!("//{other_addr}:")))
            {
                seen_healthy = Some(ms());
            }
            if seen_healthy.is_some() {
                let call = client
                    .call_tool(CallToolRequestParams::new("bench_server_version"))
                    .await;
                if call.is_ok_and(|r| r.is_error != Some(true)) {
                    loss.routed = ms();
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loss.agent_healthy = seen_healthy.unwrap();
        (loss.down, loss.swarm_running) = swarm_side.await;
        eprintln!("round {round}: node {lost} lost: {loss:?}");
        losses.push(loss);
        let s = swarm.clone();
        blocking(move || s.start_node(lost)).await;
    }
    let _ = client.cancel().await;
    drop(agent);
    losses
}

/// Two replicas, one per worker; each round stops the node the gateway routes to while a
/// client calls in a loop. Per round: ms until the view routes to the other task (the
/// monitor's failover), and the calls made and failed in the 3 s after the stop.
async fn replica_failovers(swarm: Arc<Swarm>, rounds: usize) -> Vec<(f64, usize, usize)> {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(
            "1.0.0",
            "      replicas: 2\n      placement: { constraints: [\"node.role==worker\"], max_replicas_per_node: 1 }\n",
        ),
        "two replicas",
    );
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        options(RuntimeChoice::Swarm, Some(swarm.docker_host().to_owned())),
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let both = || async {
        let v = healthy(&http, &agent.url, "1.0.0").await?;
        let serving = v["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["endpoint"].is_string())
            .count();
        (serving == 2).then_some(v)
    };
    eventually(DEADLINE, "two serving tasks", both).await;
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("swarm-bench", "0"),
    )
    .serve(StreamableHttpClientTransport::from_uri(
        agent.gateway.clone().unwrap(),
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    for round in 0..rounds {
        let view = both().await.unwrap();
        let endpoint = view["endpoint"].as_str().unwrap().to_owned();
        let lost = (2..=3)
            .find(|n| endpoint.contains(&format!("//{}:", swarm.node_addr(*n))))
            .unwrap();
        let other = format!("//{}:", swarm.node_addr(5 - lost));
        // The stop runs beside the calls: from its first signal the node's containers go.
        let s = swarm.clone();
        let stopped = Instant::now();
        let stopping = tokio::task::spawn_blocking(move || s.stop_node(lost));
        let (mut moved, mut calls, mut failed) = (None, 0, 0);
        while stopped.elapsed() < Duration::from_secs(3) {
            let r = client
                .call_tool(CallToolRequestParams::new("bench_server_version"))
                .await;
            calls += 1;
            match r {
                Ok(r) if r.is_error != Some(true) => {}
                other => {
                    failed += 1;
                    eprintln!("round {round}: a failed call: {other:?}");
                }
            }
            if moved.is_none() {
                let v: Value = http
                    .get(format!("{}/servers/bench", agent.url))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["endpoint"].as_str().is_some_and(|e| e.contains(&other)) {
                    moved = Some(stopped.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        stopping.await.unwrap();
        let moved = moved.unwrap_or_else(|| panic!("round {round}: the view never moved"));
        eprintln!(
            "round {round}: node {lost} lost: routed elsewhere after {moved:.0} ms; {failed} of {calls} calls failed"
        );
        out.push((moved, calls, failed));
        let s = swarm.clone();
        blocking(move || s.start_node(lost)).await;
        eventually(DEADLINE, "the lost task back", both).await;
    }
    let _ = client.cancel().await;
    drop(agent);
    out
}

fn row(name: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile(samples, 0.5),
        percentile(samples, 0.95),
        samples.last().copied().unwrap_or_default()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !swarm_or_skip("the swarm benchmark") {
        return;
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, pushes) = (env("BENCH_ROUNDS", 6), env("BENCH_PUSHES", 10));
    let swarm = blocking(|| {
        let swarm = Swarm::start(3);
        for v in ["1.0.0", "1.1.0"] {
            swarm.load_image(&example_image(v));
        }
        Arc::new(swarm)
    })
    .await;
    // A node's heartbeat makes Swarm's own detection time; the kit sets 1 s.
    let heartbeat = swarm.manager(&[
        "info",
        "--format",
        "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}",
    ]);

    let losses = node_losses(swarm.clone(), rounds).await;
    println!(
        "Node lost (dispatcher heartbeat {heartbeat}), ms after its engine was told to stop:\n"
    );
    println!("| step | rounds | median | p95 | max |");
    println!("|---|---|---|---|---|");
    let column = |f: fn(&Loss) -> f64| losses.iter().map(f).collect::<Vec<f64>>();
    row(
        "manager declares the node down (Swarm)",
        &mut column(|l| l.down),
    );
    row(
        "replacement task running on the other worker (Swarm)",
        &mut column(|l| l.swarm_running),
    );
    row(
        "agent: healthy at the new task's address",
        &mut column(|l| l.agent_healthy),
    );
    row(
        "a call through the gateway answered",
        &mut column(|l| l.routed),
    );

    let failovers = replica_failovers(swarm.clone(), rounds).await;
    let (calls, failed) = failovers
        .iter()
        .fold((0, 0), |(c, f), r| (c + r.1, f + r.2));
    println!(
        "\nTwo replicas, the routed task's node lost, ms after its engine was told to stop:\n"
    );
    println!("| step | rounds | median | p95 | max |");
    println!("|---|---|---|---|---|");
    row(
        "the view (and the gateway) route to the other task (monitor failover)",
        &mut failovers.iter().map(|r| r.0).collect::<Vec<f64>>(),
    );
    println!("\nCalls in the 3 s after each stop: {calls} made, {failed} failed.");

    let mut docker = commit_to_healthy(RuntimeChoice::Docker, None, pushes).await;
    let mut on_swarm = commit_to_healthy(RuntimeChoice::Swarm, Some(&swarm), pushes).await;
    println!("\nCommit → new version healthy (local watch), ms:\n");
    println!("| runtime | pushes | median | p95 | max |");
    println!("|---|---|---|---|---|");
    row("docker (the host's engine)", &mut docker);
    row("swarm (3 nodes, a worker)", &mut on_swarm);
    blocking(move || drop(swarm)).await;
}
