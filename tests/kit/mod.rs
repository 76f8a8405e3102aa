//! The kit the integration tests (`tests/it`) and the benchmarks (`benches`) share: real git
//! repositories, an agent running in the calling process, Docker and the example server's
//! images, and a real OCI registry. Both include these files with `#[path]`, so there is
//! one copy of each helper; what only one of them needs stays in `tests/it/support` or
//! `benches/common`.

use std::path::Path;

pub mod agent;
pub mod docker;
pub mod git;
pub mod registry;
pub mod swarm;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

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
