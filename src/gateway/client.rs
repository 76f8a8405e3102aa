//! The tool listing the rollouts' tool-set guard compares, made with the gateway's HTTP
//! client (`http`).

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use super::http::BackendHttp;
use crate::reconcile::execute::ToolLister;
use crate::reconcile::toolset::ToolShape;

/// How long listing a server's tools (session, list, end) may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The tool-set guard's lister: opens a session with the server, lists every tool, ends
/// the session.
pub fn tool_lister(http: BackendHttp) -> ToolLister {
    Arc::new(move |url: String| {
        let http = http.clone();
        Box::pin(async move {
            tokio::time::timeout(LIST_TIMEOUT, list_tools(http, url))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {LIST_TIMEOUT:?}")))
        })
    })
}

async fn list_tools(http: BackendHttp, url: String) -> Result<Vec<ToolShape>, String> {
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
