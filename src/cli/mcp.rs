//! `mcp-orchestration mcp` and `mcp-orchestration gateway`: the agent's MCP tools, or its
//! gateway's, on stdio, for desktop clients.

use anyhow::Context;

use super::exit;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The gateway's address (its `--gateway-listen`), without `/mcp`.
    #[arg(long, default_value = "http://127.0.0.1:7071", value_name = "URL")]
    pub url: String,
}

/// Bridges stdio to `{base_url}/mcp`.
pub fn run(settings: &Settings, base_url: &str) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(crate::mcp::serve_stdio(
        base_url,
        settings.client_api_key(),
        settings.client_key_hint(),
    ));
    // A read of stdin may still be parked on a blocking thread; waiting for it would keep
    // the process alive after the session ended.
    rt.shutdown_background();
    result?;
    Ok(exit::OK)
}
