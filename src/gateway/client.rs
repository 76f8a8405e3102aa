//! The agent's MCP client side: the one HTTP client every session the agent opens with a
//! server shares (the gateway's backend sessions, the tool-set guard's listings), and the
//! tool listing the guard compares.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::reconcile::execute::ToolLister;
use crate::reconcile::toolset::ToolShape;

/// How long listing a server's tools (session, list, end) may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP client, built on first use and shared by its clones. Left to itself, rmcp
/// builds a client per session, and each one reads the system's CA bundle: with three
/// servers that was 10 MiB of idle RSS and a first sync seven times slower
/// (BENCHMARKS.md, "Start-up and idle memory"). Servers are plain HTTP on 127.0.0.1, so
/// this one trusts no root at all.
#[derive(Clone, Default)]
pub struct SharedHttp(Arc<OnceLock<reqwest::Client>>);

impl SharedHttp {
    pub fn get(&self) -> reqwest::Client {
        self.0
            .get_or_init(|| {
                reqwest::Client::builder()
                    .no_proxy()
                    // As rmcp's own client: a reused connection whose last body was not
                    // read to the end stalls ~40 ms on delayed ACKs.
                    .pool_max_idle_per_host(0)
                    .redirect(reqwest::redirect::Policy::none())
                    .tls_certs_only([])
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// The tool-set guard's lister: opens a session with the server, lists every tool, ends
/// the session.
pub fn tool_lister(http: SharedHttp) -> ToolLister {
    Arc::new(move |url: String| {
        let http = http.get();
        Box::pin(async move {
            tokio::time::timeout(LIST_TIMEOUT, list_tools(http, url))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {LIST_TIMEOUT:?}")))
        })
    })
}

async fn list_tools(http: reqwest::Client, url: String) -> Result<Vec<ToolShape>, String> {
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(url),
    );
    let session = ().serve(transport).await.map_err(|e| crate::error_text::chain(&e))?;
    let listed = session.peer().list_all_tools().await;
    let _ = session.cancel().await;
    let tools = listed.map_err(|e| crate::error_text::chain(&e))?;
    Ok(tools
        .into_iter()
        .map(|tool| {
            let mut definition = serde_json::to_value(&tool).unwrap_or_default();
            if let Some(fields) = definition.as_object_mut() {
                fields.remove("name");
            }
            ToolShape {
                name: tool.name.to_string(),
                definition,
            }
        })
        .collect())
}
