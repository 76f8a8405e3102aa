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

/// The example MCP server binary that `cargo test` built beside this test binary.
pub fn example_server_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/examples/example-server
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join("example-server");
    assert!(
        bin.exists(),
        "{} is missing; `cargo test` builds it (run `cargo build --example example-server`)",
        bin.display()
    );
    bin
}

pub mod agent;
pub mod docker;
pub mod git;
pub mod images;
pub mod receiver;
pub mod registry;
pub mod schema;

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

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(deadline: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
