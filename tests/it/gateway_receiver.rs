//! The reference gateway receiver (`examples/gateway-receiver`) as a separate process,
//! against a real agent: the contract it documents is the one the agent speaks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agent::{Options, TestAgent, process_manifest};
use crate::support::git::ManifestRepo;
use crate::support::{REPO, eventually};

/// Generous for a loaded machine; every wait polls, so a fast one does not wait this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// Builds the receiver (and the example server the fleet runs) with the profile and target
/// dir of this test binary, once per test run. `cargo test --test it` alone builds no
/// examples, and a binary from an earlier build could be stale.
fn receiver_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/it-<hash> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "gateway-receiver"])
            .args(["--example", "example-server", "--target-dir"])
            .arg(profile_dir.parent().expect("target dir"))
            .current_dir(REPO);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --example gateway-receiver failed"
        );
        let bin = profile_dir.join("examples").join("gateway-receiver");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
}

/// The receiver on a free 127.0.0.1 port; killed on drop.
struct Gateway {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Gateway {
    fn start() -> Gateway {
        let mut child = Command::new(receiver_bin())
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        // Drained for the process's whole life, so a full pipe never blocks its logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(base) = rest.split(';').next()
                {
                    let _ = tx.send(base.to_owned());
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        let Ok(base) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the receiver did not print its address within 10 s:\n{}",
                log.lock().expect("log lock").join("\n")
            );
        };
        Gateway {
            child,
            base,
            log,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    /// The URL the agent publishes to.
    fn url(&self) -> String {
        format!("{}/routes", self.base)
    }

    async fn routes(&self) -> Option<Value> {
        let r = self.http.get(self.url()).send().await.ok()?;
        r.json().await.ok()
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the receiver answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids(table: &Value) -> Vec<&str> {
    table["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["id"].as_str())
        .collect()
}

fn backend<'a>(table: &'a Value, id: &str) -> &'a Value {
    table["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["id"] == id))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_gateway_receiver_routes_the_fleet_and_drops_a_removed_server() {
    let gateway = Gateway::start();
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &process_manifest(&[("alpha", "1.0.0"), ("beta", "1.0.0")]),
        "two servers",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().expect("utf-8 path"),
        Options {
            gateway_urls: vec![gateway.url()],
            ..Options::default()
        },
    )
    .await;
    let alpha = agent.wait_running("alpha", "1.0.0", DEADLINE).await;
    let beta = agent.wait_running("beta", "1.0.0", DEADLINE).await;

    let table = eventually(
        DEADLINE,
        "alpha and beta routable at the gateway",
        || async {
            let table = gateway.routes().await?;
            let routable = ["alpha", "beta"]
                .iter()
                .all(|id| backend(&table, id)["routable"] == true);
            (ids(&table) == ["alpha", "beta"] && routable).then_some(table)
        },
    )
    .await;
    for (id, view) in [("alpha", &alpha), ("beta", &beta)] {
        let b = backend(&table, id);
        assert_eq!(b["endpoint"], view["endpoint"], "{id}: {table}");
        assert_eq!(b["version"], "1.0.0", "{id}: {table}");
        assert_eq!(b["health"], "healthy", "{id}: {table}");
        assert_eq!(b["transport"], "streamable-http", "{id}: {table}");
    }
    let before = table["sequence"].as_u64().expect("a sequence once applied");

    repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "remove beta");
    let table = eventually(DEADLINE, "beta to leave the gateway's table", || async {
        let table = gateway.routes().await?;
        (ids(&table) == ["alpha"]).then_some(table)
    })
    .await;
    assert!(
        table["sequence"].as_u64().expect("sequence") > before,
        "{table}"
    );
    let a = backend(&table, "alpha");
    assert_eq!(a["routable"], true, "{table}");
    assert_eq!(a["endpoint"], alpha["endpoint"], "{table}");

    let log = gateway.log();
    assert!(
        log.iter()
            .any(|l| l.contains("applied sequence") && l.contains("removed [beta]")),
        "the removal is one readable line in the receiver's log:\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_gateway_receiver_ignores_stale_sets_and_refuses_malformed_ones() {
    let gateway = Gateway::start();
    let set = |sequence: u64, ids: &[&str]| {
        let backends: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({
                    "id": id, "endpoint": format!("http://127.0.0.1:{}/mcp", 40000 + i),
                    "transport": "streamable-http", "version": "1.0.0", "health": "healthy",
                    "health_since": "2026-11-21T12:00:00Z", "routable": true,
                })
            })
            .collect();
        json!({
            "sequence": sequence, "revision": "9cd7b5624b", "generated_at": "2026-11-21T12:00:00Z",
            "backends": backends,
        })
        .to_string()
    };

    let empty = gateway.routes().await.expect("GET /routes answers");
    assert_eq!(empty["sequence"], Value::Null, "{empty}");
    assert_eq!(ids(&empty), Vec::<&str>::new());

    assert_eq!(gateway.post(set(5, &["a", "b"])).await.0, 200);
    // Not newer than 5: acknowledged (so the agent does not retry it) and ignored.
    for stale in [5, 3] {
        let (status, body) = gateway.post(set(stale, &["c"])).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["applied"], false, "{body}");
    }
    let table = gateway.routes().await.expect("routes");
    assert_eq!(table["sequence"], 5, "{table}");
    assert_eq!(ids(&table), ["a", "b"]);

    let (status, body) = gateway.post("{\"sequence\": ").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("malformed JSON")),
        "{body}"
    );
    let (status, body) = gateway.post("{\"revision\": null}").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("`sequence`")),
        "{body}"
    );
    let mut duplicate: Value = serde_json::from_str(&set(6, &["a", "a"])).expect("json");
    duplicate["backends"][1]["endpoint"] = json!("not a url");
    let (status, body) = gateway.post(duplicate.to_string()).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("appears twice") && error.contains("not an http(s) URL"),
        "every problem at once: {body}"
    );

    // Refusals leave the table alone; a newer set with a backend missing removes it.
    assert_eq!(gateway.routes().await.expect("routes")["sequence"], 5);
    assert_eq!(gateway.post(set(6, &["b"])).await.0, 200);
    let table = gateway.routes().await.expect("routes");
    assert_eq!(table["sequence"], 6, "{table}");
    assert_eq!(ids(&table), ["b"]);
}
