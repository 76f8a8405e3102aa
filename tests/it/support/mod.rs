//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-orchestration");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

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
