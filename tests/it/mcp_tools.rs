//! The agent's MCP tools against a live agent running real example servers: through an
//! rmcp client at `/mcp` (streamable HTTP), and through `mcp-orchestration mcp` on stdio.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ErrorCode, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, eventually};

/// Generous, because a loaded machine can be slow to start processes; conditions are
/// polled, so a fast machine does not wait this long.
const DEADLINE: Duration = Duration::from_secs(20);

const TOOLS: [&str; 29] = [
    "add_server_to_config",
    "clear_draft_config",
    "deploy_config",
    "delete_webhook",
    "deploy_server",
    "describe_server",
    "diff_config",
    "get_config",
    "health_check",
    "health_events",
    "initialize_keys",
    "list_available_servers",
    "list_clients",
    "list_dead_letters",
    "list_profiles",
    "list_servers",
    "list_webhooks",
    "plan",
    "publish_config",
    "remove_server_from_config",
    "restart_server",
    "resume_server",
    "rollback_server",
    "rollout_history",
    "server_status",
    "stop_server",
    "subscribe_webhook",
    "validate_config",
    "view_draft_config",
];

type Client = RunningService<RoleClient, ClientConfig>;

async fn connect(agent: &TestAgent, config: ClientConfig) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", agent.url))
            .auth_header(TEST_API_KEY),
    );
    config
        .serve(transport)
        .await
        .expect("an MCP session with the agent")
}

async fn try_call(
    client: &Client,
    name: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let mut params = CallToolRequestParams::new(name.to_owned());
    if let Value::Object(args) = args {
        params = params.with_arguments(args);
    }
    client.call_tool(params).await
}

/// Calls a tool that must succeed and returns its JSON, checking that the text and the
/// structured content agree.
async fn call(client: &Client, name: &str, args: Value) -> Value {
    let result = try_call(client, name, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}({args}) failed: {e}"));
    assert_ne!(result.is_error, Some(true), "{name}({args}): {result:?}");
    json_of(&result)
}

fn json_of(result: &CallToolResult) -> Value {
    let text = &result.content[0].as_text().expect("text content").text;
    let from_text: Value = serde_json::from_str(text).expect("the text is JSON");
    assert_eq!(result.structured_content.as_ref(), Some(&from_text));
    from_text
}

fn text_of(result: &CallToolResult) -> String {
    result.content[0]
        .as_text()
        .expect("text content")
        .text
        .clone()
}

async fn two_servers() -> (ManifestRepo, TestAgent) {
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &process_manifest(&[("mcp-a", "1.0.0"), ("mcp-b", "1.0.0")]),
        "two servers",
    );
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_running("mcp-a", "1.0.0", DEADLINE).await;
    agent.wait_running("mcp-b", "1.0.0", DEADLINE).await;
    (repo, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tool_is_listed_with_a_schema_and_acts_on_the_live_fleet() {
    let (repo, agent) = two_servers().await;
    let client = connect(&agent, ClientConfig::default()).await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, BTreeSet::from(TOOLS));
    for t in &tools {
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{t:?}");
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a helpful description",
            t.name
        );
    }
    let status = tools.iter().find(|t| t.name == "server_status").unwrap();
    assert_eq!(status.input_schema["required"], json!(["server_id"]));

    let fleet = call(&client, "list_servers", json!({})).await;
    let states: Vec<(&str, &str)> = fleet["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("mcp-a", "running"), ("mcp-b", "running")]);

    // A plan of the commit in force changes nothing; a plan of one without mcp-b removes it.
    let plan = call(&client, "plan", json!({ "commit": "main" })).await;
    assert_eq!(plan["summary"], "no changes", "{plan}");
    let files = json!({ "manifest": { "path": "ecosystem-manifest.yaml", "text": process_manifest(&[("mcp-a", "1.0.0")]) } });
    let plan = call(&client, "plan", json!({ "files": files })).await;
    assert_eq!(plan["summary"], "remove mcp-b", "{plan}");

    let a = call(&client, "server_status", json!({ "server_id": "mcp-a" })).await;
    assert_eq!(a["running_version"], "1.0.0");
    assert_eq!(a["desired_version"], "1.0.0");

    let health = eventually(DEADLINE, "health_check to say healthy", || async {
        let h = call(&client, "health_check", json!({ "server_id": "mcp-a" })).await;
        (h["state"] == "healthy").then_some(h)
    })
    .await;
    assert_eq!(health["monitored"], true);
    let all = call(&client, "health_check", json!({})).await;
    assert_eq!(all["servers"].as_array().unwrap().len(), 2, "{all}");

    let events = call(&client, "health_events", json!({ "server_id": "mcp-a" })).await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "transition" && e["to_state"] == "healthy"),
        "{events}"
    );
    let one = call(&client, "health_events", json!({ "limit": 1 })).await;
    assert_eq!(one["events"].as_array().unwrap().len(), 1, "{one}");

    // stop_server holds the server stopped, as GET /servers shows.
    let stopped = call(&client, "stop_server", json!({ "server_id": "mcp-a" })).await;
    assert_eq!(stopped["stopped_instances"], 1, "{stopped}");
    assert_eq!(stopped["held"], true);
    eventually(DEADLINE, "mcp-a stopped in GET /servers", || async {
        let (_, v) = agent.get("/servers").await;
        let a = v["servers"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == "mcp-a")?;
        (a["state"] == "stopped").then_some(())
    })
    .await;
    // deploy_server brings it back.
    let deploy = call(&client, "deploy_server", json!({ "server_id": "mcp-a" })).await;
    assert_eq!(deploy["deploy"], "requested");
    agent.wait_running("mcp-a", "1.0.0", DEADLINE).await;

    // restart_server replaces the instance.
    let before = agent.server("mcp-b").await.unwrap()["instance_id"].clone();
    let restart = call(&client, "restart_server", json!({ "server_id": "mcp-b" })).await;
    assert_eq!(restart["restart"], "requested");
    eventually(DEADLINE, "mcp-b on a new instance", || async {
        let b = agent.server("mcp-b").await?;
        (b["state"] == "running" && b["instance_id"] != before).then_some(())
    })
    .await;

    // A second version, then rollback_server back to the first (from the history).
    repo.push_manifest(
        &process_manifest(&[("mcp-a", "1.1.0"), ("mcp-b", "1.0.0")]),
        "mcp-a 1.1.0",
    );
    agent.wait_running("mcp-a", "1.1.0", DEADLINE).await;
    // The rollout finishes once the old instance is gone, a moment after the switch.
    let newest = eventually(DEADLINE, "the 1.1.0 rollout to finish", || async {
        let history = call(
            &client,
            "rollout_history",
            json!({ "server_id": "mcp-a", "limit": 1 }),
        )
        .await;
        let newest = history["rollouts"].as_array()?.first()?.clone();
        (newest["outcome"] != "in_progress").then_some(newest)
    })
    .await;
    assert_eq!(newest["to_version"], "1.1.0", "{newest}");
    assert_eq!(newest["outcome"], "succeeded", "{newest}");
    let rollback = call(&client, "rollback_server", json!({ "server_id": "mcp-a" })).await;
    assert_eq!(rollback["rollback_to"], "1.0.0", "{rollback}");
    agent.wait_running("mcp-a", "1.0.0", DEADLINE).await;
    // The view shows the hold once the sync that carried out the rollback has finished.
    eventually(DEADLINE, "mcp-a held at 1.0.0", || async {
        let a = agent.server("mcp-a").await?;
        (a["pinned_version"] == "1.0.0").then_some(())
    })
    .await;

    // An unknown server is the tool's error, with the API's code.
    for tool in [
        "server_status",
        "stop_server",
        "deploy_server",
        "restart_server",
        "rollout_history",
        "rollback_server",
        "resume_server",
    ] {
        let r = try_call(&client, tool, json!({ "server_id": "nope" }))
            .await
            .unwrap_or_else(|e| panic!("{tool} answers with a result: {e}"));
        assert_eq!(r.is_error, Some(true), "{tool}: {r:?}");
        assert_eq!(
            text_of(&r),
            "SERVER_NOT_FOUND: no server `nope` in the applied manifest",
            "{tool}"
        );
        assert_eq!(
            r.structured_content.as_ref().unwrap()["error"]["code"],
            "SERVER_NOT_FOUND"
        );
    }
    let r = try_call(&client, "health_check", json!({ "server_id": "nope" }))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));

    // Bad arguments are tool errors too, which the model reads and can correct (SEP-1303).
    for (tool, args, says) in [
        ("server_status", json!({}), "missing field `server_id`"),
        ("server_status", json!({ "server_id": 7 }), "invalid type"),
        (
            "stop_server",
            json!({ "server_id": "mcp-a", "force": true }),
            "unknown field `force`",
        ),
        (
            "rollback_server",
            json!({ "server_id": "mcp-a", "to": "not-a-version" }),
            "VALIDATION_FAILED: `not-a-version` is not a version",
        ),
    ] {
        let r = try_call(&client, tool, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{tool}({args}) answers with a result: {e}"));
        assert_eq!(r.is_error, Some(true), "{tool}({args}): {r:?}");
        assert!(text_of(&r).contains(says), "{tool}({args}): {r:?}");
    }
    // Nothing was stopped or rolled back by the refused calls.
    let a = agent.server("mcp-a").await.unwrap();
    assert_eq!(
        (&a["state"], &a["pinned_version"]),
        (&json!("running"), &json!("1.0.0"))
    );
    // resume_server lifts the hold: the server follows its manifest (1.1.0) again.
    let resumed = call(&client, "resume_server", json!({ "server_id": "mcp-a" })).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    agent.wait_running("mcp-a", "1.1.0", DEADLINE).await;
    eventually(DEADLINE, "mcp-a no longer held", || async {
        let a = agent.server("mcp-a").await?;
        a["pinned_version"].is_null().then_some(())
    })
    .await;

    // A tool that does not exist is the one protocol error.
    match try_call(&client, "delete_everything", json!({})).await {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code, ErrorCode::INVALID_PARAMS),
        other => panic!("an unknown tool should be invalid params, got {other:?}"),
    }
    client.cancel().await.expect("the session closes");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_without_a_valid_key_is_refused_with_the_error_envelope() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "no servers");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let http = reqwest::Client::new();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "0" } }
    });
    let url = format!("{}/mcp", agent.url);
    let requests = [
        ("POST without a key", http.post(&url).json(&initialize)),
        // Reads of the REST API are open on loopback; /mcp is not.
        ("GET without a key", http.get(&url)),
        (
            "POST with a wrong key",
            http.post(&url).bearer_auth("wrong").json(&initialize),
        ),
    ];
    for (what, request) in requests {
        let r = request
            .header("accept", "application/json, text/event-stream")
            .send()
            .await
            .expect("the agent answers");
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let body: Value = r.json().await.expect("a JSON envelope");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
        assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
    }
    // An rmcp client with a wrong key gets no session either.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header("wrong"),
    );
    assert!(ClientConfig::default().serve(transport).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_mcp_session_does_not_hold_the_agent_s_shutdown() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "no servers");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    // The session protocol keeps a server-to-client stream open for as long as it lasts.
    let client = connect(
        &agent,
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE),
    )
    .await;
    let fleet = call(&client, "list_servers", json!({})).await;
    assert_eq!(fleet["servers"], json!([]));
    let started = Instant::now();
    agent.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the agent took {:?} to stop with an MCP session open",
        started.elapsed()
    );
    drop(client);
}

/// `mcp-orchestration mcp` with the agent's URL and key, as a desktop client starts it.
fn stdio_bridge(agent_url: &str, data_dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["mcp", "--agent-url", agent_url])
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .env_remove("MCP_ORCHESTRATION_API_KEY")
        .env("MCP_ORCHESTRATION_DATA_DIR", data_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stdio_bridge_serves_the_agent_s_tools() {
    let (_repo, agent) = two_servers().await;
    let empty = tempfile::tempdir().unwrap();
    let mut child = stdio_bridge(&agent.url, empty.path())
        .env("MCP_ORCHESTRATION_API_KEY", TEST_API_KEY)
        .spawn()
        .expect("the bridge starts");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Keep draining stderr (its logs) so the bridge never blocks on a full pipe.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    let client: Client =
        tokio::time::timeout(DEADLINE, ClientConfig::default().serve((stdout, stdin)))
            .await
            .expect("the bridge answers within the deadline")
            .expect("an MCP session over stdio");
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, BTreeSet::from(TOOLS));

    let fleet = call(&client, "list_servers", json!({})).await;
    assert_eq!(fleet["servers"].as_array().unwrap().len(), 2, "{fleet}");
    let b = call(&client, "server_status", json!({ "server_id": "mcp-b" })).await;
    assert_eq!(b["state"], "running");
    assert_eq!(b["running_version"], "1.0.0");
    let missing = try_call(&client, "server_status", json!({ "server_id": "nope" }))
        .await
        .unwrap();
    assert_eq!(missing.is_error, Some(true));
    assert!(text_of(&missing).starts_with("SERVER_NOT_FOUND: "));
    let bad = try_call(&client, "server_status", json!({})).await.unwrap();
    assert_eq!(bad.is_error, Some(true));
    assert!(
        text_of(&bad).contains("missing field `server_id`"),
        "{bad:?}"
    );
    // The agent's protocol errors come through as they are.
    match try_call(&client, "delete_everything", json!({})).await {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code, ErrorCode::INVALID_PARAMS),
        other => panic!("an unknown tool should be invalid params, got {other:?}"),
    }

    // Closing stdin ends the bridge, cleanly.
    client.cancel().await.expect("the session closes");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the bridge exits when stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_stdio_bridge_says_so_when_the_agent_is_not_there() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let empty = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        DEADLINE,
        stdio_bridge(&url, empty.path())
            .env("MCP_ORCHESTRATION_API_KEY", TEST_API_KEY)
            .output(),
    )
    .await
    .expect("the bridge gives up within the deadline")
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is the protocol's alone");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach the agent at {url} (is it running? set --agent-url)"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stdio_bridge_without_a_key_explains_what_to_give() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[]), "no servers");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    let empty = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(DEADLINE, stdio_bridge(&agent.url, empty.path()).output())
        .await
        .expect("the bridge gives up within the deadline")
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is the protocol's alone");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the MCP connection (no API key: none was given and"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}/api-key", empty.path().display())),
        "the bridge says where it looked for the key: {stderr}"
    );
    assert!(stderr.contains("MCP_ORCHESTRATION_API_KEY"), "{stderr}");
}
