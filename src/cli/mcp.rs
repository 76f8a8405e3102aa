//! `mcp-orchestration mcp` and `mcp-orchestration gateway`: the agent's MCP tools, or its
//! gateway's (the whole fleet's or one profile's), on stdio, for desktop clients.

use anyhow::Context;

use super::exit;
use crate::mcp::Endpoint;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The gateway's address (its `--gateway-listen`, e.g. `http://127.0.0.1:7071`), or a
    /// whole endpoint ending in `/mcp` (`http://127.0.0.1:7071/profiles/dev/mcp`), used as
    /// it is.
    #[arg(long, default_value = "http://127.0.0.1:7071", value_name = "URL")]
    pub url: String,
    /// Serve this profile's tools (`/profiles/PROFILE/mcp`) [default: the whole fleet,
    /// `/mcp`]. With a whole endpoint as `--url`, it must be the profile that endpoint
    /// serves.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

impl GatewayArgs {
    /// The endpoint the bridge forwards to.
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        Ok(Endpoint::gateway(&self.url, self.profile.as_deref())?)
    }
}

/// Bridges stdio to `endpoint`.
pub fn run(settings: &Settings, endpoint: &Endpoint) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(crate::mcp::serve_stdio(
        endpoint,
        settings.client_api_key(),
        settings.client_key_hint(),
    ));
    // A read of stdin may still be parked on a blocking thread; waiting for it would keep
    // the process alive after the session ended.
    rt.shutdown_background();
    result?;
    Ok(exit::OK)
}
