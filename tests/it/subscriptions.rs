//! Webhook subscriptions against a real subscriber on 127.0.0.1: every delivery signed
//! (and a wrong secret does not verify), delivered in event-id order without gaps across
//! the subscriber's restart and the agent's, and a delivery nobody takes recorded as a
//! dead letter after its last try.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_orchestration::subscriptions::Retry;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::agent::{Options, TestAgent, process_manifest, test_trust};
use crate::support::eventually;
use crate::support::git::ManifestRepo;

const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "a-secret-of-32-characters-long!!";

/// Short waits, so a subscriber that is down for a moment is retried many times.
fn fast_retry(attempts: u32) -> Retry {
    Retry {
        attempts,
        first: Duration::from_millis(50),
        max: Duration::from_millis(200),
    }
}

/// One request the subscriber received: its headers (lower-case names) and raw body.
#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn event_id(&self) -> i64 {
        self.json()["event"]["id"].as_i64().expect("an event id")
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A subscriber on 127.0.0.1 that records every request and answers 200; dropping it
/// closes its port, and [`Subscriber::start_on`] opens the same one again.
struct Subscriber {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start_on(port: u16, log: Arc<Mutex<Vec<Received>>>) -> Subscriber {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) if port != 0 && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let headers: BTreeMap<String, String> = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                            .collect();
                        let len: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        log.lock().unwrap().push(Received { headers, body });
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                });
            }
        });
        Subscriber { port, task }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A trust policy that lets deliveries go to `port` on 127.0.0.1 only.
fn trust_for(port: u16) -> mcp_orchestration::manifest::policy::TrustPolicy {
    let mut trust = test_trust();
    trust.allowed_notification_urls = vec![format!("http://127.0.0.1:{port}/hooks")];
    trust
}

/// An operator's health override of `server`: one `health.override` event.
async fn override_health(agent: &TestAgent, server: &str, n: usize) {
    let (status, body) = agent
        .call(
            Method::POST,
            &format!("/servers/{server}/health/override"),
            Some(json!({ "state": "healthy", "duration_seconds": 60, "reason": format!("override {n}") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The ids of the event log after `cursor`, oldest first.
async fn logged_after(agent: &TestAgent, cursor: i64) -> Vec<i64> {
    let (status, page) = agent
        .get(&format!("/events/history?after={cursor}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// The event ids delivered, in arrival order, with a repeat of the delivery just before it
/// (a retry whose first answer was lost) counted once.
fn delivered(log: &Mutex<Vec<Received>>) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::new();
    for r in log.lock().unwrap().iter() {
        let id = r.event_id();
        if ids.last() != Some(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Waits until every event logged after `cursor` has been delivered.
async fn all_delivered(agent: &TestAgent, log: &Mutex<Vec<Received>>, cursor: i64, what: &str) {
    eventually(DEADLINE, what, || async {
        let logged = logged_after(agent, cursor).await;
        let got = delivered(log);
        (!logged.is_empty() && got.len() >= logged.len()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_gets_signed_deliveries_in_order_across_its_restart_and_the_agents() {
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let subscriber = Subscriber::start_on(0, log.clone()).await;
    let port = subscriber.port;
    let url = format!("http://127.0.0.1:{port}/hooks/agent");

    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("subs-a", "1.0.0")]), "one server");
    let options = || Options {
        trust: Some(trust_for(port)),
        delivery: fast_retry(200),
        ..Options::default()
    };
    let agent = TestAgent::start(&repo.remote_url(), options()).await;
    agent.wait_running("subs-a", "1.0.0", DEADLINE).await;

    // A URL outside the trust policy is refused, and so is a short secret.
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/webhooks/subscribe",
            Some(
                json!({ "url": "http://127.0.0.1:9/elsewhere", "events": ["*"], "secret": SECRET }),
            ),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "URL_NOT_ALLOWED", "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/webhooks/subscribe",
            Some(json!({ "url": url, "events": ["*"], "secret": "short" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, sub) = agent
        .call(
            Method::POST,
            "/v1/webhooks/subscribe",
            Some(json!({ "url": url, "events": ["*"], "secret": SECRET })),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_owned();
    let cursor = sub["cursor"].as_i64().unwrap();
    let (_, list) = agent.get("/v1/webhooks").await;
    let listed = &list["subscriptions"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["secret_set"], true);
    assert!(
        !list.to_string().contains(SECRET),
        "the secret is never listed: {list}"
    );

    // Up: the first events arrive.
    for n in 0..3 {
        override_health(&agent, "subs-a", n).await;
    }
    all_delivered(&agent, &log, cursor, "the first deliveries").await;

    // Down: events that happen meanwhile wait, tried again and again.
    drop(subscriber);
    let before_down = delivered(&log).len();
    for n in 3..6 {
        override_health(&agent, "subs-a", n).await;
    }
    // Long enough for several tries at 50-200 ms apart (checked below: a delivery after
    // the restart says it is not its first try).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        delivered(&log).len(),
        before_down,
        "nothing arrives while down"
    );

    // The agent restarts too, while the subscriber is still down: its cursor was stored.
    let data = agent.stop().await;
    let agent = TestAgent::start_in(&repo.remote_url(), options(), data).await;
    agent.wait_running("subs-a", "1.0.0", DEADLINE).await;
    for n in 6..8 {
        override_health(&agent, "subs-a", n).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Back on the same port: everything missed arrives, in order.
    let _subscriber = Subscriber::start_on(port, log.clone()).await;
    for n in 8..10 {
        override_health(&agent, "subs-a", n).await;
    }
    all_delivered(&agent, &log, cursor, "every delivery after the restarts").await;

    let got = delivered(&log);
    let logged = logged_after(&agent, cursor).await;
    let n = got.len().min(logged.len());
    assert!(n >= 10, "{got:?}");
    assert_eq!(
        got[..n],
        logged[..n],
        "every event after the subscription, in id order, no gap"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, each once: {got:?}"
    );

    let received = log.lock().unwrap().clone();
    let mut retried = false;
    for r in &received {
        let body = r.json();
        let signature = r.header("x-mcp-orchestration-signature");
        let hex = signature
            .strip_prefix("sha256=")
            .unwrap_or_else(|| panic!("a signature header: {:?}", r.headers));
        assert!(
            mcp_orchestration::api::verify_webhook(SECRET.as_bytes(), &r.body, hex),
            "the signature verifies with the secret"
        );
        assert!(
            !mcp_orchestration::api::verify_webhook(b"not-the-secret-at-all!!", &r.body, hex),
            "a wrong secret fails the check"
        );
        let mut tampered = r.body.clone();
        tampered.push(b' ');
        assert!(!mcp_orchestration::api::verify_webhook(
            SECRET.as_bytes(),
            &tampered,
            hex
        ));
        let delivery = format!("{id}:{}", r.event_id());
        assert_eq!(r.header("x-mcp-orchestration-delivery"), delivery);
        assert_eq!(body["delivery_id"], delivery.as_str());
        assert_eq!(body["subscription_id"], id.as_str());
        assert_eq!(
            r.header("x-mcp-orchestration-event"),
            body["event"]["kind"].as_str().unwrap()
        );
        assert_eq!(r.header("content-type"), "application/json");
        retried |= r.header("x-mcp-orchestration-attempt") != "1";
    }
    assert!(
        retried,
        "a delivery made while the subscriber was down was tried again"
    );
    assert!(
        received
            .iter()
            .any(|r| r.json()["event"]["kind"] == "health.override"),
        "the events are the log's"
    );

    // The cursor says how far it got; nothing was given up on.
    let (_, list) = agent.get("/v1/webhooks").await;
    assert!(list["subscriptions"][0]["cursor"].as_i64() >= got.last().copied());
    assert_eq!(list["subscriptions"][0]["dead_letters"], 0);

    // Deleted: nothing more arrives, and it is gone from the list.
    let (status, body) = agent
        .call(Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = agent
        .call(Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "SUBSCRIPTION_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_nobody_takes_becomes_a_dead_letter_and_the_next_one_goes_on() {
    // A port that was free a moment ago: nothing listens there now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks/dead");
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("subs-d", "1.0.0")]), "one server");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            trust: Some(trust_for(port)),
            delivery: fast_retry(3),
            ..Options::default()
        },
    )
    .await;
    agent.wait_running("subs-d", "1.0.0", DEADLINE).await;
    let (status, sub) = agent
        .call(
            Method::POST,
            "/v1/webhooks/subscribe",
            Some(json!({ "url": url, "events": ["health.override"], "secret": SECRET })),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_owned();

    override_health(&agent, "subs-d", 0).await;
    override_health(&agent, "subs-d", 1).await;
    let page = eventually(DEADLINE, "two dead letters", || async {
        let (_, page) = agent
            .get(&format!("/v1/dead-letters?subscription={id}"))
            .await;
        (page["dead_letters"].as_array()?.len() == 2).then_some(page)
    })
    .await;
    let dead = page["dead_letters"].as_array().unwrap();
    // Newest first; each tried three times, the body kept as it was sent.
    let (second, first) = (&dead[0], &dead[1]);
    assert!(first["event_id"].as_i64() < second["event_id"].as_i64());
    for d in dead {
        assert_eq!(d["attempts"], 3, "{d}");
        assert_eq!(d["url"], url.as_str());
        assert_eq!(d["kind"], "health.override");
        assert_eq!(d["body"]["event"]["id"], d["event_id"]);
        assert!(d["error"].as_str().unwrap().contains("cannot reach"), "{d}");
    }
    let (_, list) = agent.get("/v1/webhooks").await;
    let listed = &list["subscriptions"][0];
    assert_eq!(listed["dead_letters"], 2, "{list}");
    assert_eq!(listed["cursor"], second["event_id"], "{list}");

    // The same through the CLI's route for every dead letter, and the MCP tools' error for
    // an unknown subscription.
    let (_, all) = agent.get("/v1/dead-letters").await;
    assert_eq!(all["dead_letters"].as_array().unwrap().len(), 2);
    let (status, body) = agent.get("/v1/dead-letters?subscription=sub-none").await;
    assert_eq!(status, 404, "{body}");
}
