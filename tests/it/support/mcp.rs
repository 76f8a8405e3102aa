//! MCP clients for the gateway tests: an rmcp client session on a URL, a tool call and its
//! text, sorted tool names, and the official MCP Python SDK when one is installed.

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig};
use rmcp::model::{Implementation, Tool};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

pub type Client = RunningService<RoleClient, ClientConfig>;

/// An MCP session (2025-11-25, with `initialize`) with the endpoint at `url`.
pub async fn client(url: &str) -> Client {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("gateway-test", "0"),
    )
    .serve(StreamableHttpClientTransport::from_uri(url.to_owned()))
    .await
    .expect("the gateway accepts an MCP session")
}

/// Calls `tool` with `arguments` (an object, or anything else for none); panics on a
/// protocol error.
pub async fn call(client: &rmcp::Peer<RoleClient>, tool: &str, arguments: Value) -> CallToolResult {
    client
        .call_tool(params(tool, arguments))
        .await
        .expect("the call is answered")
}

/// The request for `tool` with `arguments` (an object, or anything else for none).
pub fn params(tool: &str, arguments: Value) -> CallToolRequestParams {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = arguments {
        params = params.with_arguments(map);
    }
    params
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The tools' names, sorted.
pub fn names(tools: &[Tool]) -> Vec<String> {
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names
}

/// The official MCP Python SDK: `MCP_TEST_PYTHON_MCP` (a Python with `mcp` installed;
/// `.ci/run` makes one). Elsewhere its absence skips the test, and under `CI=true` fails it.
pub fn python_with_mcp() -> Option<String> {
    if let Ok(python) = std::env::var("MCP_TEST_PYTHON_MCP") {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the MCP Python SDK is not installed (.ci/run installs it and sets MCP_TEST_PYTHON_MCP)"
    );
    eprintln!("skipping: set MCP_TEST_PYTHON_MCP to a Python with `pip install mcp`");
    None
}

/// Runs `tests/it/python/gateway_client.py` (the official SDK) against `url`: it lists
/// tools, prompts and resources, calls `tool` (with a progress callback), gets `prompt` and
/// reads `uri`; returns the
/// JSON object it prints.
pub async fn python_client(
    python: &str,
    url: &str,
    tool: (&str, Value),
    prompt: (&str, Value),
    uri: &str,
) -> Value {
    let script = std::path::Path::new(super::REPO).join("tests/it/python/gateway_client.py");
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .arg(url)
        .arg(tool.0)
        .arg(tool.1.to_string())
        .arg(prompt.0)
        .arg(prompt.1.to_string())
        .arg(uri)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the SDK client ends within 60 s")
        .expect("python runs");
    assert!(
        out.status.success(),
        "the SDK client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}
