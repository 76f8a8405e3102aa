//! Benchmark: live events.
//!
//! 1. SSE fan-out: `BENCH_SUBSCRIBERS` (100) clients hold `GET /events` open while the
//!    health of five real example servers is flipped together, `BENCH_ROUNDS` (10) times
//!    each way. For every (subscriber, event) pair: the delay from the event's `at` (when
//!    the monitor saw the transition) to its arrival at the subscriber; every subscriber
//!    must receive every event, in order.
//! 2. Health transition → gateway notified: a receiver on 127.0.0.1 stands in for the
//!    gateway; for every transition, the delay until the first payload showing the
//!    server's new state arrives (transitions superseded within a coalescing window are
//!    counted separately: the gateway got the newer state instead).
//!
//!     cargo bench --bench events
//!
//! Everything runs on 127.0.0.1 with the process runtime.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kit::agent::{Options, TEST_API_KEY};
use common::{percentile, release_example, repo_with, start_agent};
use futures::StreamExt;
use jiff::Timestamp;
use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::settings::RuntimeChoice;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

const SERVERS: usize = 5;

fn manifest(example: &std::path::Path) -> String {
    let mut m = String::from("version: \"1.1\"\nservers:\n");
    for i in 0..SERVERS {
        m.push_str(&format!(
            "  - id: ev-{i}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 1, success_threshold: 1 }}\n    recovery: {{ max_attempts: 0 }}\n",
            example.display()
        ));
    }
    m
}

/// Arrivals at one subscriber: (event id, event at, arrived at).
type Arrivals = Arc<Mutex<Vec<(i64, Timestamp, Timestamp)>>>;

async fn subscribe(url: String) -> Arrivals {
    let arrivals: Arrivals = Arc::default();
    let out = arrivals.clone();
    let response = reqwest::Client::new()
        .get(format!("{url}/events"))
        .send()
        .await
        .expect("subscribe");
    assert!(response.status().is_success());
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut parser = mcp_orchestration::sse::Parser::default();
        while let Some(Ok(chunk)) = body.next().await {
            let now = Timestamp::now();
            for m in parser.push(&chunk) {
                if let Ok(e) = serde_json::from_str::<Value>(&m.data) {
                    let at: Timestamp = e["at"].as_str().unwrap().parse().unwrap();
                    out.lock()
                        .unwrap()
                        .push((e["id"].as_i64().unwrap(), at, now));
                }
            }
        }
    });
    arrivals
}

/// A stand-in gateway: records when each payload arrived.
async fn gateway() -> (String, Arc<Mutex<Vec<(Timestamp, Value)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/backends", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<(Timestamp, Value)>>> = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let now = Timestamp::now();
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len]) {
                        store.lock().unwrap().push((now, v));
                    }
                    buf.drain(..end + 4 + len);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

fn ms(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    println!(
        "{name}: n={} p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let subscribers: usize = std::env::var("BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let example = release_example();
    let repo = repo_with(&manifest(&example));
    let (gateway_url, payloads) = gateway().await;
    let agent = start_agent(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Process,
            poll_interval: Duration::from_secs(600),
            registry_poll_interval: Duration::from_secs(600),
            trust: Some(TrustPolicy {
                allowed_images: vec![],
                allowed_commands: vec![example.parent().unwrap().display().to_string()],
                source: "bench".into(),
                ..Default::default()
            }),
            gateway_urls: vec![gateway_url],
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let healthy = |v: &Value| {
        v["servers"]
            .as_array()
            .is_some_and(|s| s.len() == SERVERS && s.iter().all(|s| s["health"] == "healthy"))
    };
    wait("the fleet to be healthy", async || {
        healthy(&get(&http, &format!("{}/servers", agent.url)).await)
    })
    .await;
    let fleet = get(&http, &format!("{}/servers", agent.url)).await;
    let admins: Vec<String> = fleet["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["endpoint"]
                .as_str()
                .unwrap()
                .trim_end_matches("/mcp")
                .to_owned()
        })
        .collect();

    let mut subs = Vec::new();
    for _ in 0..subscribers {
        subs.push(subscribe(agent.url.clone()).await);
    }
    println!(
        "{subscribers} subscribers on GET /events; {SERVERS} servers flipped together, {rounds} rounds each way"
    );
    let first_id = {
        let log = get(&http, &format!("{}/events/history?limit=1", agent.url)).await;
        log["events"][0]["id"].as_i64().unwrap_or(0)
    };
    let started = Instant::now();
    for _ in 0..rounds {
        for (mode, done) in [
            ("unhealthy", ["unhealthy", "failed"]),
            ("healthy", ["healthy", "healthy"]),
        ] {
            for a in &admins {
                http.post(format!("{a}/admin/health/{mode}"))
                    .send()
                    .await
                    .unwrap();
            }
            wait(mode, async || {
                let v = get(&http, &format!("{}/servers", agent.url)).await;
                v["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| done.contains(&s["health"].as_str().unwrap_or("")))
            })
            .await;
        }
    }
    // Every transition in the log, then every subscriber must have all of them.
    let log = get(
        &http,
        &format!("{}/events/history?after={first_id}&limit=1000", agent.url),
    )
    .await;
    let log: Vec<Value> = log["events"].as_array().unwrap().clone();
    let transitions: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "health.transition")
        .collect();
    let last_id = log.last().unwrap()["id"].as_i64().unwrap();
    wait("every subscriber to catch up", async || {
        subs.iter()
            .all(|s| s.lock().unwrap().last().is_some_and(|l| l.0 >= last_id))
    })
    .await;
    let elapsed = started.elapsed();
    let mut delays = Vec::new();
    for s in &subs {
        let got = s.lock().unwrap();
        let ids: Vec<i64> = got
            .iter()
            .map(|a| a.0)
            .filter(|id| *id > first_id)
            .collect();
        let want: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, want, "a subscriber missed or reordered events");
        delays.extend(
            got.iter()
                .filter(|a| a.0 > first_id)
                .map(|(_, at, arrived)| ms(*at, *arrived)),
        );
    }
    println!(
        "{} events ({} health transitions) in {:.1} s, each delivered to all {subscribers} subscribers, in order",
        log.len(),
        transitions.len(),
        elapsed.as_secs_f64()
    );
    summary("event → subscriber", delays);

    // Transition → gateway: the first payload after the transition that shows the new
    // state, or a newer one (a transition followed within the coalescing window by another,
    // e.g. unhealthy → failed at once with recovery off, reaches the gateway as the newer).
    let payloads = payloads.lock().unwrap().clone();
    let mut to_gateway = Vec::new();
    let (mut superseded, mut missing) = (0, 0);
    for t in &transitions {
        let at: Timestamp = t["at"].as_str().unwrap().parse().unwrap();
        let server = t["server_id"].as_str().unwrap();
        let to = t["data"]["to_state"].as_str().unwrap();
        let shown = payloads.iter().find_map(|(received, p)| {
            let b = p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == server)?;
            let since: Option<Timestamp> = b["health_since"].as_str().and_then(|s| s.parse().ok());
            let newer = since.is_some_and(|s| s > at);
            (*received >= at && (b["health"] == to || newer))
                .then(|| (*received, b["health"] != to))
        });
        match shown {
            Some((received, newer)) => {
                to_gateway.push(ms(at, received));
                superseded += usize::from(newer);
            }
            None => missing += 1,
        }
    }
    println!(
        "{} payloads to the gateway for {} transitions; {superseded} reached it as a newer state, {missing} never",
        payloads.len(),
        transitions.len()
    );
    summary("health transition → gateway", to_gateway);
}
