//! The HTTP API as a client sees it: every documented route, with and without a key, with
//! malformed input and wrong methods, against a real agent managing a real server. Every
//! answer is an envelope with `x-request-id`; nothing is ever a 500.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent};
use crate::support::example_server_bin;
use crate::support::git::ManifestRepo;

fn manifest() -> String {
    format!(
        "version: \"1.1\"\nservers:\n  - id: api-a\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15 }}\n",
        example_server_bin().display()
    )
}

/// One operation of the OpenAPI document.
struct Op {
    method: Method,
    path: String,
    write: bool,
    has_query: bool,
    has_body: bool,
    streams: bool,
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let security = op["security"].as_array().unwrap();
            ops.push(Op {
                method: Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
                path: path.clone(),
                // Only key-holders: no `{}` (anonymous) alternative.
                write: !security.is_empty() && !security.iter().any(|s| s == &json!({})),
                has_query: op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["in"] == "query"),
                // Our own request types (the webhook takes the git host's payload as it is).
                has_body: op
                    .pointer("/requestBody/content/application~1json/schema/$ref")
                    .is_some(),
                streams: op["responses"]["200"]["content"]
                    .get("text/event-stream")
                    .is_some(),
            });
        }
    }
    ops
}

struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    body: Value,
}

async fn call(
    agent: &TestAgent,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> Answer {
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("{}{path}", agent.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answers within 10 s"))
        .unwrap();
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // An event stream never ends by itself; its headers are the answer.
    let body = if streaming {
        Value::Null
    } else {
        let bytes = response.bytes().await.unwrap();
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Answer {
        status,
        request_id,
        body,
    }
}

/// A POST announcing a 2 MiB body, answered before any of it is sent. (Sending it through
/// an HTTP client races the early 413: the agent may close while the client still writes,
/// and the client then reports a broken pipe instead of the answer.)
async fn oversized(agent: &TestAgent, path: &str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = agent.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TEST_API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            raw.extend_from_slice(&chunk[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    return;
                }
            }
        }
    });
    read.await
        .unwrap_or_else(|_| panic!("POST {path} (2 MiB) answers within 10 s"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let request_id = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-request-id")
            .then(|| v.trim().to_owned())
    });
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        request_id,
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    }
}

/// A 4xx with the envelope, never a 5xx.
fn assert_envelope(a: &Answer, what: &str, status: u16, code: Option<&str>) {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.body);
    assert!(a.request_id.is_some(), "{what}: x-request-id");
    let e = &a.body["error"];
    assert!(
        e["code"].is_string() && e["message"].is_string() && e["timestamp"].is_string(),
        "{what}: envelope, got {}",
        a.body
    );
    assert_eq!(e["request_id"].as_str(), a.request_id.as_deref(), "{what}");
    if let Some(code) = code {
        assert_eq!(e["code"], code, "{what}: {}", a.body);
    }
}

/// A body the route accepts, so only the id can be wrong.
fn valid_body(path: &str) -> Option<Vec<u8>> {
    if path.ends_with("/health/override") {
        Some(br#"{"state": "healthy", "duration_seconds": 1}"#.to_vec())
    } else if path.ends_with("/draft/add") {
        Some(br#"{"server": "api-a"}"#.to_vec())
    } else if path.ends_with("/draft/remove") {
        Some(br#"{"name": "api-a"}"#.to_vec())
    } else {
        None
    }
}

/// `path` with its parameters filled in: `server` names the server, the client and the
/// profile (so one bad name makes each of them unknown), `artifact` the artifact.
fn concrete(path: &str, server: &str, rollout: i64, commit: &str, artifact: &str) -> String {
    let id = if path.starts_with("/rollouts/") {
        rollout.to_string()
    } else {
        server.to_owned()
    };
    let (client, profile) = if server == "api-a" {
        ("cursor", "default")
    } else {
        (server, server)
    };
    path.replace("{id}", &id)
        .replace("{commit}", commit)
        .replace("{server_id}", server)
        .replace("{client_id}", client)
        .replace("{profile}", profile)
        .replace("{artifact_id}", artifact)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_route_answers_with_and_without_a_key_and_refuses_bad_input_with_the_envelope()
 {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "one server");
    // With the gateway, which client configurations point at.
    let options = Options {
        gateway: true,
        ..Options::default()
    };
    let agent = TestAgent::start(&repo.remote_url(), options).await;
    agent
        .wait_running("api-a", "1.0.0", Duration::from_secs(20))
        .await;
    agent.wait_runs(1).await;

    // The document is open, parses as OpenAPI 3.1, and lists the routes.
    let doc = call(&agent, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let spec = oas3::from_json(doc.body.to_string()).expect("a valid OpenAPI document");
    spec.validate_version().expect("OpenAPI 3.1");
    let doc = doc.body;
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "{} operations", ops.len());

    let (_, rollouts) = agent.get("/servers/api-a/rollouts").await;
    let rollout = rollouts["rollouts"][0]["id"].as_i64().unwrap();
    let (_, revisions) = agent.get("/revisions").await;
    let commit = revisions["revisions"][0]["commit_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A published configuration, so that the artifact routes have one to show.
    let (status, _) = agent.call(Method::POST, "/v1/keys/initialize", None).await;
    assert_eq!(status, 200);
    let (status, published) = agent
        .call(Method::POST, "/v1/config/cursor/default/publish", None)
        .await;
    assert_eq!(status, 201, "{published}");
    let artifact = published["id"].as_str().unwrap().to_owned();

    for op in &ops {
        let real = concrete(&op.path, "api-a", rollout, &commit, &artifact);
        let what = format!("{} {}", op.method, op.path);
        if op.write {
            // No key and a wrong key are refused before anything happens.
            for key in [None, Some("wrong-key")] {
                let a = call(&agent, op.method.clone(), &real, key, None).await;
                assert_envelope(
                    &a,
                    &format!("{what} key {key:?}"),
                    401,
                    Some("UNAUTHORIZED"),
                );
            }
        } else if !op.streams {
            // Reads are open on loopback.
            let a = call(&agent, op.method.clone(), &real, None, None).await;
            assert_ne!(a.status, 401, "{what}: a read on loopback needs no key");
        }

        // An unknown server, rollout or revision is a 404 of its own kind, not "no route".
        if op.path.contains('{') {
            let missing = concrete(&op.path, "no-such-server", 999_999, "deadbeef", "sha256:00");
            let a = call(
                &agent,
                op.method.clone(),
                &missing,
                Some(TEST_API_KEY),
                valid_body(&op.path),
            )
            .await;
            assert_envelope(&a, &format!("{what} unknown id"), 404, None);
            assert_ne!(a.body["error"]["code"], "NOT_FOUND", "{what}: routed");
        }

        // Unknown query parameters are refused, not ignored.
        if op.has_query {
            let a = call(
                &agent,
                op.method.clone(),
                &format!("{real}?bogus=1"),
                Some(TEST_API_KEY),
                None,
            )
            .await;
            assert_envelope(&a, &format!("{what} ?bogus"), 400, None);
        }

        // Bodies: not JSON, unknown fields, and over the limit.
        if op.has_body {
            for (body, label) in [
                (b"{not json".to_vec(), "not JSON"),
                (br#"{"unknown_field": 1}"#.to_vec(), "unknown field"),
            ] {
                let a = call(
                    &agent,
                    op.method.clone(),
                    &real,
                    Some(TEST_API_KEY),
                    Some(body),
                )
                .await;
                assert!(
                    a.status.is_client_error(),
                    "{what} {label}: {} {}",
                    a.status,
                    a.body
                );
                assert_envelope(&a, &format!("{what} {label}"), a.status.as_u16(), None);
            }
        }
        if op.method == Method::POST {
            let a = oversized(&agent, &real).await;
            assert_envelope(&a, &format!("{what} 2 MiB"), 413, Some("PAYLOAD_TOO_LARGE"));
        }

        // A method the route does not have.
        let a = call(&agent, Method::PUT, &real, Some(TEST_API_KEY), None).await;
        assert_envelope(
            &a,
            &format!("PUT {}", op.path),
            405,
            Some("METHOD_NOT_ALLOWED"),
        );
    }

    // Reads with a key, on the real server, succeed.
    for op in ops.iter().filter(|o| o.method == Method::GET && !o.write) {
        let real = concrete(&op.path, "api-a", rollout, &commit, &artifact);
        let a = call(&agent, Method::GET, &real, Some(TEST_API_KEY), None).await;
        assert_eq!(a.status, 200, "GET {real}: {}", a.body);
        assert!(a.request_id.is_some());
    }

    // Bad ids of every kind.
    for (path, code) in [
        ("/rollouts/abc", "ROLLOUT_NOT_FOUND"),
        ("/rollouts/-1", "ROLLOUT_NOT_FOUND"),
        ("/revisions/zz", "REVISION_NOT_FOUND"),
        ("/revisions/a", "REVISION_NOT_FOUND"),
        ("/servers/%2E%2E%2Fetc", "SERVER_NOT_FOUND"),
        ("/nowhere", "NOT_FOUND"),
    ] {
        let a = call(&agent, Method::GET, path, Some(TEST_API_KEY), None).await;
        assert_envelope(&a, path, 404, Some(code));
    }
    // Out-of-range query values.
    for path in [
        "/revisions?limit=-3",
        "/revisions?limit=x",
        "/health/events?after=x",
    ] {
        let a = call(&agent, Method::GET, path, Some(TEST_API_KEY), None).await;
        assert_envelope(&a, path, 400, None);
    }

    // The operator routes do what they say on the real server, and refusals are 4xx.
    let key = Some(TEST_API_KEY);
    let a = call(&agent, Method::POST, "/servers/api-a/rollback", key, None).await;
    assert_envelope(
        &a,
        "rollback with nothing to roll back to",
        409,
        Some("CONFLICT"),
    );
    let a = call(
        &agent,
        Method::POST,
        "/servers/api-a/rollback",
        key,
        Some(br#"{"to": "not-a-version"}"#.to_vec()),
    )
    .await;
    assert_envelope(
        &a,
        "rollback to a non-version",
        400,
        Some("VALIDATION_FAILED"),
    );
    let a = call(
        &agent,
        Method::POST,
        "/servers/api-a/health/override",
        key,
        Some(br#"{"state": "failed", "duration_seconds": 5}"#.to_vec()),
    )
    .await;
    assert_envelope(&a, "override to failed", 400, Some("VALIDATION_FAILED"));
    let a = call(&agent, Method::DELETE, "/servers/api-a", key, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["held"], true);
    crate::support::eventually(Duration::from_secs(10), "api-a stopped", || async {
        let s = agent.server("api-a").await?;
        (s["state"] != "running").then_some(())
    })
    .await;
    let a = call(&agent, Method::POST, "/servers/api-a/deploy", key, None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    agent
        .wait_running("api-a", "1.0.0", Duration::from_secs(20))
        .await;
    let before = agent.server("api-a").await.unwrap()["instance_id"].clone();
    let a = call(&agent, Method::POST, "/servers/api-a/restart", key, None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    crate::support::eventually(Duration::from_secs(20), "a fresh instance", || async {
        let s = agent.server("api-a").await?;
        (s["instance_id"] != before && s["state"] == "running").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_for_reads_every_route_but_the_open_ones_needs_a_key() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "one server");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            require_key_for_reads: true,
            ..Options::default()
        },
    )
    .await;
    let doc = call(&agent, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200, "the document stays open");
    for op in operations(&doc.body) {
        let open = doc.body["paths"][&op.path][op.method.as_str().to_ascii_lowercase()]["security"]
            .as_array()
            .unwrap()
            .is_empty();
        let path = concrete(&op.path, "api-a", 1, "abcd", "sha256:00");
        let a = call(&agent, op.method.clone(), &path, None, None).await;
        if open {
            assert_ne!(a.status, 401, "{} {} is open", op.method, op.path);
        } else {
            assert_envelope(
                &a,
                &format!("{} {} without a key", op.method, op.path),
                401,
                Some("UNAUTHORIZED"),
            );
        }
    }
    let a = call(&agent, Method::GET, "/servers", Some(TEST_API_KEY), None).await;
    assert_eq!(a.status, 200);
}
