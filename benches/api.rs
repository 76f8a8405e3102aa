//! Benchmark: HTTP API latency under N concurrent keep-alive connections (issue 6).
//!
//! The release agent binary runs as its own process, managing three example servers
//! (process runtime). For each N the benchmark opens N HTTP/1.1 connections, one hyper
//! connection per simulated client, so there is no pool to share or cap them. Every
//! connection then sends the same number of requests in each phase, one at a time:
//! `GET /servers`, `GET /servers/{id}`, `GET /health/status`, then the three in turn. A
//! barrier starts and ends each phase for all connections at once, so a phase measures N
//! requests in flight throughout. Every request carries the API key.
//!
//!     cargo bench --bench api        # BENCH_CONNECTIONS=100,1000 BENCH_REQUESTS=20
//!
//! Failures (non-2xx, connection errors, 10 s timeouts) are counted and printed, never
//! dropped from the figures silently. Everything runs on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{percentile, repo_with};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::Barrier;

mod common;

const API_KEY: &str = "bench-key";
const SERVERS: [&str; 3] = ["bench-a", "bench-b", "bench-c"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Servers,
    Server,
    HealthStatus,
    Mix,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::Servers,
        Phase::Server,
        Phase::HealthStatus,
        Phase::Mix,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Servers => "`GET /servers`",
            Phase::Server => "`GET /servers/{id}`",
            Phase::HealthStatus => "`GET /health/status`",
            Phase::Mix => "mix of the three",
        }
    }

    /// The path of request `k` of connection `conn`; ids rotate so every server is asked.
    fn path(self, conn: usize, k: usize) -> String {
        let server = |i: usize| format!("/servers/{}", SERVERS[i % SERVERS.len()]);
        match self {
            Phase::Servers => "/servers".into(),
            Phase::Server => server(conn + k),
            Phase::HealthStatus => "/health/status".into(),
            // `k / 3`, or every `/servers/{id}` of the mix would name the same server.
            Phase::Mix => match (conn + k) % 3 {
                0 => "/servers".into(),
                1 => server(conn + k / 3),
                _ => "/health/status".into(),
            },
        }
    }
}

/// One client's connection; reopened after an error so one failure does not end its load.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// `Ok(status)` once the whole body has arrived, or why not.
    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => Self::open(self.addr).await?,
        };
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header("x-api-key", API_KEY)
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        self.sender = Some(sender);
        Ok(status)
    }
}

#[derive(Default)]
struct Samples {
    /// Milliseconds, of successful (2xx) requests.
    ok: Vec<f64>,
    /// Failure → count: `HTTP 503`, `send: connection closed…`, `timeout`.
    failures: BTreeMap<String, usize>,
}

impl Samples {
    async fn time(&mut self, conn: &mut Conn, path: &str) {
        let start = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, conn.get(path)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                self.ok.push(start.elapsed().as_secs_f64() * 1000.0)
            }
            Ok(Ok(status)) => *self.failures.entry(format!("HTTP {status}")).or_default() += 1,
            Ok(Err(e)) => *self.failures.entry(e).or_default() += 1,
            Err(_) => {
                // The connection may be mid-response: start the next request on a fresh one.
                conn.sender = None;
                *self.failures.entry("timeout".into()).or_default() += 1
            }
        }
    }

    fn merge(&mut self, other: Samples) {
        self.ok.extend(other.ok);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }

    fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// One simulated client: opens its connection, then runs every phase in step with the
/// others. It never panics, so the barriers always fill.
async fn client(
    id: usize,
    addr: SocketAddr,
    requests: usize,
    barrier: Arc<Barrier>,
) -> (Samples, BTreeMap<Phase, Samples>) {
    let mut conn = Conn { addr, sender: None };
    let mut first = Samples::default();
    first.time(&mut conn, "/servers").await;
    let mut phases = BTreeMap::new();
    barrier.wait().await;
    for phase in Phase::ALL {
        let mut samples = Samples::default();
        barrier.wait().await;
        for k in 0..requests {
            samples.time(&mut conn, &phase.path(id, k)).await;
        }
        barrier.wait().await;
        phases.insert(phase, samples);
    }
    (first, phases)
}

/// Established TCP connections whose local port is `port` (the agent's side of each).
fn established_on(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

/// The kernel's count of connections dropped because a listen queue was full (all sockets
/// on the machine): a connection storm that outruns `accept` shows up here, and each
/// dropped SYN costs its client a 1 s retransmission.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The agent binary as its own process, killed with its fleet on drop.
struct AgentProcess {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
}

impl AgentProcess {
    async fn start(dir: &Path, repo: &Path, example: &Path) -> AgentProcess {
        let trust = dir.join("trust-policy.yaml");
        let examples = example.parent().expect("examples dir");
        std::fs::write(
            &trust,
            format!(
                "allowed_images: [mcp-orch-bench/]\nallowed_commands: [{}]\n",
                examples.display()
            ),
        )
        .unwrap();
        let data = dir.join("data");
        let log = dir.join("agent.log");
        let child = Command::new(common::release_agent())
            .args(["agent", "--runtime", "process", "--listen", "127.0.0.1:0"])
            .args(["--poll-interval", "600s", "--log-format", "json"])
            // The gateway on, as by default, but on a free port (the baseline ignores this).
            .env("MCP_ORCHESTRATION_GATEWAY_LISTEN", "127.0.0.1:0")
            .arg("--repo")
            .arg(repo)
            .arg("--data-dir")
            .arg(&data)
            .arg("--trust-policy")
            .arg(&trust)
            .env("MCP_ORCHESTRATION_API_KEY", API_KEY)
            .env_remove("MCP_ORCHESTRATION_CONFIG")
            .env_remove("MCP_ORCHESTRATION_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the agent binary starts");
        let mut agent = AgentProcess {
            child,
            data,
            log,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        // Port 0, so the address comes from the agent's own start-up line.
        let deadline = Instant::now() + Duration::from_secs(20);
        agent.addr = loop {
            let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
            let listen = text.lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "agent started")
                    .then(|| v["fields"]["listen"].as_str()?.parse().ok())?
            });
            if let Some(addr) = listen {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not start within 20 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The process runtime leaves the fleet running on purpose when the agent exits.
        common::kit::agent::kill_fleet(&self.data);
    }
}

fn manifest(example: &Path) -> String {
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for id in SERVERS {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 5, timeout_seconds: 1, failure_threshold: 3, success_threshold: 1 }}\n",
            example.display()
        ));
    }
    text
}

/// Raises the soft open-files limit to what `n` connections need (both ends live on this
/// machine: the client's sockets here, the agent's in its process, which inherits it).
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            eprintln!("cannot read the open-files limit; keeping it");
            return;
        }
        if limit.rlim_cur >= needed {
            return;
        }
        limit.rlim_cur = limit.rlim_max.min(needed.max(limit.rlim_cur));
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < needed {
            eprintln!(
                "the open-files limit is {} (hard {}); {needed} are needed, so expect connection errors",
                limit.rlim_cur, limit.rlim_max
            );
        }
    }
}

fn row(label: &str, n: usize, samples: &mut Samples, seconds: Option<f64>) {
    samples.ok.sort_by(f64::total_cmp);
    let total = samples.ok.len() + samples.failed();
    let rate = seconds.map_or("—".to_owned(), |s| format!("{:.0}", total as f64 / s));
    if samples.ok.is_empty() {
        println!(
            "| {n} | {label} | {total} | {} | — | — | — | — | {rate} |",
            samples.failed()
        );
        return;
    }
    let s = &samples.ok;
    println!(
        "| {n} | {label} | {total} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {rate} |",
        samples.failed(),
        percentile(s, 0.5),
        percentile(s, 0.95),
        percentile(s, 0.99),
        s[s.len() - 1],
    );
}

async fn run(agent: &AgentProcess, n: usize, requests: usize) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let pid = agent.child.id().to_string();
    let cpu_before = common::cpu_seconds(&pid);
    let overflows_before = listen_overflows();
    let opening = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| tokio::spawn(client(i, agent.addr, requests, barrier.clone())))
        .collect();
    barrier.wait().await;
    let opened = opening.elapsed().as_secs_f64();
    // Every client now waits for the first phase with its connection open.
    let open = established_on(agent.addr.port());
    let mut seconds = BTreeMap::new();
    for phase in Phase::ALL {
        barrier.wait().await;
        let start = Instant::now();
        barrier.wait().await;
        seconds.insert(phase, start.elapsed().as_secs_f64());
    }
    let mut first = Samples::default();
    let mut phases: BTreeMap<Phase, Samples> = BTreeMap::new();
    for c in clients {
        let (f, p) = c.await.expect("a client task never panics");
        first.merge(f);
        for (phase, s) in p {
            phases.entry(phase).or_default().merge(s);
        }
    }
    let cpu = common::cpu_seconds(&pid) - cpu_before;
    let hwm = common::status_kib(&pid, "VmHWM");
    let overflows = listen_overflows().saturating_sub(overflows_before);

    row(
        "connect + first `GET /servers`",
        n,
        &mut first,
        Some(opened),
    );
    for (phase, samples) in &mut phases {
        row(phase.name(), n, samples, seconds.get(phase).copied());
    }

    let total: usize = std::iter::once(&first)
        .chain(phases.values())
        .map(|s| s.ok.len() + s.failed())
        .sum();
    let mut notes = vec![format!(
        "N={n}: {open} connections established on the agent's port once all were open; {overflows} listen-queue overflows (machine-wide); agent CPU {cpu:.2} s for {total} requests ({:.0} µs a request); agent peak RSS since its start {hwm} KiB",
        cpu / total as f64 * 1e6
    )];
    for (what, count) in &first.failures {
        notes.push(format!("N={n} first request: {count} × {what}"));
    }
    for (phase, samples) in &phases {
        for (what, count) in &samples.failures {
            notes.push(format!("N={n} {}: {count} × {what}", phase.name()));
        }
    }
    notes
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let connections: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let most = connections.iter().copied().max().unwrap_or(0) as u64;
    raise_fd_limit(2 * most + 256);

    let example = common::release_example();
    let repo = repo_with(&manifest(&example));
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &repo.remote(), &example).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fleet: Value = match http
            .get(agent.url("/servers"))
            .header("x-api-key", API_KEY)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let healthy = fleet["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["state"] == "running" && s["health"] == "healthy")
            .count();
        if healthy == SERVERS.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet was not healthy within 60 s: {fleet}\n{}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its idle keep-alive connection would be counted as one of the N.
    drop(http);
    // Other work on the machine skews every figure; the load average says how much there was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{requests} requests per connection per phase, {} servers, agent pid {}, load average before: {}",
        SERVERS.len(),
        agent.child.id(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "\n| connections | route | requests | failed | p50 ms | p95 ms | p99 ms | max ms | req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for n in connections {
        notes.extend(run(&agent, n, requests).await);
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}
