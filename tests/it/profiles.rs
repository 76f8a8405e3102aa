//! Profiles (manifest 1.2) through the gateway, with a real agent, real example servers and
//! real MCP clients (rmcp, and the official Python SDK): `/profiles/{id}/mcp` shows only
//! the profile's servers and, where it lists them, only those tools; `default` and `/mcp`
//! show the whole fleet; `GET /profiles` says what each shows and what it lists that no
//! server offers; an unknown or removed profile answers 404 `PROFILE_NOT_FOUND`.

use std::time::Duration;

use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::{Value, json};

use crate::support::agent::{Options, TestAgent, process_manifest};
use crate::support::eventually;
use crate::support::git::ManifestRepo;
use crate::support::mcp::{
    Client, call, client, names, params, python_client, python_with_mcp, text,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Example servers `ids` at 1.0.0 in a 1.2 manifest, followed by `profiles` (YAML).
fn manifest(ids: &[&str], profiles: &str) -> String {
    let servers: Vec<(&str, &str)> = ids.iter().map(|id| (*id, "1.0.0")).collect();
    let text = process_manifest(&servers).replacen("version: \"1.1\"", "version: \"1.2\"", 1);
    format!("{text}{profiles}")
}

const PROFILES: &str = "\
profiles:
  - id: two
    description: a and b, whole
    servers: [a, b]
  - id: narrow
    servers: [{ id: c, tools: [echo] }]
  - id: typo
    servers:
      - a
      - { id: c, tools: [echo, nope] }
";

/// An agent with the gateway on, running `ids` with `profiles`; the gateway's base URL
/// (without `/mcp`).
async fn fleet(ids: &[&str], profiles: &str) -> (ManifestRepo, TestAgent, String) {
    let repo = ManifestRepo::new();
    repo.push_manifest(&manifest(ids, profiles), "a fleet with profiles");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            ..Default::default()
        },
    )
    .await;
    for id in ids {
        agent.wait_running(id, "1.0.0", DEADLINE).await;
    }
    let gateway = agent.gateway.clone().expect("the gateway listens");
    let base = gateway.trim_end_matches("/mcp").to_owned();
    (repo, agent, base)
}

/// Every tool of the example servers `ids`, under their gateway names, sorted.
fn tools_of(ids: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ids
        .iter()
        .flat_map(|id| ["echo", "server_version", "sleep"].map(|t| format!("{id}_{t}")))
        .collect();
    all.sort();
    all
}

/// A client on `url` once it lists exactly `expected` (the gateway opens its backend
/// sessions as the servers start).
async fn client_seeing(url: &str, expected: &[String]) -> Client {
    let client = client(url).await;
    eventually(DEADLINE, &format!("{url} to list {expected:?}"), || async {
        let tools = client.list_all_tools().await.ok()?;
        (names(&tools) == expected).then_some(())
    })
    .await;
    client
}

/// The error a call of `tool` on `client` is refused with.
async fn refused(client: &Client, tool: &str) -> String {
    client
        .call_tool(params(tool, json!({ "text": "x", "ms": 1 })))
        .await
        .expect_err("the call is refused")
        .to_string()
}

/// `initialize` over plain HTTP on `url`: the status and the body as JSON (null if not).
async fn initialize(url: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "0" } }
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /profiles` on the gateway's listener, by profile id.
async fn profiles(base: &str) -> std::collections::BTreeMap<String, Value> {
    let v: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/profiles"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["profiles"]
        .as_array()
        .unwrap_or_else(|| panic!("no profiles: {v}"))
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

fn sorted(v: &Value) -> Vec<String> {
    let mut all: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn each_profile_shows_only_its_servers_and_tools_and_an_unknown_one_is_404() {
    let (_repo, _agent, base) = fleet(&["a", "b", "c"], PROFILES).await;

    // `two`: a's and b's tools, prompts and resources, nothing of c.
    let two = client_seeing(&format!("{base}/profiles/two/mcp"), &tools_of(&["a", "b"])).await;
    let r = call(&two, "b_echo", json!({ "text": "through a profile" })).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(text(&r), "through a profile");
    let unknown = refused(&two, "c_echo").await;
    assert!(unknown.contains("unknown tool `c_echo`"), "{unknown}");
    let mut prompts: Vec<String> = two
        .list_all_prompts()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    prompts.sort();
    assert_eq!(prompts, ["a_greet", "b_greet"]);
    let mut uris: Vec<String> = two
        .list_all_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    uris.sort();
    assert_eq!(
        uris,
        [
            "mcp-orchestration://a/example://version",
            "mcp-orchestration://b/example://version"
        ]
    );
    let mut templates: Vec<String> = two
        .list_all_resource_templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.uri_template.clone())
        .collect();
    templates.sort();
    assert_eq!(
        templates,
        [
            "mcp-orchestration://a/example://echo/{text}",
            "mcp-orchestration://b/example://echo/{text}"
        ]
    );
    let not_here = two
        .read_resource(ReadResourceRequestParams::new(
            "mcp-orchestration://c/example://version",
        ))
        .await
        .expect_err("c's resource is not in `two`");
    assert!(not_here.to_string().contains("no resource"), "{not_here}");
    let mut greet = GetPromptRequestParams::new("c_greet");
    greet.arguments = Some(json!({ "name": "Ada" }).as_object().unwrap().clone());
    let not_here = two
        .get_prompt(greet)
        .await
        .expect_err("c's prompt is not in `two`");
    assert!(
        not_here.to_string().contains("unknown prompt `c_greet`"),
        "{not_here}"
    );

    // `narrow`: of c, only echo; its other tools are refused as unknown, its prompt stays.
    let narrow = client_seeing(&format!("{base}/profiles/narrow/mcp"), &["c_echo".into()]).await;
    let r = call(&narrow, "c_echo", json!({ "text": "narrow" })).await;
    assert_eq!(text(&r), "narrow", "{r:?}");
    for tool in ["c_sleep", "c_server_version", "a_echo"] {
        let unknown = refused(&narrow, tool).await;
        assert!(
            unknown.contains(&format!("unknown tool `{tool}`")),
            "{unknown}"
        );
    }
    let prompts = narrow.list_all_prompts().await.unwrap();
    assert_eq!(
        prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["c_greet"],
        "a profile narrows tools, not prompts"
    );

    // `default`, on its own path and as `/mcp`: the whole fleet.
    let all = tools_of(&["a", "b", "c"]);
    for url in [
        format!("{base}/profiles/default/mcp"),
        format!("{base}/mcp"),
    ] {
        let whole = client_seeing(&url, &all).await;
        let r = call(&whole, "c_sleep", json!({ "ms": 1 })).await;
        assert_ne!(r.is_error, Some(true), "{url}: {r:?}");
        whole.cancel().await.ok();
    }

    // A profile the manifest does not have: 404 in the API's error envelope, for any
    // method.
    let (status, body) = initialize(&format!("{base}/profiles/nope/mcp")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "PROFILE_NOT_FOUND", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    let get = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/profiles/nope/mcp"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);

    // `GET /profiles`: default and each profile, with what it shows now.
    let listed = profiles(&base).await;
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["default", "narrow", "two", "typo"]
    );
    let default = &listed["default"];
    assert_eq!(default["path"], "/mcp", "{default}");
    assert_eq!(default["servers"], json!(["a", "b", "c"]), "{default}");
    assert_eq!(sorted(&default["tools"]), all, "{default}");
    assert_eq!(default["missing_tools"], json!({}), "{default}");
    let two_view = &listed["two"];
    assert_eq!(two_view["path"], "/profiles/two/mcp", "{two_view}");
    assert_eq!(two_view["description"], "a and b, whole", "{two_view}");
    assert_eq!(two_view["servers"], json!(["a", "b"]), "{two_view}");
    assert_eq!(sorted(&two_view["tools"]), tools_of(&["a", "b"]));
    assert_eq!(two_view["missing_tools"], json!({}), "{two_view}");
    let narrow_view = &listed["narrow"];
    assert_eq!(narrow_view["path"], "/profiles/narrow/mcp");
    assert_eq!(narrow_view["servers"], json!(["c"]), "{narrow_view}");
    assert_eq!(narrow_view["tools"], json!(["c_echo"]), "{narrow_view}");
    assert_eq!(narrow_view["missing_tools"], json!({}), "{narrow_view}");
    // A tool the profile lists that c does not offer is reported, and the rest served.
    let typo = &listed["typo"];
    assert_eq!(typo["servers"], json!(["a", "c"]), "{typo}");
    let mut want = tools_of(&["a"]);
    want.push("c_echo".into());
    assert_eq!(sorted(&typo["tools"]), want, "{typo}");
    assert_eq!(typo["missing_tools"], json!({ "c": ["nope"] }), "{typo}");
    let typo_client = client_seeing(&format!("{base}/profiles/typo/mcp"), &want).await;
    let unknown = refused(&typo_client, "c_nope").await;
    assert!(unknown.contains("unknown tool `c_nope`"), "{unknown}");

    for c in [two, narrow, typo_client] {
        c.cancel().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_removed_by_a_commit_refuses_new_sessions_and_its_open_ones_see_nothing() {
    let before = "\
profiles:
  - id: keep
    servers: [a]
  - id: gone
    servers: [b]
";
    let (repo, agent, base) = fleet(&["a", "b"], before).await;
    let gone_url = format!("{base}/profiles/gone/mcp");
    let open = client_seeing(&gone_url, &tools_of(&["b"])).await;

    // A commit removes `gone` and adds `later`.
    let after = "\
profiles:
  - id: keep
    servers: [a]
  - id: later
    servers: [{ id: b, tools: [server_version] }]
";
    let commit = repo.push_manifest(&manifest(&["a", "b"], after), "gone goes, later comes");
    eventually(DEADLINE, "the commit to be applied", || async {
        let (_, fleet) = agent.get("/servers").await;
        (fleet["applied_revision"] == commit.as_str()).then_some(())
    })
    .await;

    let (status, body) = initialize(&gone_url).await;
    assert_eq!(status, 404, "a new session on a removed profile: {body}");
    assert_eq!(body["error"]["code"], "PROFILE_NOT_FOUND", "{body}");
    // The session opened before sees an empty catalog, and its calls are refused.
    eventually(DEADLINE, "the open session's catalog to empty", || async {
        let tools = open.list_all_tools().await.ok()?;
        tools.is_empty().then_some(())
    })
    .await;
    let unknown = refused(&open, "b_echo").await;
    assert!(unknown.contains("unknown tool `b_echo`"), "{unknown}");

    let listed = profiles(&base).await;
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["default", "keep", "later"]
    );
    let later = client_seeing(
        &format!("{base}/profiles/later/mcp"),
        &["b_server_version".into()],
    )
    .await;
    let r = call(&later, "b_server_version", json!({})).await;
    assert_eq!(text(&r), "1.0.0", "{r:?}");
    let keep = client_seeing(&format!("{base}/profiles/keep/mcp"), &tools_of(&["a"])).await;
    for c in [open, later, keep] {
        c.cancel().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk_sees_only_a_profiles_tools() {
    let Some(python) = python_with_mcp() else {
        return;
    };
    let (_repo, _agent, base) = fleet(&["a", "b", "c"], PROFILES).await;
    let url = format!("{base}/profiles/two/mcp");
    // Our own client shows when the gateway has its sessions with the backends.
    client_seeing(&url, &tools_of(&["a", "b"]))
        .await
        .cancel()
        .await
        .ok();

    let v = python_client(
        &python,
        &url,
        ("a_echo", json!({ "text": "hello from Python" })),
        ("b_greet", json!({ "name": "Python" })),
        "mcp-orchestration://b/example://version",
    )
    .await;
    assert_eq!(v["server"], "mcp-orchestration-gateway", "{v}");
    assert_eq!(v["tools"], json!(tools_of(&["a", "b"])), "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"], "hello from Python",
        "{v}"
    );
    assert_eq!(v["progress"], json!([]), "echo reports no progress: {v}");
    assert_eq!(v["prompts"], json!(["a_greet", "b_greet"]), "{v}");
    assert_eq!(
        v["resources"],
        json!([
            "mcp-orchestration://a/example://version",
            "mcp-orchestration://b/example://version"
        ]),
        "{v}"
    );
    assert_eq!(v["read"]["contents"][0]["text"], "1.0.0", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_server_s_path_shows_only_that_server_under_the_same_names() {
    let (_repo, _agent, base) = fleet(&["a", "b"], "").await;
    let client = client_seeing(&format!("{base}/servers/b/mcp"), &tools_of(&["b"])).await;
    let answer = call(&client, "b_echo", json!({ "text": "hi" })).await;
    assert_eq!(text(&answer), "hi", "{answer:?}");
    assert!(
        refused(&client, "a_echo").await.contains("unknown tool"),
        "a's tools are not on b's path"
    );
    let (status, body) = initialize(&format!("{base}/servers/nope/mcp")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "SERVER_NOT_FOUND", "{body}");
    client.cancel().await.ok();
}
