//! `GET /events`: the live event stream with ids, resuming with `Last-Event-ID`, malformed
//! requests, graceful shutdown with streams open, and `events --follow` on top of it.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::support::agent::{Options, TEST_API_KEY, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, admin, eventually, example_server_bin};

fn manifest(id: &str) -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n    recovery: {{ max_attempts: 0 }}\n",
        example_server_bin().display()
    )
}

/// An open `GET /events` whose events (the JSON data, in arrival order) fill `events`.
struct Subscription {
    events: Arc<Mutex<Vec<Value>>>,
    ended: Arc<Mutex<bool>>,
}

impl Subscription {
    async fn open(agent: &TestAgent, query: &str, last_event_id: Option<i64>) -> Subscription {
        let mut request = reqwest::Client::new().get(format!("{}/events{query}", agent.url));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the agent answers");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(false));
        let (e, d) = (events.clone(), ended.clone());
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut parser = mcp_orchestration::sse::Parser::default();
            while let Some(Ok(chunk)) = body.next().await {
                for m in parser.push(&chunk) {
                    if let Ok(data) = serde_json::from_str::<Value>(&m.data) {
                        let id = m.id.and_then(|id| id.parse::<i64>().ok());
                        assert_eq!(id, data["id"].as_i64(), "the SSE id is the event's id");
                        e.lock().unwrap().push(data);
                    }
                }
            }
            *d.lock().unwrap() = true;
        });
        Subscription { events, ended }
    }

    fn snapshot(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(Duration::from_secs(15), what, || async {
            let all = self.snapshot();
            all.iter().any(&pred).then_some(all)
        })
        .await
    }
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_carries_every_change_with_ids_and_a_reconnect_misses_nothing() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("ev-a"), "one server");
    let agent = TestAgent::start(&repo.remote_url(), Options::default()).await;
    // Subscribed from the start of the log: the first sync is replayed, then live events.
    let first = Subscription::open(&agent, "?after=0", None).await;
    let s = agent
        .wait_running("ev-a", "1.0.0", Duration::from_secs(20))
        .await;
    let replayed = first
        .wait_for("the first run to finish", |e| e["kind"] == "run.finished")
        .await;
    let kinds: Vec<&str> = replayed.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in [
        "run.started",
        "rollout.started",
        "rollout.step",
        "rollout.finished",
        "run.finished",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let finished = replayed
        .iter()
        .find(|e| e["kind"] == "rollout.finished")
        .unwrap();
    assert_eq!(finished["server_id"], "ev-a");
    assert_eq!(finished["data"]["outcome"], "succeeded");

    // A health transition arrives live.
    admin(s["endpoint"].as_str().unwrap(), "/admin/health/unhealthy").await;
    let seen = first
        .wait_for("the transition to unhealthy", |e| {
            e["kind"] == "health.transition" && e["data"]["to_state"] == "unhealthy"
        })
        .await;
    let seen_ids = ids(&seen);
    assert!(
        seen_ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow, none twice: {seen_ids:?}"
    );
    // The stream is exactly the log.
    let (_, log) = agent.get("/events/history?after=0&limit=1000").await;
    let log_ids = ids(log["events"].as_array().unwrap());
    assert_eq!(&log_ids[..seen_ids.len()], &seen_ids[..]);

    // Reconnecting with Last-Event-ID gets exactly what followed that id.
    let resume_from = seen_ids[2];
    let second = Subscription::open(&agent, "", Some(resume_from)).await;
    let expected = &seen_ids[3..];
    let got = eventually(Duration::from_secs(10), "the resumed stream", || async {
        let all = ids(&second.snapshot());
        (all.len() >= expected.len()).then_some(all)
    })
    .await;
    assert_eq!(&got[..expected.len()], expected);

    // A server filter keeps only that server's events; the run events have none.
    let filtered = Subscription::open(&agent, "?server=ev-a&backlog=1000", None).await;
    let got = filtered
        .wait_for("the filtered backlog", |e| e["kind"] == "health.transition")
        .await;
    assert!(got.iter().all(|e| e["server_id"] == "ev-a"), "{got:?}");

    // Graceful shutdown ends open streams instead of waiting on them.
    let streams = [&first, &second, &filtered];
    agent.stop_within(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), "the streams to end", || async {
        streams
            .iter()
            .all(|s| *s.ended.lock().unwrap())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_stream_requests_get_the_error_envelope() {
    let repo = ManifestRepo::new();
    repo.push_manifest("version: \"1.1\"\nservers: []\n", "empty");
    let agent = TestAgent::start(&repo.remote_url(), Options::default()).await;
    let http = reqwest::Client::new();
    for (query, header) in [
        ("", Some("abc")),
        ("", Some("-4")),
        ("?after=-1", None),
        ("?backlog=5000", None),
        ("?bogus=1", None),
        ("?after=x", None),
    ] {
        let mut request = http.get(format!("{}/events{query}", agent.url));
        if let Some(h) = header {
            request = request.header("last-event-id", h);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 400, "{query} {header:?}");
        assert!(r.headers().contains_key("x-request-id"));
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{query} {header:?}: {body}"
        );
    }
    let r = http
        .post(format!("{}/events", agent.url))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_follow_prints_the_past_then_new_events_as_they_happen() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("ev-f"), "one server");
    let agent = TestAgent::start(&repo.remote_url(), Options::default()).await;
    let s = agent
        .wait_running("ev-f", "1.0.0", Duration::from_secs(20))
        .await;
    agent.wait_runs(1).await;
    let mut child = std::process::Command::new(BIN)
        .args([
            "events",
            "--follow",
            "--output",
            "json",
            "--server",
            "ev-f",
            "--agent-url",
            &agent.url,
        ])
        .env("MCP_ORCHESTRATION_API_KEY", TEST_API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let stdout = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            l.lock()
                .unwrap()
                .push(serde_json::from_str(&line).expect("JSON lines"));
        }
    });
    eventually(Duration::from_secs(10), "the past rollout", || async {
        let all = lines.lock().unwrap().clone();
        all.iter()
            .any(|e| e["kind"] == "rollout.finished")
            .then_some(())
    })
    .await;
    admin(s["endpoint"].as_str().unwrap(), "/admin/health/unhealthy").await;
    let all = eventually(Duration::from_secs(15), "the live transition", || async {
        let all = lines.lock().unwrap().clone();
        all.iter()
            .any(|e| e["kind"] == "health.transition" && e["data"]["to_state"] == "unhealthy")
            .then_some(all)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(all.iter().all(|e| e["server_id"] == "ev-f"), "{all:?}");
    let got = ids(&all);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resuming_past_pruned_events_is_told_what_it_missed() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("ev-p"), "one server");
    let agent = TestAgent::start(&repo.remote_url(), Options::default()).await;
    agent.wait_runs(1).await;
    // Quiet from here on: deployed, healthy, nothing left to log.
    eventually(Duration::from_secs(15), "ev-p healthy", || async {
        (agent.server("ev-p").await?["health"] == "healthy").then_some(())
    })
    .await;
    let (_, log) = agent.get("/events/history?after=0&limit=1000").await;
    let ids = ids(log["events"].as_array().unwrap());
    assert!(ids.len() >= 4, "{ids:?}");
    // Retention drops the oldest events while a client is away.
    let store = mcp_orchestration::store::Store::open(&agent.data.path().join("state.db")).unwrap();
    let newest = *ids.last().unwrap();
    store
        .prune_events(jiff::Timestamp::UNIX_EPOCH, (newest - ids[2] + 1) as usize)
        .unwrap();
    let resumed = Subscription::open(&agent, "", Some(ids[0])).await;
    let got = resumed
        .wait_for("the newest event", |e| e["id"] == newest)
        .await;
    assert_eq!(got[0]["after"], ids[0], "{got:?}");
    assert_eq!(got[0]["next"], ids[2], "{got:?}");
    assert_eq!(
        got[1..]
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids[2..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_newer_than_the_log_resets_the_stream_instead_of_hiding_events() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest("ev-r"), "one server");
    let agent = TestAgent::start(&repo.remote_url(), Options::default()).await;
    let s = agent
        .wait_running("ev-r", "1.0.0", Duration::from_secs(20))
        .await;
    // An id from another agent's log, far ahead of this one.
    let resumed = Subscription::open(&agent, "", Some(1_000_000)).await;
    admin(s["endpoint"].as_str().unwrap(), "/admin/health/unhealthy").await;
    let got = resumed
        .wait_for("a live transition", |e| e["kind"] == "health.transition")
        .await;
    assert_eq!(
        got[0]["after"], 1_000_000,
        "the reset note comes first: {got:?}"
    );
    assert!(got[0]["latest"].as_i64().unwrap() < 1_000_000);
}
