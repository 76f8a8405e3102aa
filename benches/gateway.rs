//! Benchmark: the MCP gateway (issue 12). The release agent binary runs as its own process
//! (process runtime, the release example server, a local repository) and real rmcp clients
//! call the example server's `echo`, through the gateway and directly, in alternating
//! rounds so both see the same machine:
//!
//! - the latency the gateway adds per `tools/call` (p50 and p99 of each side; 1 and 100
//!   concurrent clients, each with its own session, calling as fast as they are answered)
//!   and the calls per second through one gateway and directly;
//! - the same added latency with 100 clients paced to a total rate the machine carries
//!   (`BENCH_PACED_RATE`, 1,000 calls/s), each call measured from its send;
//! - failed calls while the server is upgraded 20 times by commits, under load;
//! - how soon after the monitor records a backend `unhealthy` the gateway answers
//!   `BACKEND_UNHEALTHY` (and, for scale, how soon after the server turned unhealthy);
//! - the agent's memory per open client session.
//!
//! ```text
//!     cargo bench --bench gateway
//!     BENCH_CALLS=4000 BENCH_UPGRADES=20 BENCH_PACED_RATE=1000 cargo bench --bench gateway
//!     BENCH_AGENT_BIN=/tmp/old/mcp-orchestration cargo bench --bench gateway   # another build
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{percentile, repo_with, status_kib};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

mod common;

const SERVER: &str = "gw-bench";
const KEY: &str = "bench-key";

type Client = RunningService<RoleClient, ()>;

struct Agent {
    child: Child,
    api: String,
    gateway: String,
    data: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The process runtime leaves the fleet running on purpose when the agent exits.
        common::kit::agent::kill_fleet(&self.data);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn manifest(example: &Path, version: &str) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: {SERVER}\n    version: \"{version}\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.25, timeout_seconds: 0.2, failure_threshold: 1, success_threshold: 1 }}\n    recovery: {{ max_attempts: 0 }}\n",
        example.display()
    )
}

fn spawn_agent(bin: &Path, repo: &Path, trust: &Path, dir: &Path) -> Agent {
    let data = dir.join("data");
    let (api, gateway) = (free_port(), free_port());
    let child = Command::new(bin)
        .args(["agent", "--runtime", "process", "--poll-interval", "200ms"])
        .env(
            "MCP_ORCHESTRATION_GATEWAY_LISTEN",
            format!("127.0.0.1:{gateway}"),
        )
        .arg("--listen")
        .arg(format!("127.0.0.1:{api}"))
        .arg("--repo")
        .arg(repo)
        .arg("--data-dir")
        .arg(&data)
        .arg("--trust-policy")
        .arg(trust)
        .arg("--drain")
        .arg("10s")
        .env("MCP_ORCHESTRATION_API_KEY", KEY)
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent binary starts");
    Agent {
        child,
        api: format!("http://127.0.0.1:{api}"),
        gateway: format!("http://127.0.0.1:{gateway}"),
        data,
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url)
        .bearer_auth(KEY)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn connect(url: &str) -> Client {
    ().serve(StreamableHttpClientTransport::from_uri(url.to_owned()))
        .await
        .expect("an MCP session")
}

async fn echo(client: &Client, tool: &str) -> Result<CallToolResult, String> {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(json!({ "text": "x" }).as_object().unwrap().clone()),
        )
        .await
        .map_err(|e| e.to_string())
}

/// `calls` calls spread over `clients`, all at once; the latency of each in ms and the wall
/// time.
async fn round(clients: &[Arc<Client>], tool: &str, calls: usize) -> (Vec<f64>, Duration) {
    let per = calls.div_ceil(clients.len());
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, tool) = (c.clone(), tool.to_owned());
            tokio::spawn(async move {
                let mut ms = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let r = echo(&c, &tool).await.expect("the call is answered");
                    assert_ne!(r.is_error, Some(true), "{r:?}");
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                ms
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
}

/// `n` client sessions with the server directly and `n` through the gateway.
async fn sessions(
    direct_url: &str,
    gateway_url: &str,
    n: usize,
) -> (Vec<Arc<Client>>, Vec<Arc<Client>>) {
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..n {
        direct.push(Arc::new(connect(direct_url).await));
        through.push(Arc::new(connect(gateway_url).await));
    }
    (direct, through)
}

async fn overhead(direct_url: &str, gateway_url: &str, concurrency: usize, calls: usize) {
    let (direct, through) = sessions(direct_url, gateway_url, concurrency).await;
    let tool = format!("{SERVER}_echo");
    // Warm both paths (connections, allocator, the backend's own session).
    round(&direct, "echo", concurrency * 20).await;
    round(&through, &tool, concurrency * 20).await;
    let (mut d_ms, mut g_ms) = (Vec::new(), Vec::new());
    let (mut d_wall, mut g_wall) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..4 {
        let (ms, wall) = round(&direct, "echo", calls / 4).await;
        d_ms.extend(ms);
        d_wall += wall;
        let (ms, wall) = round(&through, &tool, calls / 4).await;
        g_ms.extend(ms);
        g_wall += wall;
    }
    d_ms.sort_by(f64::total_cmp);
    g_ms.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&d_ms, 0.5), percentile(&d_ms, 0.99));
    let (g50, g99) = (percentile(&g_ms, 0.5), percentile(&g_ms, 0.99));
    println!(
        "{concurrency:>3} client(s), {} calls each way: direct p50 {d50:.3} ms p99 {d99:.3} ms ({:.0} calls/s); through the gateway p50 {g50:.3} ms p99 {g99:.3} ms ({:.0} calls/s); added p50 {:.3} ms p99 {:.3} ms",
        g_ms.len(),
        d_ms.len() as f64 / d_wall.as_secs_f64(),
        g_ms.len() as f64 / g_wall.as_secs_f64(),
        g50 - d50,
        g99 - d99,
    );
    for c in direct.into_iter().chain(through) {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.cancel().await;
        }
    }
}

/// `clients` clients, each calling once every `every` for `calls_each` calls (their start
/// times spread over one period); each call's latency from its send, and `late` counts
/// the calls that were still running when the next one of their client was due.
async fn paced_round(
    clients: &[Arc<Client>],
    tool: &str,
    every: Duration,
    calls_each: usize,
    late: &Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<f64> {
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let n = clients.len() as u32;
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (c, tool, late) = (c.clone(), tool.to_owned(), late.clone());
            let first = start + every * i as u32 / n;
            tokio::spawn(async move {
                let mut ms = Vec::with_capacity(calls_each);
                for k in 0..calls_each {
                    let due = first + every * k as u32;
                    tokio::time::sleep_until(due).await;
                    // From the send: the timer wakes up to a millisecond late, which would
                    // be most of what is measured. At this rate no call waits for the one
                    // before it (a call still running when the next is due is counted).
                    let sent = Instant::now();
                    let r = echo(&c, &tool).await.expect("the call is answered");
                    assert_ne!(r.is_error, Some(true), "{r:?}");
                    ms.push(sent.elapsed().as_secs_f64() * 1e3);
                    if tokio::time::Instant::now() > due + every {
                        late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                ms
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// 100 clients at a steady total rate the machine can carry (`rate` calls per second),
/// directly and through the gateway in alternating rounds: the latency the gateway adds
/// when it is not queueing behind a saturated CPU.
async fn paced_overhead(direct_url: &str, gateway_url: &str, concurrency: usize, rate: usize) {
    let (direct, through) = sessions(direct_url, gateway_url, concurrency).await;
    let tool = format!("{SERVER}_echo");
    let every = Duration::from_secs_f64(concurrency as f64 / rate as f64);
    let calls_each = 20;
    round(&direct, "echo", concurrency * 5).await;
    round(&through, &tool, concurrency * 5).await;
    let (mut d_ms, mut g_ms) = (Vec::new(), Vec::new());
    let late = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..4 {
        d_ms.extend(paced_round(&direct, "echo", every, calls_each, &late).await);
        g_ms.extend(paced_round(&through, &tool, every, calls_each, &late).await);
    }
    d_ms.sort_by(f64::total_cmp);
    g_ms.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&d_ms, 0.5), percentile(&d_ms, 0.99));
    let (g50, g99) = (percentile(&g_ms, 0.5), percentile(&g_ms, 0.99));
    println!(
        "{concurrency:>3} clients paced at {rate} calls/s in all, {} calls each way: direct p50 {d50:.3} ms p99 {d99:.3} ms; through the gateway p50 {g50:.3} ms p99 {g99:.3} ms; added p50 {:.3} ms p99 {:.3} ms; {} call(s) ran past their next one's time",
        g_ms.len(),
        g50 - d50,
        g99 - d99,
        late.load(std::sync::atomic::Ordering::Relaxed),
    );
    for c in direct.into_iter().chain(through) {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.cancel().await;
        }
    }
}

async fn upgrades_under_load(
    agent: &Agent,
    repo: &common::kit::git::ManifestRepo,
    example: &Path,
    n: usize,
) {
    let http = reqwest::Client::new();
    let tool = format!("{SERVER}_echo");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut callers = Vec::new();
    for _ in 0..10 {
        let client = connect(&format!("{}/mcp", agent.gateway)).await;
        let (stop, tool) = (stop.clone(), tool.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.is_cancelled() {
                match echo(&client, &tool).await {
                    Ok(r) if r.is_error != Some(true) => ok += 1,
                    Ok(r) => failed.push(format!("{:?}", r.content)),
                    Err(e) => failed.push(e),
                }
            }
            let _ = client.cancel().await;
            (ok, failed)
        }));
    }
    let started = Instant::now();
    for i in 1..=n {
        let version = format!("1.0.{i}");
        repo.push_manifest(&manifest(example, &version), &format!("upgrade {i}"));
        until("the upgrade", Duration::from_secs(60), || async {
            let s = get(&http, &format!("{}/servers/{SERVER}", agent.api)).await?;
            (s["running_version"] == version.as_str() && s["state"] == "running").then_some(())
        })
        .await;
    }
    let took = started.elapsed();
    stop.cancel();
    let (mut ok, mut failed) = (0, Vec::new());
    for c in callers {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "{n} upgrades by commit in {:.1} s under 10 looping clients: {ok} calls answered, {} failed{}",
        took.as_secs_f64(),
        failed.len(),
        failed
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
}

async fn transition_to_routing(agent: &Agent, times: usize) {
    let http = reqwest::Client::new();
    let client = connect(&format!("{}/mcp", agent.gateway)).await;
    let tool = format!("{SERVER}_echo");
    let (mut after_transition, mut after_sick) = (Vec::new(), Vec::new());
    for _ in 0..times {
        let s = get(&http, &format!("{}/servers/{SERVER}", agent.api))
            .await
            .unwrap();
        let base = s["endpoint"].as_str().unwrap().trim_end_matches("/mcp");
        let sick = jiff::Timestamp::now();
        http.post(format!("{base}/admin/health/unhealthy"))
            .send()
            .await
            .unwrap();
        let refused = until("BACKEND_UNHEALTHY", Duration::from_secs(10), || async {
            let r = echo(&client, &tool).await.ok()?;
            (r.is_error == Some(true)).then(jiff::Timestamp::now)
        })
        .await;
        let events = get(
            &http,
            &format!("{}/servers/{SERVER}/health/events?limit=5", agent.api),
        )
        .await
        .unwrap();
        let transition = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "transition" && e["to_state"] == "unhealthy")
            .and_then(|e| e["at"].as_str()?.parse::<jiff::Timestamp>().ok())
            .expect("the transition is recorded");
        let ms = |a: jiff::Timestamp, b: jiff::Timestamp| b.duration_since(a).as_secs_f64() * 1e3;
        after_transition.push(ms(transition, refused));
        after_sick.push(ms(sick, refused));
        http.post(format!("{base}/admin/health/healthy"))
            .send()
            .await
            .unwrap();
        until("routed again", Duration::from_secs(10), || async {
            let r = echo(&client, &tool).await.ok()?;
            (r.is_error != Some(true)).then_some(())
        })
        .await;
    }
    after_transition.sort_by(f64::total_cmp);
    after_sick.sort_by(f64::total_cmp);
    println!(
        "health transition recorded -> first BACKEND_UNHEALTHY answer: p50 {:.1} ms, max {:.1} ms; server turned unhealthy -> that answer (probe every 250 ms, 1 failure): p50 {:.0} ms, max {:.0} ms ({times} times)",
        percentile(&after_transition, 0.5),
        after_transition.last().unwrap(),
        percentile(&after_sick, 0.5),
        after_sick.last().unwrap(),
    );
    let _ = client.cancel().await;
}

async fn memory_per_session(agent: &Agent, sessions: usize) {
    let http = reqwest::Client::new();
    let pid = agent.child.id().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = status_kib(&pid, "VmRSS");
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "bench", "version": "0" } }
    });
    for _ in 0..sessions {
        let r = http
            .post(format!("{}/mcp", agent.gateway))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
            .unwrap();
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.bytes().await;
        http.post(format!("{}/mcp", agent.gateway))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status_kib(&pid, "VmRSS");
    let open = get(&http, &format!("{}/health", agent.gateway))
        .await
        .unwrap()["sessions"]
        .clone();
    println!(
        "{sessions} client sessions opened ({open} open): RSS {:.1} -> {:.1} MiB, {:.1} KiB per session",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / sessions as f64
    );
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let calls = env("BENCH_CALLS", 4000);
    let upgrades = env("BENCH_UPGRADES", 20);
    let example = common::release_example();
    // Another build of the agent (an earlier commit's, to compare gateways on one machine).
    let bin = std::env::var_os("BENCH_AGENT_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(common::release_agent);
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust.yaml");
    std::fs::write(
        &trust,
        format!("allowed_commands: [\"{}\"]\n", example.display()),
    )
    .unwrap();
    let repo = repo_with(&manifest(&example, "1.0.0"));
    let agent = spawn_agent(&bin, &repo.remote(), &trust, dir.path());
    let http = reqwest::Client::new();
    let endpoint = until("the server running", Duration::from_secs(60), || async {
        let s = get(&http, &format!("{}/servers/{SERVER}", agent.api)).await?;
        (s["state"] == "running" && s["health"] == "healthy")
            .then(|| s["endpoint"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    until("the gateway's tools", Duration::from_secs(30), || async {
        let b = get(&http, &format!("{}/backends", agent.gateway)).await?;
        (b["backends"][0]["tools"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let gateway = format!("{}/mcp", agent.gateway);
    println!(
        "gateway benchmark, {} ({} cores)",
        jiff::Timestamp::now(),
        num_cpus()
    );
    overhead(&endpoint, &gateway, 1, calls / 2).await;
    overhead(&endpoint, &gateway, 100, calls).await;
    paced_overhead(&endpoint, &gateway, 100, env("BENCH_PACED_RATE", 1000)).await;
    transition_to_routing(&agent, 5).await;
    upgrades_under_load(&agent, &repo, &example, upgrades).await;
    memory_per_session(&agent, 1000).await;
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
