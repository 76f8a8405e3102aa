//! Client configurations end to end against a live agent: the seed's `/v1/` routes and
//! its MCP tools over one implementation, every error path, drafts that survive a restart,
//! artifacts that verify with the served keys (also after a rotation), and a deploy into a
//! client's file on the agent's host that changes nothing else in it.

use std::time::Duration;

use mcp_orchestration::clients::artifact::{Artifact, verify_for};
use mcp_orchestration::clients::keys::PublicKeyInfo;
use reqwest::Method;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::git::ManifestRepo;

const DEADLINE: Duration = Duration::from_secs(20);

/// Two example servers and a profile of one of them (schema 1.2).
fn manifest() -> String {
    process_manifest(&[("cfg-a", "1.0.0"), ("cfg-b", "1.0.0")]).replace(
        "version: \"1.1\"",
        "version: \"1.2\"\nprofiles:\n  - id: dev\n    description: Only a\n    servers: [cfg-a]",
    )
}

fn options() -> Options {
    Options {
        gateway: true,
        ..Options::default()
    }
}

/// The base URL of the agent's gateway (`http://127.0.0.1:P`).
fn gateway_base(agent: &TestAgent) -> String {
    agent
        .gateway
        .as_deref()
        .expect("the gateway is on")
        .trim_end_matches("/mcp")
        .to_owned()
}

async fn started(repo: &ManifestRepo, data: Option<tempfile::TempDir>) -> TestAgent {
    let agent = match data {
        Some(data) => TestAgent::start_in(&repo.remote_url(), options(), data).await,
        None => TestAgent::start(&repo.remote_url(), options()).await,
    };
    agent.wait_running("cfg-a", "1.0.0", DEADLINE).await;
    agent.wait_running("cfg-b", "1.0.0", DEADLINE).await;
    agent
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn trusted(keys: &Value) -> impl Fn(&str) -> Option<ed25519_dalek::VerifyingKey> {
    let keys: Vec<PublicKeyInfo> = serde_json::from_value(keys["keys"].clone()).unwrap();
    move |id: &str| {
        keys.iter()
            .find(|k| k.key_id == id)
            .and_then(|k| k.verifying_key().ok())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_v1_routes_draft_validate_publish_and_deploy_a_signed_configuration() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "two servers and a profile");
    let agent = started(&repo, None).await;
    let gw = gateway_base(&agent);

    // The registry of clients, and where their files are on this host.
    let (status, clients) = agent.get("/v1/clients").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
        "claude-desktop",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
        "zed",
        "gemini-cli",
        "codex",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let home = agent.data.path().join("clients-home");
    let cursor = &clients["clients"][ids.iter().position(|i| *i == "cursor").unwrap()];
    assert_eq!(
        cursor["user_file"],
        home.join(".cursor/mcp.json").display().to_string()
    );

    // Profiles: default and the manifest's, with their gateway URLs.
    let (status, profiles) = agent.get("/v1/clients/cursor/profiles").await;
    assert_eq!(status, 200, "{profiles}");
    assert_eq!(profiles["profiles"][0]["id"], "default");
    assert_eq!(profiles["profiles"][0]["url"], format!("{gw}/mcp"));
    assert_eq!(profiles["profiles"][1]["id"], "dev");
    assert_eq!(profiles["profiles"][1]["servers"], json!(["cfg-a"]));
    assert_eq!(
        profiles["profiles"][1]["url"],
        format!("{gw}/profiles/dev/mcp")
    );

    // Unknown client and profile: their own 404s.
    let (status, body) = agent.get("/v1/clients/nope/profiles").await;
    assert_eq!((status, code(&body)), (404, "CLIENT_NOT_FOUND"), "{body}");
    let (status, body) = agent.get("/v1/config/cursor/nope").await;
    assert_eq!((status, code(&body)), (404, "PROFILE_NOT_FOUND"), "{body}");

    // Before anything is published, the configuration is the entry for the profile.
    let (status, config) = agent.get("/v1/config/cursor/dev").await;
    assert_eq!(status, 200);
    assert_eq!(config["artifact"], Value::Null);
    assert_eq!(
        config["payload"],
        json!({ "mcp-orchestration-dev": { "url": format!("{gw}/profiles/dev/mcp") } })
    );
    // Claude Desktop's file takes no URL: the stdio bridge, pointed at the profile.
    let (_, desktop) = agent.get("/v1/config/claude-desktop/dev").await;
    assert_eq!(
        desktop["payload"]["mcp-orchestration-dev"],
        json!({ "command": "mcp-orchestration",
                "args": ["gateway", "--url", format!("{gw}/profiles/dev/mcp"), "--profile", "dev"] })
    );

    // Publishing needs a signing key.
    let (status, body) = agent
        .call(Method::POST, "/v1/config/cursor/dev/publish", None)
        .await;
    assert_eq!((status, code(&body)), (409, "CONFLICT"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys init")
    );
    let (status, keys) = agent.call(Method::POST, "/v1/keys/initialize", None).await;
    assert_eq!(
        (status, keys["created"].clone()),
        (200, json!(true)),
        "{keys}"
    );
    let (_, again) = agent.call(Method::POST, "/v1/keys/initialize", None).await;
    assert_eq!(again["created"], false, "initialize is idempotent");
    assert_eq!(again["keys"], keys["keys"]);
    let private = std::fs::read_dir(agent.data.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("a private key file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A draft: add a fleet server, refuse what is malformed.
    let (status, draft) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/add",
            Some(json!({ "server": "cfg-b" })),
        )
        .await;
    assert_eq!(status, 200, "{draft}");
    assert_eq!(draft["exists"], true);
    assert_eq!(
        draft["payload"]["cfg-b"],
        json!({ "url": format!("{gw}/servers/cfg-b/mcp") })
    );
    for (body, want) in [
        (json!({ "server": "nope" }), (404, "SERVER_NOT_FOUND")),
        (
            json!({ "server": "cfg-a", "profile": "dev" }),
            (400, "VALIDATION_FAILED"),
        ),
        (
            json!({ "entry": { "url": "x" } }),
            (400, "VALIDATION_FAILED"),
        ),
        (json!({ "bogus": 1 }), (400, "VALIDATION_FAILED")),
    ] {
        let (status, answer) = agent
            .call(
                Method::POST,
                "/v1/config/cursor/dev/draft/add",
                Some(body.clone()),
            )
            .await;
        assert_eq!((status, code(&answer)), want, "{body}: {answer}");
    }
    let (status, answer) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/remove",
            Some(json!({ "name": "not-there" })),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "ENTRY_NOT_FOUND"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cfg-b")
    );

    // A custom entry with a key in clear is not even kept in the draft...
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/add",
            Some(json!({ "name": "custom", "entry": {
                "command": "/opt/tool", "env": { "API_KEY": "sk-live-123" } } })),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "SECRET_IN_CLEAR"), "{body}");
    assert!(!body.to_string().contains("sk-live-123"), "{body}");
    let (_, draft) = agent.get("/v1/config/cursor/dev/draft").await;
    assert!(draft["payload"].get("custom").is_none(), "{draft}");
    // ...and one that does not validate cannot be published.
    let (status, _) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/add",
            Some(json!({ "name": "custom", "entry": {
                "command": "/opt/tool", "args": ["--port", "{port}"],
                "env": { "LEVEL": 3 } } })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, report) = agent
        .call(Method::POST, "/v1/config/cursor/dev/validate", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["valid"], false);
    let problems: Vec<(String, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("INVALID_TYPE", "custom.env"),
        ("UNRESOLVED_PLACEHOLDER", "custom.args[1]"),
    ];
    assert_eq!(
        problems,
        expected.map(|(c, p)| (c.to_owned(), p.to_owned()))
    );
    let (status, body) = agent
        .call(Method::POST, "/v1/config/cursor/dev/publish", None)
        .await;
    assert_eq!((status, code(&body)), (409, "CONFIG_INVALID"), "{body}");
    assert_eq!(
        body["error"]["details"]["errors"].as_array().unwrap().len(),
        2
    );

    // The draft survives a restart of the agent. (Its entries keep the gateway address
    // they were made with; a test agent's gateway port changes with each start.)
    let data = agent.stop().await;
    let agent = started(&repo, Some(data)).await;
    let (_, draft) = agent.get("/v1/config/cursor/dev/draft").await;
    assert_eq!(draft["exists"], true, "{draft}");
    assert!(draft["payload"]["custom"].is_object(), "{draft}");
    let (status, _) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/remove",
            Some(json!({ "name": "custom" })),
        )
        .await;
    assert_eq!(status, 200);

    // Published: signed, content-addressed, verifiable with the served public keys.
    let (status, published) = agent
        .call(Method::POST, "/v1/config/cursor/dev/publish", None)
        .await;
    assert_eq!(status, 201, "{published}");
    let first_id = published["id"].as_str().unwrap().to_owned();
    let (_, draft) = agent.get("/v1/config/cursor/dev/draft").await;
    assert_eq!(draft["exists"], false, "publishing consumes the draft");
    let (_, keys) = agent.get("/v1/keys").await;
    let (status, served) = agent.get("/v1/config/cursor/dev/artifact").await;
    assert_eq!(status, 200);
    let artifact: Artifact = serde_json::from_value(served.clone()).unwrap();
    assert_eq!(artifact.id(), first_id);
    verify_for(&artifact, "cursor", "dev", trusted(&keys)).expect("verifies");
    assert!(verify_for(&artifact, "cursor", "default", trusted(&keys)).is_err());
    let (_, by_id) = agent.get(&format!("/v1/artifacts/{first_id}")).await;
    assert_eq!(by_id, served);
    let (_, config) = agent.get("/v1/config/cursor/dev").await;
    assert_eq!(config["artifact"]["id"], first_id.as_str());

    // Deploy into the client's file on the agent's host: an existing file keeps its other
    // server, its other key and its layout.
    let file = agent.data.path().join("clients-home/.cursor/mcp.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let theirs = "{\n  \"theme\": \"dark\",\n  \"mcpServers\": {\n    \"theirs\": { \"command\": \"/usr/bin/theirs\" }\n  }\n}\n";
    std::fs::write(&file, theirs).unwrap();
    let (status, deployed) = agent
        .call(Method::POST, "/v1/config/cursor/dev/deploy", None)
        .await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["changed"], true);
    assert_eq!(deployed["artifact"], first_id.as_str());
    assert_eq!(
        std::fs::read_to_string(deployed["backup"].as_str().unwrap()).unwrap(),
        theirs
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["theme"], "dark");
    assert_eq!(
        written["mcpServers"]["theirs"]["command"],
        "/usr/bin/theirs"
    );
    assert_eq!(
        written["mcpServers"]["mcp-orchestration-dev"]["url"],
        format!("{gw}/profiles/dev/mcp")
    );
    assert_eq!(
        written["mcpServers"]["cfg-b"]["url"],
        format!("{gw}/servers/cfg-b/mcp")
    );
    let (_, again) = agent
        .call(Method::POST, "/v1/config/cursor/dev/deploy", None)
        .await;
    assert_eq!(again["changed"], false, "{again}");

    // Diff against the file: up to date; then a newer publication makes it outdated, and
    // a hand edit makes it diverged.
    let diff = |agent: &TestAgent| {
        let agent_url = agent.url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{agent_url}/v1/config/diff"))
                .bearer_auth(TEST_API_KEY)
                .json(&json!({ "client_id": "cursor", "profile": "dev" }))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(diff(&agent).await["status"], "up_to_date");
    agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/remove",
            Some(json!({ "name": "cfg-b" })),
        )
        .await;
    let (status, second) = agent
        .call(Method::POST, "/v1/config/cursor/dev/publish", None)
        .await;
    assert_eq!(status, 201);
    let second_artifact: Artifact = serde_json::from_value(second["artifact"].clone()).unwrap();
    assert_eq!(
        second_artifact.envelope().parent.as_deref(),
        Some(first_id.as_str())
    );
    let report = diff(&agent).await;
    assert_eq!(report["status"], "outdated", "{report}");
    assert_eq!(report["matches"], first_id.as_str());
    assert_eq!(
        report["changes"],
        json!([{ "path": "cfg-b", "change": "removed",
                 "deployed": { "url": format!("{gw}/servers/cfg-b/mcp") }, "published": null }])
    );
    // Deploying the new one removes the entry the earlier one wrote.
    let (_, deployed) = agent
        .call(Method::POST, "/v1/config/cursor/dev/deploy", None)
        .await;
    assert_eq!(deployed["removed"], json!(["cfg-b"]), "{deployed}");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("/profiles/dev/mcp", "/profiles/dev/mcp?edited");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(diff(&agent).await["status"], "diverged");
    // A user's own entry under one of our names keeps its token out of the answer.
    let mut theirs: Value = serde_json::from_str(&text).unwrap();
    theirs["mcpServers"]["cfg-b"] = json!({ "url": "https://elsewhere/mcp", "headers": { "Authorization": "Bearer ghp_secret" } });
    std::fs::write(&file, theirs.to_string()).unwrap();
    let report = diff(&agent).await;
    assert!(!report.to_string().contains("ghp_secret"), "{report}");
    assert!(report.to_string().contains("[redacted]"), "{report}");
    std::fs::write(&file, &text).unwrap();
    let report = reqwest::Client::new()
        .post(format!("{}/v1/config/diff", agent.url))
        .bearer_auth(TEST_API_KEY)
        .json(&json!({ "client_id": "cursor", "profile": "dev", "payload": {} }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(report["status"], "not_deployed");

    // A project directory that is not there is refused; nothing is made up.
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/deploy",
            Some(json!({ "project_dir": "/no/such/project" })),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, "PROJECT_DIR_NOT_FOUND"),
        "{body}"
    );
    assert!(!std::path::Path::new("/no/such/project").exists());
    // The agent writes only below the home whose client files it manages: a directory
    // elsewhere is refused, and so is a file whose symlink leads out of the home.
    let elsewhere = tempfile::tempdir().unwrap();
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/deploy",
            Some(json!({ "project_dir": elsewhere.path() })),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, "PROJECT_DIR_OUTSIDE_HOME"),
        "{body}"
    );
    assert!(!elsewhere.path().join(".cursor").exists());
    let project = home.join("work/project");
    std::fs::create_dir_all(project.join(".cursor")).unwrap();
    let outside = elsewhere.path().join("victim.json");
    std::fs::write(&outside, "{}").unwrap();
    std::os::unix::fs::symlink(&outside, project.join(".cursor/mcp.json")).unwrap();
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/deploy",
            Some(json!({ "project_dir": project })),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, "CLIENT_FILE_OUTSIDE_HOME"),
        "{body}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "{}");
    // A project directory in the home: the client's project file there.
    std::fs::remove_file(project.join(".cursor/mcp.json")).unwrap();
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/deploy",
            Some(json!({ "project_dir": project })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["path"],
        project.join(".cursor/mcp.json").display().to_string()
    );

    // A file that is not valid JSON is refused and left as it was.
    std::fs::write(&file, "{ \"mcpServers\": { oops").unwrap();
    let (status, body) = agent
        .call(Method::POST, "/v1/config/cursor/dev/deploy", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, "CLIENT_FILE_INVALID"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mcp.json:1:"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{ \"mcpServers\": { oops"
    );
    // An entry of ours that someone else already has is not taken over.
    std::fs::write(
        &file,
        "{\"mcpServers\": {\"mcp-orchestration\": {\"url\": \"http://elsewhere/mcp\"}}}",
    )
    .unwrap();
    agent
        .call(Method::POST, "/v1/config/cursor/default/publish", None)
        .await;
    let (status, body) = agent
        .call(Method::POST, "/v1/config/cursor/default/deploy", None)
        .await;
    assert_eq!((status, code(&body)), (409, "UNMANAGED_ENTRY"), "{body}");
    let (status, _) = agent
        .call(
            Method::POST,
            "/v1/config/cursor/default/deploy",
            Some(json!({ "force": true })),
        )
        .await;
    assert_eq!(status, 200);

    // Rotation: new artifacts are signed by the new key, the old ones still verify.
    let (_, rotated) = agent.call(Method::POST, "/v1/keys/rotate", None).await;
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 2, "{rotated}");
    agent
        .call(
            Method::POST,
            "/v1/config/cursor/dev/draft/add",
            Some(json!({ "server": "cfg-a" })),
        )
        .await;
    let (_, third) = agent
        .call(Method::POST, "/v1/config/cursor/dev/publish", None)
        .await;
    let third: Artifact = serde_json::from_value(third["artifact"].clone()).unwrap();
    assert_ne!(third.envelope().key_id, artifact.envelope().key_id);
    verify_for(&third, "cursor", "dev", trusted(&rotated)).expect("new key");
    verify_for(&artifact, "cursor", "dev", trusted(&rotated)).expect("old key");
    // ...and a key of another agent is not one of them.
    assert!(verify_for(&artifact, "cursor", "dev", trusted(&json!({ "keys": [] }))).is_err());
}

type Client = RunningService<RoleClient, ()>;

async fn mcp_client(agent: &TestAgent) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", agent.url));
    config.auth_header = Some(TEST_API_KEY.to_owned());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("an MCP session with the agent")
}

async fn tool(client: &Client, name: &'static str, args: Value) -> (bool, Value) {
    let mut params = CallToolRequestParams::new(name);
    params.arguments = args.as_object().cloned();
    let result = client
        .peer()
        .call_tool(params)
        .await
        .expect("a tool result");
    (
        result.is_error == Some(true),
        result.structured_content.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_tools_edit_the_same_drafts_as_the_routes() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "two servers and a profile");
    let agent = started(&repo, None).await;
    let client = mcp_client(&agent).await;

    let (error, clients) = tool(&client, "list_clients", json!({})).await;
    assert!(!error);
    assert_eq!(clients["clients"].as_array().unwrap().len(), 8);
    let (error, profiles) = tool(&client, "list_profiles", json!({ "client_id": "codex" })).await;
    assert!(!error, "{profiles}");
    assert_eq!(profiles["profiles"][1]["id"], "dev");
    let (error, servers) = tool(&client, "list_available_servers", json!({})).await;
    assert!(!error);
    let a = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "cfg-a")
        .unwrap();
    assert_eq!(a["profiles"], json!(["default", "dev"]));
    let (error, b) = tool(&client, "describe_server", json!({ "server_id": "cfg-b" })).await;
    assert!(!error);
    assert_eq!(b["profiles"], json!(["default"]));

    // A draft made through a tool is the draft the routes show.
    let (error, draft) = tool(
        &client,
        "add_server_to_config",
        json!({ "client_id": "codex", "profile": "default", "server_id": "cfg-a" }),
    )
    .await;
    assert!(!error, "{draft}");
    let (_, via_route) = agent.get("/v1/config/codex/default/draft").await;
    assert_eq!(via_route["payload"], draft["payload"]);
    assert!(via_route["payload"]["cfg-a"]["url"].is_string());
    let (error, viewed) = tool(
        &client,
        "view_draft_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error);
    assert_eq!(viewed["payload"], draft["payload"]);
    let (error, report) = tool(
        &client,
        "validate_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error);
    assert_eq!(report["valid"], true, "{report}");

    // Errors are tool results with the API's codes.
    let (error, body) = tool(
        &client,
        "publish_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(error);
    assert_eq!(body["error"]["code"], "CONFLICT", "{body}");
    let (error, body) = tool(
        &client,
        "get_config",
        json!({ "client_id": "nope", "profile": "default" }),
    )
    .await;
    assert!(error);
    assert_eq!(body["error"]["code"], "CLIENT_NOT_FOUND");
    let (error, body) = tool(
        &client,
        "deploy_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(error);
    assert_eq!(
        body["error"]["code"], "CONFLICT",
        "nothing published: {body}"
    );

    let (error, keys) = tool(&client, "initialize_keys", json!({})).await;
    assert!(!error);
    assert_eq!(keys["created"], true);
    let (error, published) = tool(
        &client,
        "publish_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error, "{published}");
    let (error, deployed) = tool(
        &client,
        "deploy_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error, "{deployed}");
    let toml =
        std::fs::read_to_string(agent.data.path().join("clients-home/.codex/config.toml")).unwrap();
    assert!(toml.contains("[mcp_servers.cfg-a]"), "{toml}");
    assert!(toml.contains("[mcp_servers.mcp-orchestration]"), "{toml}");
    let (error, diff) = tool(
        &client,
        "diff_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error, "{diff}");
    assert_eq!(diff["status"], "up_to_date");
    let (error, cleared) = tool(
        &client,
        "clear_draft_config",
        json!({ "client_id": "codex", "profile": "default" }),
    )
    .await;
    assert!(!error);
    assert_eq!(cleared["cleared"], false, "publishing consumed it");
    let (error, removed) = tool(
        &client,
        "remove_server_from_config",
        json!({ "client_id": "codex", "profile": "default", "name": "cfg-a" }),
    )
    .await;
    assert!(!error, "{removed}");
    assert!(removed["payload"].get("cfg-a").is_none());
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_gateway_url_is_what_client_configurations_point_at() {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(), "two servers and a profile");
    let agent = TestAgent::start(
        &repo.remote_url(),
        Options {
            gateway: true,
            gateway_public_url: Some("https://mcp.example.test/gw".to_owned()),
            ..Options::default()
        },
    )
    .await;
    // The profile is in the fleet view once the first commit is applied and its servers
    // published.
    agent.wait_running("cfg-a", "1.0.0", DEADLINE).await;
    let (status, config) = agent.get("/v1/config/cursor/dev").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(
        config["payload"],
        json!({ "mcp-orchestration-dev": { "url": "https://mcp.example.test/gw/profiles/dev/mcp" } })
    );
    let (_, profiles) = agent.get("/v1/clients/vscode/profiles").await;
    assert_eq!(
        profiles["profiles"][0]["url"],
        "https://mcp.example.test/gw/mcp"
    );
}
