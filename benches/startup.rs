//! Benchmark: how soon a starting agent answers, and how much memory it holds idle
//! (issue 11, item 9). The release agent binary runs as its own process (process runtime,
//! three example servers, a local repository); from the moment it is spawned the benchmark
//! asks `GET /health` on 127.0.0.1 every millisecond and records when the first answer
//! came and when it first named an applied revision (the first sync done), then waits until
//! the agent is idle and reads its resident memory (`VmRSS`).
//!
//!     cargo bench --bench startup
//!     BENCH_RUNS=20 BENCH_BASELINE_BIN=/tmp/old-mcp-orchestration cargo bench --bench startup
//!     BENCH_GATEWAY_LISTEN=off cargo bench --bench startup    # the gateway off
//!     BENCH_SMAPS=1 cargo bench --bench startup     # and what the resident memory maps
//!
//! With `BENCH_BASELINE_BIN` the two binaries run alternately in the same run, so both see
//! the same machine.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{percentile, repo_with, status_kib};

mod common;

const SERVERS: [&str; 3] = ["start-a", "start-b", "start-c"];
/// How long the agent is left alone before its memory is read.
const IDLE: Duration = Duration::from_secs(3);

/// One start: time to the first `/health` answer, time to the first applied revision, and
/// idle RSS in KiB.
struct Start {
    health: Duration,
    applied: Duration,
    rss_kib: u64,
}

/// `GET /health` over a fresh connection: the body, or `None` when nothing answers yet.
fn health(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.1 200").then(|| {
        answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_once(bin: &Path, repo: &Path, trust: &Path, dir: &Path) -> Start {
    let data = dir.join("data");
    let port = free_port();
    let spawned = Instant::now();
    let mut child = Command::new(bin)
        .args(["agent", "--runtime", "process", "--poll-interval", "600s"])
        // The gateway on, as by default, but on a free port (the baseline ignores this).
        .env(
            "MCP_ORCHESTRATION_GATEWAY_LISTEN",
            std::env::var("BENCH_GATEWAY_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into()),
        )
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--repo")
        .arg(repo)
        .arg("--data-dir")
        .arg(&data)
        .arg("--trust-policy")
        .arg(trust)
        .env("MCP_ORCHESTRATION_API_KEY", "bench-key")
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent binary starts");
    let deadline = spawned + Duration::from_secs(30);
    let mut first = None;
    let applied = loop {
        assert!(Instant::now() < deadline, "no applied revision within 30 s");
        if let Some(body) = health(port) {
            first.get_or_insert_with(|| spawned.elapsed());
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["applied_revision"].is_string() {
                break spawned.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    std::thread::sleep(IDLE);
    let rss_kib = status_kib(&child.id().to_string(), "VmRSS");
    if std::env::var_os("BENCH_SMAPS").is_some() {
        print_smaps(child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
    // The process runtime leaves the fleet running on purpose when the agent exits.
    common::kit::agent::kill_fleet(&data);
    Start {
        health: first.expect("answered"),
        applied,
        rss_kib,
    }
}

/// The resident memory of `pid` by what it maps (a file, or anonymous), largest first.
fn print_smaps(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-')) && fields.len() >= 5 {
            current = fields.get(5).map_or("[anonymous]", |p| p).to_owned();
        } else if fields.first() == Some(&"Rss:") {
            *by.entry(current.clone()).or_default() += fields
                .get(1)
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let mut by: Vec<_> = by.into_iter().filter(|(_, kib)| *kib >= 256).collect();
    by.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    let parts: Vec<String> = by
        .iter()
        .map(|(what, kib)| format!("{what} {:.1} MiB", *kib as f64 / 1024.0))
        .collect();
    println!("  resident: {}", parts.join(", "));
}

fn report(name: &str, runs: &[Start]) {
    let ms = |f: fn(&Start) -> Duration| {
        let mut v: Vec<f64> = runs.iter().map(|s| f(s).as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.9))
    };
    let (h50, h90) = ms(|s| s.health);
    let (a50, a90) = ms(|s| s.applied);
    let mut rss: Vec<f64> = runs.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    rss.sort_by(f64::total_cmp);
    println!(
        "{name}: first /health answer p50 {h50:.1} ms p90 {h90:.1} ms; first sync applied p50 {a50:.0} ms p90 {a90:.0} ms; idle RSS p50 {:.1} MiB (max {:.1}) over {} starts",
        percentile(&rss, 0.5),
        rss.last().copied().unwrap_or_default(),
        runs.len()
    );
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let example = common::release_example();
    let agent = common::release_agent();
    let mut binaries: Vec<(String, PathBuf)> = vec![("this build".into(), agent)];
    if let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") {
        binaries.insert(0, ("baseline".into(), PathBuf::from(baseline)));
    }
    let mut manifest = String::from("version: \"1.1\"\nservers:\n");
    for id in SERVERS {
        manifest.push_str(&format!(
            "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 30, timeout_seconds: 1, failure_threshold: 3, success_threshold: 1 }}\n",
            example.display()
        ));
    }
    let repo = repo_with(&manifest);
    let work = tempfile::tempdir().unwrap();
    let trust = work.path().join("trust-policy.yaml");
    std::fs::write(
        &trust,
        format!(
            "allowed_images: [mcp-orch-bench/]\nallowed_commands: [{}]\n",
            example.parent().unwrap().display()
        ),
    )
    .unwrap();
    let mut results: Vec<Vec<Start>> = binaries.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, (_, bin)) in binaries.iter().enumerate() {
            let dir = work.path().join(format!("run-{run}-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            results[i].push(start_once(bin, &repo.remote(), &trust, &dir));
        }
    }
    for ((name, _), runs) in binaries.iter().zip(&results) {
        report(name, runs);
    }
}
