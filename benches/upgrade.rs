//! Benchmark: registry-driven upgrades and rollbacks with the Docker runtime and a real
//! registry on 127.0.0.1.
//!
//! - tag published → rollout started (the registry poll interval is 1 s);
//! - a rollout's duration split into pull+start (image pulled from the registry, container
//!   created and started), health gate, and switch (publish, stop the old container);
//! - rollback duration (an unhealthy release: from start to the old version verified);
//! - registry requests per poll for 1, 10 and 100 watched repositories.
//!
//!     BENCH_UPGRADES=10 cargo bench --bench upgrade
//!
//! Needs Docker and Debian's `docker-registry`.

use std::time::{Duration, Instant};

use common::kit::agent::Options;
use common::kit::docker::{docker, static_example_binary};
use common::kit::registry::TestRegistry;
use common::{build_image, percentile, repo_with, start_agent};
use jiff::Timestamp;
use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::registry::RegistryClient;
use mcp_orchestration::settings::RuntimeChoice;
use serde_json::Value;

mod common;

fn manifest(host: &str) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: bench-upgrade\n    version: \"1.0.0\"\n    docker: {{ image: {host}/bench/server, port: 8080 }}\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 2 }}\n    update_policy: {{ version_strategy: semantic, allow: minor, progress_deadline_seconds: 30 }}\n"
    )
}

/// Builds and pushes a release, then drops the local copy so the agent must pull it.
fn publish(bin: &std::path::Path, host: &str, version: &str, health: &str) -> Timestamp {
    let tag = format!("{host}/bench/server:{version}");
    build_image(bin, &tag, version, health);
    docker(&["push", "--quiet", &tag]);
    let published = Timestamp::now();
    docker(&["image", "rm", &tag]);
    published
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn finished_rollout(http: &reqwest::Client, agent: &str, version: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = get(
            http,
            &format!("{agent}/servers/bench-upgrade/rollouts?limit=5"),
        )
        .await;
        if let Some(r) = list["rollouts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["to_version"] == version && r["outcome"] != "in_progress")
        {
            return get(http, &format!("{agent}/rollouts/{}", r["id"])).await;
        }
        assert!(
            Instant::now() < deadline,
            "no finished rollout to {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn at(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn step_at(r: &Value, step: &str) -> Timestamp {
    at(&r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step} in {r}"))["at"])
}

fn ms(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64() * 1000.0
}

fn row(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let upgrades: u64 = std::env::var("BENCH_UPGRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rollbacks: u64 = std::env::var("BENCH_ROLLBACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bin = static_example_binary();
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    publish(bin, &host, "1.0.0", "healthy");
    let repo = repo_with(&manifest(&host));
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Docker,
            poll_interval: Duration::from_secs(600),
            registry_poll_interval: Duration::from_secs(1),
            trust: Some(TrustPolicy {
                allowed_images: vec![format!("{host}/")],
                allowed_commands: vec![],
                source: "bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    finished_rollout(&http, &agent.url, "1.0.0").await;

    let (mut to_start, mut pull_start, mut gate, mut switch, mut total) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 1..=upgrades {
        let version = format!("1.{i}.0");
        let published = publish(bin, &host, &version, "healthy");
        let r = finished_rollout(&http, &agent.url, &version).await;
        assert_eq!(r["outcome"], "succeeded", "{r}");
        let started = at(&r["started_at"]);
        to_start.push(ms(published, started));
        pull_start.push(ms(started, step_at(&r, "instance_started")));
        gate.push(ms(step_at(&r, "instance_started"), step_at(&r, "healthy")));
        switch.push(ms(step_at(&r, "healthy"), at(&r["finished_at"])));
        total.push(ms(started, at(&r["finished_at"])));
    }
    let mut rollback = vec![];
    for i in 1..=rollbacks {
        let version = format!("1.{}.0", upgrades + i);
        publish(bin, &host, &version, "unhealthy");
        let r = finished_rollout(&http, &agent.url, &version).await;
        assert_eq!(r["outcome"], "rolled_back", "{r}");
        rollback.push(ms(at(&r["started_at"]), at(&r["finished_at"])));
    }
    println!("| measure | samples | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    row("tag pushed → rollout started", to_start);
    row("rollout: pull + create + start", pull_start);
    row("rollout: health gate (2 healthy probes, 0.2 s apart)", gate);
    row("rollout: switch (publish, stop old)", switch);
    row("rollout: total", total);
    row("rollback: start → old version verified", rollback);
    drop(agent);

    // Registry requests per poll: N repositories, a cold poll then a warm one.
    println!("\n| watched repositories | requests, first poll | requests, next poll |");
    println!("|---|---|---|");
    let base = format!("{host}/bench/server:1.0.0");
    docker(&["pull", "--quiet", &base]);
    for i in 0..100 {
        let tag = format!("{host}/bench/s{i}:1.0.0");
        docker(&["tag", &base, &tag]);
        docker(&["push", "--quiet", &tag]);
        docker(&["image", "rm", &tag]);
    }
    for n in [1usize, 10, 100] {
        let client = RegistryClient::new(Vec::new(), 4);
        let images: Vec<String> = (0..n).map(|i| format!("{host}/bench/s{i}")).collect();
        for image in &images {
            client.list_tags(image).await.unwrap();
        }
        let first = client.requests_sent();
        for image in &images {
            client.list_tags(image).await.unwrap();
        }
        println!("| {n} | {first} | {} |", client.requests_sent() - first);
    }
}
