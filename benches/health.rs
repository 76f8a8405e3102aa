//! Benchmark: health monitoring and recovery.
//!
//! 1. Detection latency: a crash (SIGKILL of a process-runtime server, seen through the exit
//!    event) and a hang (`/health` stops answering, seen through probes) against their
//!    theoretical minimum (0, and interval × failure_threshold + timeout).
//! 2. The monitor's CPU and RSS while probing 10, 100 and 1,000 servers at the default
//!    30 s interval, simulated by one HTTP server (a child process) answering
//!    `/health/<n>` for all of them.
//! 3. Crash → healthy again: our recovery (Docker runtime) beside Docker's own
//!    `--restart on-failure`, the same image and the same crash (`/admin/exit/1`).
//!
//!     cargo bench --bench health            # BENCH_SCALE_SECONDS=30 BENCH_SAMPLES=10
//!
//! Part 3 needs Docker; everything runs on 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use common::kit::agent::{Options, TEST_API_KEY};
use common::kit::docker::{docker, static_example_binary};
use common::{build_image, percentile, repo_with, start_agent};
use mcp_orchestration::health::{Monitor, Target};
use mcp_orchestration::manifest::HealthCheck;
use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::RuntimeChoice;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// Serves `GET /health/<n>` with the health standard until killed (the `--serve` role).
/// With `close`, every answer says `connection: close` and the connection is closed, as
/// servers behind some frameworks do: each probe then pays for a new connection.
async fn serve_health(port_file: &str, close: bool) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                let body = r#"{"status":"healthy","version":"1.0.0","uptime_seconds":1.0}"#;
                let connection = if close { "close" } else { "keep-alive" };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: {connection}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(reply.as_bytes()).await.is_err() || close {
                    return;
                }
            }
        });
    }
}

async fn scale(n: usize, seconds: u64, port: u16) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = mcp_orchestration::store::Store::open(&dir.path().join("state.db")).unwrap();
    let monitor = Monitor::new(store.clone(), 256, Default::default());
    let targets = (0..n)
        .map(|i| Target {
            server_id: format!("s{i}"),
            instance_id: format!("i{i}"),
            addr: ([127, 0, 0, 1], port).into(),
            alternates: Vec::new(),
            version: "1.0.0".into(),
            check: HealthCheck {
                endpoint: format!("/health/{i}"),
                ..HealthCheck::default()
            },
            mcp_path: "/mcp".into(),
        })
        .collect();
    monitor.set_targets(targets);
    // One full interval to reach the steady state, then measure another.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let before = common::cpu_seconds("self");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = common::cpu_seconds("self") - before;
    let healthy = monitor
        .snapshot()
        .iter()
        .filter(|h| h.state.as_str() == "healthy")
        .count();
    assert_eq!(healthy, n, "every simulated server is probed and healthy");
    monitor.set_targets(Vec::new());
    (
        cpu / seconds as f64 * 100.0,
        common::status_kib("self", "VmRSS"),
    )
}

fn process_manifest(bin: &Path, interval: f64) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: bench-health\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: {interval}, timeout_seconds: 0.15, failure_threshold: 3, success_threshold: 1 }}\n    recovery: {{ max_attempts: 0 }}\n",
        bin.display()
    )
}

async fn json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default()
}

/// Time until a transition to unhealthy newer than `after_id` appears.
async fn until_unhealthy(http: &reqwest::Client, agent: &str, after_id: i64) -> (Duration, i64) {
    let start = Instant::now();
    loop {
        let v = json(
            http,
            &format!("{agent}/health/events?server=bench-health&after={after_id}&limit=50"),
        )
        .await;
        if let Some(e) = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["to_state"] == "unhealthy")
        {
            return (start.elapsed(), e["id"].as_i64().unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn detection(bin: &Path, samples: usize) {
    let interval = 0.2;
    let repo = repo_with(&process_manifest(bin, interval));
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Process,
            poll_interval: Duration::from_millis(300),
            registry_poll_interval: Duration::from_secs(600),
            trust: Some(TrustPolicy {
                allowed_images: vec![],
                allowed_commands: vec![bin.parent().unwrap().display().to_string()],
                source: "bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut last_id = 0;
    let (mut crash, mut hang) = (vec![], vec![]);
    for i in 0..samples * 2 {
        // Wait for a healthy, monitored instance.
        let endpoint = loop {
            let h = json(&http, &format!("{}/servers/bench-health", agent.url)).await;
            if h["health"] == "healthy" && h["state"] == "running" {
                break h["endpoint"].as_str().unwrap().replace("/mcp", "");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if i % 2 == 0 {
            let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
            let pid = std::fs::read_dir(agent.data.path().join("processes"))
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    serde_json::from_str::<Value>(&std::fs::read_to_string(e.path()).ok()?).ok()
                })
                .find(|v| v["host_port"] == port)
                .and_then(|v| v["pid"].as_i64())
                .unwrap();
            // SAFETY: kill(2) of a server this benchmark's agent started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let (took, id) = until_unhealthy(&http, &agent.url, last_id).await;
            crash.push(took.as_secs_f64() * 1000.0);
            last_id = id;
        } else {
            http.post(format!("{endpoint}/admin/health/hang"))
                .send()
                .await
                .unwrap();
            let (took, id) = until_unhealthy(&http, &agent.url, last_id).await;
            hang.push(took.as_secs_f64() * 1000.0);
            last_id = id;
        }
        // Bring it back: an operator restart replaces the instance (recovery is off).
        http.post(format!("{}/servers/bench-health/restart", agent.url))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    crash.sort_by(f64::total_cmp);
    hang.sort_by(f64::total_cmp);
    let bound = (interval * 3.0 + 0.15) * 1000.0;
    println!("| failure | theoretical minimum ms | samples | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| crash (SIGKILL, exit event) | 0 | {} | {:.1} | {:.1} | {:.1} |",
        crash.len(),
        percentile(&crash, 0.5),
        percentile(&crash, 0.95),
        crash[crash.len() - 1]
    );
    println!(
        "| hang (0.2 s × 3 + 0.15 s timeout) | {bound:.0} (bound; {:.0} best case) | {} | {:.0} | {:.0} | {:.0} |",
        (interval * 2.0 + 0.15) * 1000.0,
        hang.len(),
        percentile(&hang, 0.5),
        percentile(&hang, 0.95),
        hang[hang.len() - 1]
    );
}

async fn crash_to_healthy(samples: usize) {
    if std::process::Command::new("docker")
        .arg("info")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        println!("\n(docker unavailable: crash → healthy comparison skipped)");
        return;
    }
    let bin = static_example_binary();
    let image = "mcp-orch-bench/example-server:1.0.0";
    build_image(bin, image, "1.0.0", "healthy");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let healthy = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()))
                .is_some()
        }
    };

    // Docker's own restart policy.
    let container = docker(&[
        "run",
        "-d",
        "--restart",
        "on-failure",
        "-p",
        "127.0.0.1::8080",
        image,
    ]);
    let mut docker_samples = vec![];
    for _ in 0..samples {
        // While Docker restarts the container it has no port; the caller keeps polling.
        let port_of = || {
            std::process::Command::new("docker")
                .args(["port", &container, "8080/tcp"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .rsplit(':')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .unwrap_or_default()
        };
        let base = format!("http://127.0.0.1:{}", port_of());
        while !healthy(format!("{base}/health")).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = http.post(format!("{base}/admin/exit/1")).send().await;
        let crashed = Instant::now();
        // Wait for the exit, then for it to answer again (its port may change).
        tokio::time::sleep(Duration::from_millis(150)).await;
        loop {
            let base = format!("http://127.0.0.1:{}", port_of());
            if healthy(format!("{base}/health")).await {
                break;
            }
            assert!(crashed.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        docker_samples.push(crashed.elapsed().as_secs_f64() * 1000.0);
    }
    docker(&["rm", "-f", &container]);

    // Ours: the agent sees the exit event, recovery restarts it (backoff 0.01 s).
    let manifest = "version: \"1.1\"\nservers:\n  - id: bench-crash\n    version: \"1.0.0\"\n    docker: { image: mcp-orch-bench/example-server, port: 8080 }\n    health_check: { interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 3, success_threshold: 1 }\n    restart_policy: unless-stopped\n    recovery: { max_attempts: 3, backoff_seconds: 0.01 }\n";
    let repo = repo_with(manifest);
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Docker,
            poll_interval: Duration::from_secs(600),
            registry_poll_interval: Duration::from_secs(600),
            trust: Some(TrustPolicy {
                allowed_images: vec!["mcp-orch-bench/".into()],
                allowed_commands: vec![],
                source: "bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let mut ours = vec![];
    for _ in 0..samples {
        let endpoint = loop {
            let v = json(&http, &format!("{}/servers/bench-crash", agent.url)).await;
            if v["health"] == "healthy" {
                break v["endpoint"].as_str().unwrap().replace("/mcp", "");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let before = json(
            &http,
            &format!("{}/health/events?server=bench-crash&limit=1", agent.url),
        )
        .await["events"][0]["id"]
            .as_i64()
            .unwrap_or(0);
        let _ = http.post(format!("{endpoint}/admin/exit/1")).send().await;
        let crashed = Instant::now();
        // Healthy again: the crash was seen (an unhealthy transition after it), and the
        // endpoint the agent publishes answers healthy (Docker's restart policy and the
        // agent's recovery race; whichever brings it back first counts).
        let mut seen = false;
        loop {
            if !seen {
                let ev = json(
                    &http,
                    &format!(
                        "{}/health/events?server=bench-crash&after={before}",
                        agent.url
                    ),
                )
                .await;
                seen = ev["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["to_state"] == "unhealthy");
            }
            let v = json(&http, &format!("{}/servers/bench-crash", agent.url)).await;
            if seen
                && v["health"] == "healthy"
                && let Some(e) = v["endpoint"].as_str()
                && healthy(format!("{}/health", e.replace("/mcp", ""))).await
            {
                break;
            }
            assert!(
                crashed.elapsed() < Duration::from_secs(30),
                "not healthy again: {v}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ours.push(crashed.elapsed().as_secs_f64() * 1000.0);
    }
    drop(agent);
    docker_samples.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    println!(
        "\n| crash (`/admin/exit/1`) → healthy again | samples | median ms | p95 ms | max ms |"
    );
    println!("|---|---|---|---|---|");
    for (name, s) in [
        (
            "Docker `--restart on-failure` (same container)",
            &docker_samples,
        ),
        (
            "mcp-orchestration (restart policy mapped to Docker, plus exit event and recovery; first back wins)",
            &ours,
        ),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} |",
            s.len(),
            percentile(s, 0.5),
            percentile(s, 0.95),
            s[s.len() - 1]
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Ok(port_file) = std::env::var("BENCH_HEALTH_SERVE") {
        serve_health(&port_file, std::env::var_os("BENCH_HEALTH_CLOSE").is_some()).await;
        return;
    }
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seconds: u64 = std::env::var("BENCH_SCALE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);

    // BENCH_PARTS=detect,scale,crash (default: all) runs only some parts.
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "detect,scale,crash".into());
    let bin = common::release_example();
    if parts.contains("detect") {
        detection(&bin, samples).await;
    }
    if parts.contains("scale") {
        scale_table(seconds).await;
    }
    if parts.contains("crash") {
        crash_to_healthy(samples.min(5)).await;
    }
}

async fn scale_table(seconds: u64) {
    println!(
        "\n| servers probed (30 s interval) | connections | CPU % of one core | RSS KiB (whole process) |"
    );
    println!("|---|---|---|---|");
    for (close, sizes) in [(false, &[10usize, 100, 1000][..]), (true, &[1000][..])] {
        // The simulated fleet runs in a child process, so only the monitor's cost is
        // measured.
        let port_file = tempfile::NamedTempFile::new().unwrap();
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.env("BENCH_HEALTH_SERVE", port_file.path());
        if close {
            command.env("BENCH_HEALTH_CLOSE", "1");
        }
        let mut server = command.spawn().unwrap();
        let port: u16 = loop {
            if let Ok(p) = std::fs::read_to_string(port_file.path())
                .unwrap_or_default()
                .trim()
                .parse()
            {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let connections = if close {
            "closed after each answer"
        } else {
            "kept alive"
        };
        for &n in sizes {
            let (cpu, rss) = scale(n, seconds, port).await;
            println!("| {n} | {connections} | {cpu:.2} | {rss} |");
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}
