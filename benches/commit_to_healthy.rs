//! Benchmark: how long from `git push` returning to the server answering `/health` with the
//! pushed version, per trigger (local watch, webhook, polling) and runtime (process, docker);
//! and the agent's idle CPU and RSS while it watches a repository.
//!
//!     cargo bench --bench commit_to_healthy                      # process runtime, 20 pushes
//!     BENCH_PUSHES=50 BENCH_DOCKER=1 cargo bench --bench commit_to_healthy
//!
//! Docker mode needs images `mcp-orch-test/example-server:{1.0.0,1.1.0}` (the integration
//! tests build them). Everything runs on 127.0.0.1. Results are printed as Markdown rows for
//! BENCHMARKS.md.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kit::agent::Options;
use common::kit::git::ManifestRepo;
use common::{Agent, percentile, start_agent};
use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::RuntimeChoice;
use serde_json::Value;

mod common;

fn manifest(runtime: RuntimeChoice, bin: &Path, version: &str) -> String {
    let body = match runtime {
        RuntimeChoice::Process => format!(
            "    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n",
            bin.display()
        ),
        RuntimeChoice::Docker | RuntimeChoice::Swarm => {
            "    docker: { image: mcp-orch-test/example-server, port: 8080 }\n".to_owned()
        }
    };
    format!(
        "version: \"1.1\"\nservers:\n  - id: bench\n    version: \"{version}\"\n{body}    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n"
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    Watch,
    Webhook,
    Poll,
}

async fn healthy_at(http: &reqwest::Client, agent: &Agent, version: &str) -> bool {
    let Ok(r) = http
        .get(format!("{}/servers/bench", agent.url))
        .send()
        .await
    else {
        return false;
    };
    let Ok(s) = r.json::<Value>().await else {
        return false;
    };
    let Some(endpoint) = s["endpoint"].as_str() else {
        return false;
    };
    let Ok(r) = http.get(endpoint.replace("/mcp", "/health")).send().await else {
        return false;
    };
    let Ok(b) = r.json::<Value>().await else {
        return false;
    };
    b["version"] == version && b["status"] == "healthy"
}

async fn measure(runtime: RuntimeChoice, trigger: Trigger, pushes: usize, bin: &Path) -> Vec<f64> {
    let repo = ManifestRepo::new();
    let remote = repo.remote();
    let write = |version: &str| {
        std::fs::write(
            repo.work().join("ecosystem-manifest.yaml"),
            manifest(runtime, bin, version),
        )
        .unwrap();
        repo.git(&["commit", "-qam", version]);
    };
    repo.push_manifest(&manifest(runtime, bin, "1.0.0"), "start");
    let (url, poll) = match trigger {
        Trigger::Watch => (remote.display().to_string(), Duration::from_secs(600)),
        Trigger::Webhook => (
            format!("file://{}", remote.display()),
            Duration::from_secs(600),
        ),
        Trigger::Poll => (
            format!("file://{}", remote.display()),
            Duration::from_secs(1),
        ),
    };
    let agent = start_agent(
        &url,
        Options {
            runtime,
            poll_interval: poll,
            registry_poll_interval: Duration::from_secs(600),
            trust: Some(TrustPolicy {
                allowed_images: vec!["mcp-orch-test/".into()],
                allowed_commands: vec![bin.parent().unwrap().display().to_string()],
                source: "bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    while !healthy_at(&http, &agent, "1.0.0").await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::new();
    for i in 0..pushes {
        let version = if i % 2 == 0 { "1.1.0" } else { "1.0.0" };
        write(version);
        repo.git(&["push", "-q", "origin", "HEAD:main"]);
        let pushed = Instant::now();
        if trigger == Trigger::Webhook {
            http.post(format!("{}/webhooks/git", agent.url))
                .body(r#"{"ref":"refs/heads/main"}"#)
                .send()
                .await
                .unwrap();
        }
        let deadline = pushed + Duration::from_secs(60);
        while !healthy_at(&http, &agent, version).await {
            assert!(
                Instant::now() < deadline,
                "push {i} not healthy within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(pushed.elapsed().as_secs_f64() * 1000.0);
    }
    drop(agent);
    samples
}

/// Idle CPU (% of one core) and RSS of the agent binary watching a repository, over `secs`.
fn idle(secs: u64) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let repo = ManifestRepo::new();
    repo.push_manifest("version: \"1.1\"\nservers: []\n", "empty");
    let mut child = Command::new(common::release_agent())
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "30s",
            "--repo",
        ])
        // The gateway on, as by default, but on a free port (the baseline ignores this).
        .env("MCP_ORCHESTRATION_GATEWAY_LISTEN", "127.0.0.1:0")
        .arg(repo.remote())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    let before = common::cpu_seconds(&pid);
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (common::cpu_seconds(&pid) - before) / secs as f64 * 100.0;
    let rss_kb = common::status_kib(&pid, "VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    (cpu, rss_kb)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let pushes: usize = std::env::var("BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let docker = std::env::var("BENCH_DOCKER").is_ok_and(|v| v == "1");
    let bin = common::release_example();
    println!("| runtime | trigger | pushes | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let mut runtimes = vec![RuntimeChoice::Process];
    if docker {
        runtimes.push(RuntimeChoice::Docker);
    }
    for runtime in runtimes {
        for (trigger, name) in [
            (Trigger::Watch, "local watch"),
            (Trigger::Webhook, "webhook"),
            (Trigger::Poll, "poll (1 s)"),
        ] {
            let mut s = measure(runtime, trigger, pushes, &bin).await;
            s.sort_by(f64::total_cmp);
            let rt = if runtime == RuntimeChoice::Docker {
                "docker"
            } else {
                "process"
            };
            println!(
                "| {rt} | {name} | {} | {:.0} | {:.0} | {:.0} |",
                s.len(),
                percentile(&s, 0.5),
                percentile(&s, 0.95),
                s[s.len() - 1]
            );
        }
    }
    let (cpu, rss) = idle(20);
    println!(
        "\nidle agent (release build, watching a local repo, 30 s poll), over 20 s: CPU {cpu:.2}% of one core, RSS {} KiB",
        rss
    );
}
