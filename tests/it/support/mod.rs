//! Helpers only the integration tests use: running the binary, the example server's admin
//! routes, a gateway receiver, image publishing, schema checks, MCP clients. What the
//! benchmarks need too is in the shared kit (`tests/kit`), re-exported here.

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-orchestration");

/// Runs the binary with `args` in `dir`, without the caller's colour or config settings.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MCP_ORCHESTRATION_CONFIG")
        .env_remove("MCP_ORCHESTRATION_TRUST_POLICY")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub mod browser;
pub mod images;
pub mod mcp;
pub mod receiver;
pub mod schema;

// The helpers the benchmarks use too live in the shared kit; reached through `support`, so a
// test need not know which of its helpers are shared.
pub use crate::kit::{REPO, agent, docker, eventually, example_server_bin, git, registry, swarm};

/// Calls the example server's `/admin` route `path` (e.g. `/admin/health/unhealthy`) beside
/// its MCP `endpoint`.
pub async fn admin(endpoint: &str, path: &str) {
    let base = endpoint.trim_end_matches("/mcp");
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}
