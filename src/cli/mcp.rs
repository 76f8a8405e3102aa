//! `mcp-orchestration mcp`: the agent's MCP tools on stdio, for desktop clients.

use anyhow::Context;

use super::exit;
use crate::settings::Settings;

pub fn run(settings: &Settings) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(crate::mcp::serve_stdio(
        &settings.agent_url,
        settings.client_api_key(),
        settings.client_key_hint(),
    ));
    // A read of stdin may still be parked on a blocking thread; waiting for it would keep
    // the process alive after the session ended.
    rt.shutdown_background();
    result?;
    Ok(exit::OK)
}
