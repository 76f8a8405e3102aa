//! The MCP gateway, through a real MCP client (rmcp) against a real agent and real example
//! servers: one endpoint lists and calls every server's tools, and a server that goes
//! unhealthy answers `BACKEND_UNHEALTHY` naming its tools while the others keep answering.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::agent::{Options, TestAgent};
use crate::support::git::ManifestRepo;
use crate::support::mcp::{call, client, names, python_client, python_with_mcp, text};
use crate::support::{admin, eventually, example_server_bin};

const DEADLINE: Duration = Duration::from_secs(30);

fn manifest(ids: &[&str]) -> String {
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for id in ids {
        text.push_str(&format!(
            "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 1 }}\n    recovery: {{ max_attempts: 1, backoff_seconds: 600 }}\n",
            example_server_bin().display()
        ));
    }
    text
}

/// An agent with the gateway on, running `ids` (the example server at 1.0.0), and its
/// gateway's `/mcp` URL.
async fn fleet(ids: &[&str], options: Options) -> (ManifestRepo, TestAgent, String) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(ids), "the fleet");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            ..options
        },
    )
    .await;
    for id in ids {
        agent.wait_running(id, "1.0.0", DEADLINE).await;
    }
    let gateway = agent.gateway.clone().expect("the gateway listens");
    (repo, agent, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_endpoint_serves_every_servers_tools_prompts_and_resources_and_routes_around_an_unhealthy_one()
 {
    let ids = ["alpha", "beta", "gamma"];
    let (_repo, agent, gateway) = fleet(&ids, Options::default()).await;
    let client = client(&gateway).await;

    // Every server's tools, under `{server}_{tool}`, once the gateway has a session with
    // each backend.
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                format!("{id}_echo"),
                format!("{id}_server_version"),
                format!("{id}_sleep"),
            ]
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let tools = eventually(DEADLINE, "every server's tools to be listed", || async {
        let tools = client.list_all_tools().await.ok()?;
        (names(&tools) == expected).then_some(tools)
    })
    .await;
    let echo = tools.iter().find(|t| t.name == "beta_echo").unwrap();
    assert_eq!(
        echo.description.as_deref(),
        Some("Return the given text unchanged"),
        "descriptions pass through"
    );
    assert!(
        echo.input_schema.get("properties").is_some(),
        "schemas pass through: {:?}",
        echo.input_schema
    );

    let r = call(
        &client,
        "beta_echo",
        json!({ "text": "through the gateway" }),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(text(&r), "through the gateway");
    let r = call(&client, "gamma_server_version", json!({})).await;
    assert_eq!(text(&r), "1.0.0", "{r:?}");

    // Prompts, resources and templates of every server, named and addressed the same way.
    let prompts = client.list_all_prompts().await.unwrap();
    let mut prompt_names: Vec<String> = prompts.iter().map(|p| p.name.clone()).collect();
    prompt_names.sort();
    assert_eq!(prompt_names, ["alpha_greet", "beta_greet", "gamma_greet"]);
    let mut get = rmcp::model::GetPromptRequestParams::new("beta_greet");
    get.arguments = Some(json!({ "name": "Ada" }).as_object().unwrap().clone());
    let prompt = client.get_prompt(get).await.unwrap();
    assert_eq!(
        serde_json::to_value(&prompt.messages).unwrap()[0]["content"]["text"],
        "Say hello to Ada from example-server 1.0.0."
    );
    let resources = client.list_all_resources().await.unwrap();
    let mut uris: Vec<String> = resources.iter().map(|r| r.uri.clone()).collect();
    uris.sort();
    assert_eq!(
        uris,
        [
            "mcp-orchestration://alpha/example://version",
            "mcp-orchestration://beta/example://version",
            "mcp-orchestration://gamma/example://version"
        ]
    );
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "mcp-orchestration://gamma/example://version",
        ))
        .await
        .unwrap();
    let contents = serde_json::to_value(&read.contents).unwrap();
    assert_eq!(contents[0]["text"], "1.0.0", "{contents}");
    assert_eq!(
        contents[0]["uri"], "mcp-orchestration://gamma/example://version",
        "the contents name the URI the client asked for"
    );
    let templates = client.list_all_resource_templates().await.unwrap();
    assert!(
        templates
            .iter()
            .any(|t| t.uri_template == "mcp-orchestration://beta/example://echo/{text}"),
        "{templates:?}"
    );
    let echoed = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "mcp-orchestration://beta/example://echo/hi",
        ))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&echoed.contents).unwrap()[0]["text"],
        "hi"
    );
    let missing = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "file:///etc/passwd",
        ))
        .await
        .expect_err("not a gateway URI");
    assert!(
        missing
            .to_string()
            .contains("no resource `file:///etc/passwd`"),
        "{missing}"
    );

    // A name the gateway does not serve is a protocol error that says so.
    let unknown = client
        .call_tool(CallToolRequestParams::new("delta_echo"))
        .await
        .expect_err("an unknown tool is refused");
    assert!(
        unknown.to_string().contains("unknown tool `delta_echo`"),
        "{unknown}"
    );

    // alpha goes unhealthy: its tools answer BACKEND_UNHEALTHY, naming all of them, while
    // beta and gamma keep answering.
    let (_, alpha) = agent.get("/servers/alpha").await;
    admin(
        alpha["endpoint"].as_str().unwrap(),
        "/admin/health/unhealthy",
    )
    .await;
    let refused = eventually(DEADLINE, "alpha's calls to be refused", || async {
        let r = call(&client, "alpha_echo", json!({ "text": "x" })).await;
        (r.is_error == Some(true)).then_some(r)
    })
    .await;
    assert!(
        text(&refused).starts_with("BACKEND_UNHEALTHY: Backend 'alpha' is currently unhealthy"),
        "{refused:?}"
    );
    let detail = refused.structured_content.clone().unwrap();
    assert_eq!(detail["backend"], "alpha");
    assert_eq!(detail["state"], "unhealthy");
    assert_eq!(
        detail["affected_tools"],
        json!(["alpha_echo", "alpha_server_version", "alpha_sleep"])
    );
    assert!(detail["suggested_action"].is_string(), "{detail}");
    // The gateway's own view says the same.
    let base = gateway.trim_end_matches("/mcp");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, body) = get("/backends/alpha/health").await;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["routable"], false, "{h}");
    assert_eq!(h["status"], "unhealthy", "{h}");
    assert_eq!(h["affected_tools"], detail["affected_tools"], "{h}");
    let (_, body) = get("/backends/beta/health").await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&h["routable"], &h["status"]),
        (&json!(true), &json!("healthy")),
        "{h}"
    );
    let (status, body) = get("/backends/delta/health").await;
    assert_eq!(status, 404, "{body}");
    let (_, body) = get("/backends").await;
    let all: Value = serde_json::from_str(&body).unwrap();
    let backends = all["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3, "{all}");
    let beta = backends.iter().find(|b| b["id"] == "beta").unwrap();
    assert_eq!(beta["routable"], true);
    assert_eq!(beta["version"], "1.0.0");
    assert_eq!(beta["calls_in_flight"], 0);
    assert_eq!(
        beta["calls"]["ok"], 1,
        "one call to beta_echo so far: {beta}"
    );
    assert!(beta["protocol_version"].is_string(), "{beta}");
    assert_eq!(
        beta["tools"],
        json!(["beta_echo", "beta_server_version", "beta_sleep"])
    );
    let alpha_view = backends.iter().find(|b| b["id"] == "alpha").unwrap();
    assert_eq!(alpha_view["routable"], false, "{alpha_view}");
    assert!(alpha_view["calls"]["backend_unhealthy"].as_u64().unwrap() >= 1);
    let (_, health) = get("/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        (&health["backends"], &health["routable"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(health["sessions"], 1, "{health}");
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics
            .contains("mcp_orchestration_gateway_calls_total{backend=\"beta\",outcome=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mcp_orchestration_gateway_call_duration_seconds_count{backend=\"beta\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_orchestration_gateway_sessions 1\n"),
        "{metrics}"
    );
    let (_, doc) = get("/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for path in ["/backends", "/backends/{id}/health", "/health", "/metrics"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} documented");
    }
    assert!(doc["components"]["schemas"]["BackendView"].is_object());
    // `status` counts the tools each server contributes.
    let (_, fleet) = agent.get("/servers").await;
    for s in fleet["servers"].as_array().unwrap() {
        assert_eq!(s["gateway_tools"], 3, "{s}");
    }
    // Still listed, so clients that ignore list_changed get the clear answer.
    assert_eq!(names(&client.list_all_tools().await.unwrap()), expected);
    for id in ["beta", "gamma"] {
        let r = call(&client, &format!("{id}_echo"), json!({ "text": id })).await;
        assert_eq!(text(&r), id, "{r:?}");
    }

    // Healthy again: calls go through without the client reconnecting.
    admin(alpha["endpoint"].as_str().unwrap(), "/admin/health/healthy").await;
    eventually(DEADLINE, "alpha's calls to go through again", || async {
        let r = call(&client, "alpha_echo", json!({ "text": "back" })).await;
        (r.is_error != Some(true) && text(&r) == "back").then_some(())
    })
    .await;
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_can_be_turned_off_and_needs_a_key_when_reads_do() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(&["solo"]), "one server");
    let off = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    assert!(off.gateway.is_none(), "off unless asked");

    let keyed = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            require_key_for_reads: true,
            ..Default::default()
        },
    )
    .await;
    let url = keyed.gateway.clone().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "0" } }
    });
    let refused = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let accepted = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(crate::support::agent::TEST_API_KEY)
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    // The gateway's own health needs no key.
    let health = http
        .get(url.replace("/mcp", "/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk_lists_and_calls_tools_through_the_gateway() {
    let Some(python) = python_with_mcp() else {
        return;
    };
    let ids = ["py-a", "py-b"];
    let (_repo, _agent, gateway) = fleet(&ids, Options::default()).await;
    // Wait until the gateway has a session with both backends (our own client shows it).
    let ours = client(&gateway).await;
    eventually(DEADLINE, "both servers' tools to be listed", || async {
        let tools = ours.list_all_tools().await.ok()?;
        (tools.len() == 6).then_some(())
    })
    .await;
    ours.cancel().await.ok();

    let v = python_client(
        &python,
        &gateway,
        ("py-b_sleep", json!({ "ms": 40 })),
        ("py-a_greet", json!({ "name": "Python" })),
        "mcp-orchestration://py-b/example://version",
    )
    .await;
    assert_eq!(v["server"], "mcp-orchestration-gateway");
    assert_eq!(
        v["tools"],
        json!([
            "py-a_echo",
            "py-a_server_version",
            "py-a_sleep",
            "py-b_echo",
            "py-b_server_version",
            "py-b_sleep"
        ])
    );
    assert_eq!(
        v["result"]["content"][0]["text"], "slept 40 ms on 1.0.0",
        "{v}"
    );
    assert_ne!(v["result"]["isError"], true, "{v}");
    // The SDK asked for the call's progress (its request id as the token): the backend's
    // four notifications reached it, under its token, before the answer.
    let heard: Vec<f64> = v["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(heard, [1.0, 2.0, 3.0, 4.0], "{v}");
    assert_eq!(v["progress"][3]["total"], 4.0, "{v}");
    assert_eq!(v["progress"][3]["message"], "4 of 4 quarters slept", "{v}");
    assert_eq!(v["prompts"], json!(["py-a_greet", "py-b_greet"]), "{v}");
    assert_eq!(
        v["prompt"]["messages"][0]["content"]["text"],
        "Say hello to Python from example-server 1.0.0.",
        "{v}"
    );
    assert_eq!(
        v["resources"],
        json!([
            "mcp-orchestration://py-a/example://version",
            "mcp-orchestration://py-b/example://version"
        ])
    );
    assert_eq!(v["read"]["contents"][0]["text"], "1.0.0", "{v}");
}

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone)]
struct Counting(tokio::sync::mpsc::UnboundedSender<()>);

impl rmcp::ClientHandler for Counting {
    async fn on_tool_list_changed(&self, _context: rmcp::service::NotificationContext<RoleClient>) {
        let _ = self.0.send(());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stdio_bridge_serves_the_gateway_and_passes_list_changed_on() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(&["first"]), "one server");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            ..Default::default()
        },
    )
    .await;
    agent.wait_running("first", "1.0.0", DEADLINE).await;
    let base = agent.gateway.clone().unwrap().replace("/mcp", "");
    let mut child = tokio::process::Command::new(crate::support::BIN)
        .args(["gateway", "--url", &base])
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let client = tokio::time::timeout(DEADLINE, Counting(tx).serve((stdout, stdin)))
        .await
        .expect("the bridge answers within the deadline")
        .expect("an MCP session over stdio");
    assert_eq!(
        client
            .peer_info()
            .unwrap()
            .server_info
            .as_ref()
            .unwrap()
            .name,
        "mcp-orchestration-gateway",
        "the bridge says what is behind it"
    );
    eventually(DEADLINE, "first's tools through the bridge", || async {
        let tools = client.list_all_tools().await.ok()?;
        (names(&tools) == ["first_echo", "first_server_version", "first_sleep"]).then_some(())
    })
    .await;
    let r = client
        .call_tool(
            CallToolRequestParams::new("first_echo")
                .with_arguments(json!({ "text": "over stdio" }).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(text(&r), "over stdio");
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "mcp-orchestration://first/example://version",
        ))
        .await
        .expect("resources pass the bridge");
    assert_eq!(
        serde_json::to_value(&read.contents).unwrap()[0]["text"],
        "1.0.0"
    );
    let prompts = client
        .list_all_prompts()
        .await
        .expect("prompts pass the bridge");
    assert_eq!(prompts[0].name, "first_greet");

    // A second server joins: the client hears list_changed through the bridge.
    while changed.try_recv().is_ok() {}
    repo.push_manifest(&manifest(&["first", "second"]), "two servers");
    tokio::time::timeout(DEADLINE, changed.recv())
        .await
        .expect("list_changed reaches the stdio client")
        .unwrap();
    eventually(DEADLINE, "second's tools through the bridge", || async {
        let tools = client.list_all_tools().await.ok()?;
        (tools.len() == 6).then_some(())
    })
    .await;
    client.cancel().await.ok();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the bridge exits when stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Calls `tool` in a loop on `client` until `stop`, counting answers and failures.
async fn caller(
    client: Arc<RunningService<RoleClient, ClientConfig>>,
    tool: String,
    stop: tokio_util::sync::CancellationToken,
) -> (usize, Vec<String>, Vec<String>) {
    let (mut ok, mut failures, mut answers) = (0, Vec::new(), Vec::new());
    while !stop.is_cancelled() {
        let params = CallToolRequestParams::new(tool.clone())
            .with_arguments(json!({ "ms": 150 }).as_object().unwrap().clone());
        // A call lost with its instance would never be answered: a failure, not a hang.
        match tokio::time::timeout(Duration::from_secs(10), client.call_tool(params)).await {
            Ok(Ok(r)) if r.is_error != Some(true) => {
                ok += 1;
                answers.push(text(&r));
            }
            Ok(Ok(r)) => failures.push(format!("tool error: {r:?}")),
            Ok(Err(e)) => failures.push(format!("protocol error: {e}")),
            Err(_) => failures.push("no answer within 10 s".to_owned()),
        }
    }
    (ok, failures, answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_in_flight_survive_an_upgrade_a_restart_and_two_rollbacks_without_a_single_failure() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(&["busy"]), "1.0.0");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            // The most an old instance waits for its calls in flight.
            drain: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await;
    agent.wait_running("busy", "1.0.0", DEADLINE).await;
    let gateway = agent.gateway.clone().unwrap();
    let client = Arc::new(client(&gateway).await);
    eventually(DEADLINE, "busy's tools", || async {
        let tools = client.list_all_tools().await.ok()?;
        (tools.len() == 3).then_some(())
    })
    .await;

    // Four callers keep a 150 ms call in flight at all times.
    let stop = tokio_util::sync::CancellationToken::new();
    let callers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(caller(client.clone(), "busy_sleep".into(), stop.clone())))
        .collect();

    // An upgrade by a commit: 1.1.0 starts beside 1.0.0, passes its gate, and 1.0.0 stops
    // once its calls are done.
    let first = agent.server("busy").await.unwrap();
    repo.push_manifest(
        &manifest(&["busy"]).replace("\"1.0.0\"", "\"1.1.0\""),
        "1.1.0",
    );
    agent.wait_running("busy", "1.1.0", DEADLINE).await;
    // An operator restart, once the upgrade (its drain included) is over: a new instance
    // beside the running one, the same way.
    eventually(DEADLINE, "the upgrade to finish", || async {
        let (_, r) = agent.get("/servers/busy/rollouts?limit=1").await;
        (r["rollouts"][0]["outcome"] == "succeeded" && r["rollouts"][0]["to_version"] == "1.1.0")
            .then_some(())
    })
    .await;
    let upgraded = agent.server("busy").await.unwrap();
    assert_ne!(upgraded["instance_id"], first["instance_id"]);
    let (status, _) = agent
        .call(reqwest::Method::POST, "/servers/busy/restart", None)
        .await;
    assert_eq!(status, 202);
    eventually(DEADLINE, "the restart's new instance", || async {
        let now = agent.server("busy").await?;
        (now["instance_id"] != upgraded["instance_id"] && now["state"] == "running").then_some(())
    })
    .await;
    // Calls reach the newest instance.
    eventually(
        DEADLINE,
        "a call answered by the restarted 1.1.0",
        || async {
            let r = call(&client, "busy_server_version", json!({})).await;
            (text(&r) == "1.1.0").then_some(())
        },
    )
    .await;
    let restarted = agent.server("busy").await.unwrap();

    // A commit to a version that fails its health gate: rolled back, while 1.1.0 never
    // stops serving.
    repo.push_manifest(
        &manifest(&["busy"])
            .replace("\"1.0.0\"", "\"1.2.0\"")
            .replace(
                "    process:\n",
                "    process:\n      env: { EXAMPLE_SERVER_HEALTH: unhealthy }\n",
            ),
        "1.2.0, broken",
    );
    eventually(DEADLINE, "1.2.0 to be rolled back", || async {
        let (_, r) = agent.get("/servers/busy/rollouts?limit=1").await;
        (r["rollouts"][0]["to_version"] == "1.2.0" && r["rollouts"][0]["outcome"] == "rolled_back")
            .then_some(())
    })
    .await;
    let kept = agent.server("busy").await.unwrap();
    assert_eq!(kept["instance_id"], restarted["instance_id"], "{kept}");
    // The broken entry goes (the next one keeps what runs), then an operator's rollback
    // to 1.0.0: a new instance beside 1.1.0, the same way.
    let fixed = repo.push_manifest(
        &manifest(&["busy"]).replace("\"1.0.0\"", "\"1.1.0\""),
        "back to 1.1.0",
    );
    eventually(DEADLINE, "the fixed manifest applied", || async {
        let (_, fleet) = agent.get("/servers").await;
        (fleet["applied_revision"] == fixed.as_str()).then_some(())
    })
    .await;
    let (status, body) = agent.rollback_to("busy", "1.0.0").await;
    assert_eq!(status, 202, "{body}");
    eventually(
        DEADLINE,
        "a call answered by the rolled-back 1.0.0",
        || async {
            let r = call(&client, "busy_server_version", json!({})).await;
            (text(&r) == "1.0.0").then_some(())
        },
    )
    .await;
    stop.cancel();
    let mut answered = 0;
    let mut versions = std::collections::BTreeSet::new();
    for c in callers {
        let (ok, failures, answers) = c.await.unwrap();
        assert!(failures.is_empty(), "failed calls: {failures:#?}");
        answered += ok;
        versions.extend(
            answers
                .iter()
                .filter_map(|a| a.rsplit(' ').next().map(str::to_owned)),
        );
    }
    assert!(answered >= 8, "only {answered} calls were answered");
    assert_eq!(
        versions,
        ["1.0.0".to_owned(), "1.1.0".to_owned()].into(),
        "calls were answered by both versions, never by the broken 1.2.0"
    );
    assert!(!client.is_closed(), "one client session throughout");

    // The rollout's timeline says how the old instance was drained.
    let (_, rollouts) = agent.get("/servers/busy/rollouts?limit=5").await;
    let upgrade = rollouts["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to_version"] == "1.1.0" && r["from_version"] == "1.0.0")
        .unwrap()
        .clone();
    let (_, detail) = agent.get(&format!("/rollouts/{}", upgrade["id"])).await;
    let drained = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "drained")
        .unwrap_or_else(|| panic!("no drained step: {detail}"));
    assert!(
        drained["detail"]
            .as_str()
            .unwrap()
            .starts_with("the gateway routes to the new instance and no call is in flight"),
        "{drained}"
    );
    Arc::try_unwrap(client).ok().unwrap().cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_dies_mid_call_gets_the_call_answered_and_its_replacement_the_next() {
    let repo = ManifestRepo::new();
    let text_of = manifest(&["phoenix"]).replace(
        "recovery: { max_attempts: 1, backoff_seconds: 600 }",
        "recovery: { max_attempts: 3, backoff_seconds: 0.1 }",
    );
    repo.push_manifest(&text_of, "phoenix");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            ..Default::default()
        },
    )
    .await;
    let first = agent.wait_running("phoenix", "1.0.0", DEADLINE).await;
    let gateway = agent.gateway.clone().unwrap();
    let base = gateway.trim_end_matches("/mcp").to_owned();
    let client = Arc::new(client(&gateway).await);
    eventually(DEADLINE, "phoenix's tools to be listed", || async {
        (client.list_all_tools().await.ok()?.len() == 3).then_some(())
    })
    .await;

    // A call in flight when its instance dies is answered (not left hanging forever),
    // and says it may or may not have run.
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "phoenix_sleep", json!({ "ms": 30000 })).await }
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(DEADLINE, "the call to be in flight", || async {
        let v: Value = http
            .get(format!("{base}/backends"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["backends"][0]["calls_in_flight"] == 1).then_some(())
    })
    .await;
    admin(first["endpoint"].as_str().unwrap(), "/admin/exit/1").await;
    let answered = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the call in flight is answered once its backend died")
        .unwrap();
    assert_eq!(answered.is_error, Some(true), "{answered:?}");
    assert!(
        text(&answered).starts_with(
            "BACKEND_UNREACHABLE: 'phoenix' did not answer; the call may or may not have run"
        ),
        "{answered:?}"
    );

    // Recovery replaces it; the same client session reaches the new instance.
    eventually(DEADLINE, "calls to reach the replacement", || async {
        let r = call(&client, "phoenix_echo", json!({ "text": "again" })).await;
        (r.is_error != Some(true) && text(&r) == "again").then_some(())
    })
    .await;
    let now = agent.server("phoenix").await.unwrap();
    assert_ne!(now["instance_id"], first["instance_id"], "{now}");
}

/// A manifest of example servers; those in `modern` speak only MCP 2026-07-28.
fn manifest_with_eras(ids: &[&str], modern: &[&str]) -> String {
    let mut text = manifest(ids);
    for id in modern {
        text = text.replace(
            &format!("  - id: {id}\n    version: \"1.0.0\"\n    process:\n"),
            &format!(
                "  - id: {id}\n    version: \"1.0.0\"\n    process:\n      env: {{ EXAMPLE_SERVER_PROTOCOL: \"2026-07-28\" }}\n"
            ),
        );
    }
    text
}

/// An agent with the gateway on, running `old` (2025-11-25) and `new` (which speaks only
/// 2026-07-28), once the gateway has a session with both: the gateway's `/mcp` URL and
/// its `/backends`.
async fn two_eras() -> (ManifestRepo, TestAgent, String, Vec<Value>) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest_with_eras(&["old", "new"], &["new"]), "two eras");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            ..Default::default()
        },
    )
    .await;
    for id in ["old", "new"] {
        agent.wait_running(id, "1.0.0", DEADLINE).await;
    }
    let gateway = agent.gateway.clone().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let backends = eventually(DEADLINE, "sessions with both backends", || async {
        let v: Value = http
            .get(gateway.replace("/mcp", "/backends"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let all = v["backends"].as_array()?.clone();
        (all.len() == 2 && all.iter().all(|b| b["protocol_version"].is_string())).then_some(all)
    })
    .await;
    (repo, agent, gateway, backends)
}

/// Sends a call of the example server's `sleep` (as `tool`) for `ms`; its handle has the
/// progress token rmcp put on it and can cancel it.
async fn start_sleep(
    client: &rmcp::Peer<RoleClient>,
    tool: &str,
    ms: u64,
) -> rmcp::service::RequestHandle<RoleClient> {
    use rmcp::model::{CallToolRequest, ClientRequest};
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(json!({ "ms": ms }).as_object().unwrap().clone());
    client
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("the call is sent")
}

/// The example server's count of its `sleep` calls running, and of those cancelled, at
/// its MCP endpoint `endpoint`.
async fn sleeps(http: &reqwest::Client, endpoint: &str) -> (u64, u64) {
    let v: Value = http
        .get(endpoint.replace("/mcp", "/admin/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["sleeping"].as_u64().unwrap(),
        v["sleeps_cancelled"].as_u64().unwrap(),
    )
}

/// A 2026-07-28 client of `url` (`server/discover`, no session), served by `handler`.
async fn modern_client<H: rmcp::ClientHandler>(
    url: &str,
    handler: H,
) -> RunningService<RoleClient, H> {
    use rmcp::model::ProtocolVersion;
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    config.allow_stateless = true;
    handler
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_config(config),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("a 2026-07-28 client is served")
}

/// A client that passes on the `notifications/progress` it hears.
#[derive(Clone)]
struct Hearing(tokio::sync::mpsc::UnboundedSender<rmcp::model::ProgressNotificationParam>);

impl rmcp::ClientHandler for Hearing {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_and_backends_of_both_protocol_eras_meet_on_one_endpoint() {
    use rmcp::model::{ProtocolVersion, ServerResult, SubscriptionFilter};

    let (repo, _agent, gateway, backends) = two_eras().await;
    let era = |id: &str| {
        backends.iter().find(|b| b["id"] == id).unwrap()["protocol_version"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(era("new"), "2026-07-28", "{backends:?}");
    assert_eq!(era("old"), "2025-11-25", "{backends:?}");

    // A 2025-11-25 client (initialize, a session) uses both backends.
    let (legacy_heard, mut legacy_progress) = tokio::sync::mpsc::unbounded_channel();
    let legacy = Hearing(legacy_heard)
        .serve(StreamableHttpClientTransport::from_uri(gateway.clone()))
        .await
        .expect("a 2025-11-25 client is served");
    for id in ["old", "new"] {
        let r = call(&legacy, &format!("{id}_echo"), json!({ "text": id })).await;
        assert_eq!(text(&r), id, "{r:?}");
    }

    // A 2026-07-28 client (server/discover, no session) too, and hears list_changed on
    // its subscription.
    let (modern_heard, mut modern_progress) = tokio::sync::mpsc::unbounded_channel();
    let modern = modern_client(&gateway, Hearing(modern_heard)).await;
    assert_eq!(
        modern.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    let tools = names(&modern.list_all_tools().await.unwrap());
    assert_eq!(tools.len(), 6, "{tools:?}");
    for id in ["old", "new"] {
        let params = CallToolRequestParams::new(format!("{id}_echo"))
            .with_arguments(json!({ "text": id }).as_object().unwrap().clone());
        let r = modern.call_tool(params).await.unwrap();
        assert_eq!(text(&r), id, "{r:?}");
    }

    // Both clients call a long tool of each backend at the same time; rmcp asks for the
    // progress of every request, under a token it numbers per session, so both are likely
    // to use the same one. Each hears its own call's four notifications, under its own
    // token (the old backend's through each call's stream; the new one's through its
    // session, which both calls share).
    for id in ["old", "new"] {
        let sleep = |client: &rmcp::Peer<RoleClient>| {
            let client = client.clone();
            async move {
                let handle = start_sleep(&client, &format!("{id}_sleep"), 200).await;
                let token = handle.progress_token.clone();
                match handle.await_response().await.unwrap() {
                    ServerResult::CallToolResult(r) => (token, r),
                    other => panic!("not a tool's result: {other:?}"),
                }
            }
        };
        let (a, b) = tokio::join!(sleep(&legacy), sleep(&modern));
        for (client, (token, answer), progress) in [
            ("2025-11-25", a, &mut legacy_progress),
            ("2026-07-28", b, &mut modern_progress),
        ] {
            assert_eq!(text(&answer), "slept 200 ms on 1.0.0", "{answer:?}");
            // Four, each handed to the client's handler on its own (rmcp may run it after
            // the answer is out).
            let mut heard = Vec::new();
            for _ in 0..4 {
                match tokio::time::timeout(DEADLINE, progress.recv()).await {
                    Ok(Some(p)) => heard.push(p),
                    _ => break,
                }
            }
            assert_eq!(
                heard
                    .iter()
                    .map(|p| (p.progress_token.clone(), p.progress))
                    .collect::<Vec<_>>(),
                (1..=4)
                    .map(|n| (token.clone(), f64::from(n)))
                    .collect::<Vec<_>>(),
                "a {client} client's progress from {id}: {heard:?}"
            );
        }
    }
    let mut subscription = modern
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .expect("the gateway accepts a subscription");
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    repo.push_manifest(
        &manifest_with_eras(&["old", "new", "third"], &["new", "third"]),
        "a third server",
    );
    let heard = tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("list_changed on the subscription")
        .unwrap();
    assert!(
        matches!(
            heard,
            Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
        ),
        "{heard:?}"
    );
    let tools = names(&modern.list_all_tools().await.unwrap());
    assert!(tools.contains(&"third_echo".to_owned()), "{tools:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_its_client_cancels_is_cancelled_at_its_backend() {
    let (_repo, _agent, gateway, backends) = two_eras().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // The backend's count of its `sleep` calls running and cancelled, and the gateway's
    // of its calls in flight to it.
    let sleeps = |id: &str| {
        let endpoint = backends.iter().find(|b| b["id"] == id).unwrap()["endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let http = http.clone();
        async move { sleeps(&http, &endpoint).await }
    };
    let in_flight = |id: &str| {
        let (http, url, id) = (
            http.clone(),
            gateway.replace("/mcp", "/backends"),
            id.to_owned(),
        );
        async move {
            let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let all = v["backends"].as_array().unwrap();
            all.iter().find(|b| b["id"] == id).unwrap()["calls_in_flight"]
                .as_u64()
                .unwrap()
        }
    };

    // A 2025-11-25 client (its calls take the shortcut) and a 2026-07-28 one (rmcp's
    // session) each start a long call on each backend (the old one's short way, the new
    // one's rmcp session), then cancel it: the backend's own call is cancelled.
    let legacy = client(&gateway).await;
    let modern = modern_client(&gateway, ()).await;
    for (client, peer) in [("2025-11-25", legacy.peer()), ("2026-07-28", modern.peer())] {
        for id in ["old", "new"] {
            let (_, cancelled_before) = sleeps(id).await;
            let handle = start_sleep(peer, &format!("{id}_sleep"), 30_000).await;
            eventually(DEADLINE, "the call running at the backend", || async {
                (sleeps(id).await.0 == 1).then_some(())
            })
            .await;
            assert_eq!(in_flight(id).await, 1);
            handle.cancel(None).await.unwrap();
            let what = format!("a {client} client's call to {id} cancelled at the backend");
            eventually(DEADLINE, &what, || async {
                (sleeps(id).await == (0, cancelled_before + 1)).then_some(())
            })
            .await;
            eventually(DEADLINE, "the gateway's call ended", || async {
                (in_flight(id).await == 0).then_some(())
            })
            .await;
        }
    }
    // Counted as cancelled, not as failed.
    let metrics = http
        .get(gateway.replace("/mcp", "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in ["old", "new"] {
        let line = format!(
            "mcp_orchestration_gateway_calls_total{{backend=\"{id}\",outcome=\"cancelled\"}} 2"
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_in_flight_survive_a_registry_upgrade_of_a_container_without_a_single_failure() {
    use crate::support::docker::{ContainerGuard, TestRegistry, docker_or_skip, registry_or_skip};
    let name = "calls_in_flight_survive_a_registry_upgrade";
    if !docker_or_skip(name) || !registry_or_skip(name) {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(storage.path(), false).await;
    let host = registry.host();
    crate::support::images::publish(&host, "1.0.0", "healthy");
    let guard = ContainerGuard::new("gw-reg");
    let id = guard.server_id().to_owned();
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n  - id: {id}\n    version: \"1.0.0\"\n    docker: {{ image: {host}/example/server, port: 8080 }}\n    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.15, failure_threshold: 2, success_threshold: 2 }}\n    update_policy: {{ version_strategy: semantic, allow: minor }}\n"
        ),
        "one container",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            runtime: mcp_orchestration::settings::RuntimeChoice::Docker,
            registry_poll_interval: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            trust: Some(mcp_orchestration::manifest::policy::TrustPolicy {
                allowed_images: vec![format!("{host}/")],
                source: "test".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    agent
        .wait_running(&id, "1.0.0", Duration::from_secs(60))
        .await;
    let gateway = agent.gateway.clone().unwrap();
    let client = Arc::new(client(&gateway).await);
    eventually(DEADLINE, "the container's tools", || async {
        (client.list_all_tools().await.ok()?.len() == 3).then_some(())
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let callers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(caller(client.clone(), format!("{id}_sleep"), stop.clone())))
        .collect();

    // A new tag in the registry: the agent upgrades the container under the calls.
    crate::support::images::publish(&host, "1.1.0", "healthy");
    agent
        .wait_running(&id, "1.1.0", Duration::from_secs(60))
        .await;
    eventually(DEADLINE, "a call answered by 1.1.0", || async {
        let r = call(&client, &format!("{id}_server_version"), json!({})).await;
        (text(&r) == "1.1.0").then_some(())
    })
    .await;
    stop.cancel();
    let mut answered = 0;
    for c in callers {
        let (ok, failures, _) = c.await.unwrap();
        assert!(failures.is_empty(), "failed calls: {failures:#?}");
        answered += ok;
    }
    assert!(answered >= 4, "only {answered} calls were answered");
    let (_, r) = agent.get(&format!("/servers/{id}/rollouts?limit=1")).await;
    assert_eq!(r["rollouts"][0]["trigger"], "registry", "{r}");
    assert!(!client.is_closed(), "one client session throughout");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_five_servers_one_goes_unhealthy_within_the_detection_bound_and_the_others_answer_every_call()
 {
    let ids = ["s1", "s2", "s3", "s4", "s5"];
    let (_repo, agent, gateway) = fleet(&ids, Options::default()).await;
    let client = Arc::new(client(&gateway).await);
    eventually(DEADLINE, "all five servers' tools", || async {
        (client.list_all_tools().await.ok()?.len() == 15).then_some(())
    })
    .await;
    // The others are called all along, one caller each.
    let stop = tokio_util::sync::CancellationToken::new();
    let others: Vec<_> = ids[1..]
        .iter()
        .map(|id| {
            let (client, stop, tool) = (client.clone(), stop.clone(), format!("{id}_echo"));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.is_cancelled() {
                    let r = call(&client, &tool, json!({ "text": "ok" })).await;
                    if r.is_error == Some(true) || text(&r) != "ok" {
                        failed.push(format!("{r:?}"));
                    } else {
                        ok += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    // The manifest's health check: probes every 0.2 s, each given 0.15 s, 2 failures in a
    // row make it unhealthy.
    let detection_bound = Duration::from_secs_f64(0.2 * 2.0 + 0.15);
    let (_, s1) = agent.get("/servers/s1").await;
    let endpoint = s1["endpoint"].as_str().unwrap().to_owned();
    let sick = std::time::Instant::now();
    admin(&endpoint, "/admin/health/unhealthy").await;
    let refused = eventually(DEADLINE, "s1's calls to be refused", || async {
        let r = call(&client, "s1_echo", json!({ "text": "x" })).await;
        (r.is_error == Some(true)).then_some(r)
    })
    .await;
    let took = sick.elapsed();
    assert!(
        took <= detection_bound + Duration::from_secs(1),
        "BACKEND_UNHEALTHY after {took:?}, beyond the detection bound {detection_bound:?} + 1 s"
    );
    let detail = refused.structured_content.clone().unwrap();
    assert_eq!(detail["error"], "BACKEND_UNHEALTHY");
    assert_eq!(
        detail["affected_tools"],
        json!(["s1_echo", "s1_server_version", "s1_sleep"])
    );

    // Healthy again: the same client's calls go through.
    admin(&endpoint, "/admin/health/healthy").await;
    eventually(DEADLINE, "s1's calls to go through again", || async {
        let r = call(&client, "s1_echo", json!({ "text": "back" })).await;
        (r.is_error != Some(true) && text(&r) == "back").then_some(())
    })
    .await;
    stop.cancel();
    for (id, caller) in ids[1..].iter().zip(others) {
        let (ok, failed) = caller.await.unwrap();
        assert!(failed.is_empty(), "{id}: {failed:#?}");
        assert!(ok > 0, "{id} was called");
    }
    assert!(!client.is_closed(), "one client session throughout");
}

/// A `tools/call` on an open session is answered by the gateway's shortcut as JSON; what
/// it is not sure of goes to rmcp and is answered as before: another method (a stream),
/// a session nobody opened (404), a `Host` that is not this machine's (refused as DNS
/// rebinding), an `Accept` without both types (406).
#[tokio::test(flavor = "multi_thread")]
async fn a_call_on_an_open_session_is_answered_as_json_and_anything_else_as_before() {
    let (_repo, agent, url) = fleet(&["quick"], Options::default()).await;
    eventually(DEADLINE, "the gateway lists quick's tools", || async {
        let b: Value = reqwest::get(url.replace("/mcp", "/backends"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["backends"][0]["tools"].as_array()?.len() >= 3).then_some(())
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let both = "application/json, text/event-stream";
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "0" } }
    });
    let opened = http
        .post(&url)
        .header("accept", both)
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = opened.bytes().await;
    let post = |body: Value, accept: &'static str, host: Option<String>| {
        let mut request = http
            .post(&url)
            .header("accept", accept)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    let initialized = post(
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(initialized.status(), 202);
    let echo = |id: u64| {
        json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "quick_echo", "arguments": { "text": "shortcut" } } })
    };

    let answered = post(echo(2), both, None).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["content-type"], "application/json");
    let body: Value = answered.json().await.unwrap();
    assert_eq!(body["id"], 2);
    assert_eq!(body["result"]["content"][0]["text"], "shortcut", "{body}");

    // Asking for progress: JSON while the backend reports none; once it reports some, a
    // stream of that progress (under the client's token), then the answer.
    let with_progress = |id: u64, tool: &str, arguments: Value| {
        json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": tool, "arguments": arguments,
                            "_meta": { "progressToken": format!("token-{id}") } } })
    };
    let quiet = post(
        with_progress(10, "quick_echo", json!({ "text": "quiet" })),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(quiet.headers()["content-type"], "application/json");
    let body: Value = quiet.json().await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "quiet", "{body}");
    let reporting = post(
        with_progress(11, "quick_sleep", json!({ "ms": 100 })),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reporting.status(), 200);
    assert_eq!(reporting.headers()["content-type"], "text/event-stream");
    let stream = reporting.text().await.unwrap();
    let messages: Vec<Value> = stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(messages.len(), 5, "{stream}");
    for (n, progress) in messages[..4].iter().enumerate() {
        assert_eq!(progress["method"], "notifications/progress", "{stream}");
        assert_eq!(progress["params"]["progressToken"], "token-11", "{stream}");
        assert_eq!(progress["params"]["progress"], n as f64 + 1.0, "{stream}");
    }
    assert_eq!(messages[4]["id"], 11, "{stream}");
    assert_eq!(
        messages[4]["result"]["content"][0]["text"], "slept 100 ms on 1.0.0",
        "{stream}"
    );

    // A call cancelled by a notification on another request, its own still open: the
    // shortcut made the call (rmcp never saw it), so the shortcut cancels it, at the
    // backend too, and answers its request with the cancellation.
    let backend = eventually(DEADLINE, "quick's endpoint", || async {
        let b: Value = reqwest::get(url.replace("/mcp", "/backends"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(b["backends"][0]["endpoint"].as_str()?.to_owned())
    })
    .await;
    let sleeps = || sleeps(&http, &backend);
    let long = tokio::spawn(post(
        json!({ "jsonrpc": "2.0", "id": 12, "method": "tools/call",
                "params": { "name": "quick_sleep", "arguments": { "ms": 30_000 } } }),
        both,
        None,
    ));
    eventually(DEADLINE, "the long call running at the backend", || async {
        (sleeps().await.0 == 1).then_some(())
    })
    .await;
    let told = post(
        json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": { "requestId": 12, "reason": "changed my mind" } }),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(told.status(), 202);
    let answer: Value = tokio::time::timeout(DEADLINE, long)
        .await
        .expect("the cancelled call's request is answered")
        .unwrap()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["id"], 12, "{answer}");
    assert_eq!(answer["error"]["code"], -32800, "{answer}");
    eventually(DEADLINE, "the backend's call cancelled", || async {
        (sleeps().await == (0, 1)).then_some(())
    })
    .await;

    // A client that goes away in the middle of a call's stream: the call is cancelled
    // at the backend too.
    let mut streaming = post(
        with_progress(13, "quick_sleep", json!({ "ms": 2_000 })),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(streaming.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(DEADLINE, streaming.chunk())
        .await
        .expect("the first progress")
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("notifications/progress"),
        "{first:?}"
    );
    drop(streaming);
    eventually(DEADLINE, "the call cancelled at the backend", || async {
        (sleeps().await == (0, 2)).then_some(())
    })
    .await;

    // A tool nobody offers: the gateway's own error, as JSON-RPC.
    let unknown = post(
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": { "name": "quick_nothing", "arguments": {} } }),
        both,
        None,
    )
    .await
    .unwrap();
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["code"], -32602, "{body}");

    // Another method: rmcp's stream, as before.
    let listed = post(
        json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/list" }),
        both,
        None,
    )
    .await
    .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(
        listed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(listed.text().await.unwrap().contains("quick_echo"));

    // Refused by rmcp in its words: a foreign Host, a missing Accept type.
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp");
    let rebinding = post(echo(5), both, Some(format!("evil.example:{port}")))
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 403);
    let json_only = post(echo(6), "application/json", None).await.unwrap();
    assert_eq!(json_only.status(), 406);

    // A session nobody opened.
    let stranger = http
        .post(&url)
        .header("accept", both)
        .header("mcp-session-id", "0123.4567")
        .json(&echo(7))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);
    drop(agent);
}
