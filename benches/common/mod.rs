//! What only the benchmarks need: release builds of the agent and the example server, a
//! process's CPU time and memory, percentiles, the example server's image under any tag,
//! and an agent that also removes its containers when dropped. What the integration tests
//! use too (git repositories, the agent, Docker, a registry) is the shared `kit`.
#![allow(dead_code)]

// The kit is written for the tests, whose paths it keeps (`docker::TestRegistry`); the
// benchmarks use a part of it.
#[allow(unused_imports)]
#[path = "../../tests/kit/mod.rs"]
pub mod kit;

use std::path::{Path, PathBuf};
use std::process::Command;

use kit::REPO;
use kit::agent::{Options, TestAgent};
use kit::docker::docker;
use kit::git::ManifestRepo;
use mcp_orchestration::settings::RuntimeChoice;

/// User + system CPU time of process `pid` (`"self"`: this one), in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields are counted after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // Linux reports CPU time in clock ticks of 1/100 s.
    (field(11) + field(12)) as f64 / 100.0
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`), 0 when absent.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A manifest repository whose `main` holds `manifest`.
pub fn repo_with(manifest: &str) -> ManifestRepo {
    let repo = ManifestRepo::new();
    repo.push_manifest(manifest, "start");
    repo
}

/// A [`TestAgent`] that, with the Docker runtime, also removes the containers it started
/// when dropped: a benchmark has no `ContainerGuard` to do it.
pub struct Agent {
    agent: Option<TestAgent>,
    runtime: RuntimeChoice,
}

pub async fn start_agent(repo: &str, options: Options) -> Agent {
    let runtime = options.runtime;
    Agent {
        agent: Some(TestAgent::start(repo, options).await),
        runtime,
    }
}

impl std::ops::Deref for Agent {
    type Target = TestAgent;

    fn deref(&self) -> &TestAgent {
        self.agent.as_ref().expect("an agent until dropped")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(agent) = self.agent.take() else {
            return;
        };
        // Read before the data dir goes with the agent.
        let owner = (self.runtime == RuntimeChoice::Docker).then(|| {
            std::fs::read_to_string(agent.data.path().join("agent-id")).unwrap_or_default()
        });
        // Stops the agent and kills the processes it started.
        drop(agent);
        if let Some(owner) = owner {
            remove_containers(owner.trim());
        }
    }
}

/// Removes the containers labelled as owned by agent `owner`.
fn remove_containers(owner: &str) {
    let ids = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.mcp-orchestration.owner={owner}"),
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// Builds `name` in release mode (`kind` is `--bin` or `--example`) and returns its path,
/// `target/release/<subdir>/<name>`.
fn release_build(kind: &str, name: &str, subdir: &str) -> PathBuf {
    let root = Path::new(REPO);
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", kind, name])
        .current_dir(root)
        .status()
        .expect("cargo");
    assert!(
        status.success(),
        "cargo build --release {kind} {name} failed"
    );
    root.join("target/release").join(subdir).join(name)
}

/// The example server, built in release mode (dynamically linked: for the process runtime).
pub fn release_example() -> PathBuf {
    release_build("--example", "example-server", "examples")
}

/// The agent binary, built in release mode.
pub fn release_agent() -> PathBuf {
    release_build("--bin", "mcp-orchestration", "")
}

/// A `FROM scratch` image of the example server reporting `version`, with `/health` in
/// `health` mode, tagged `tag`.
pub fn build_image(binary: &Path, tag: &str, version: &str, health: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(binary, ctx.path().join("example-server")).unwrap();
    let dockerfile =
        std::fs::read_to_string(Path::new(REPO).join("examples/example-server/Dockerfile"))
            .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{dockerfile}\nENV EXAMPLE_SERVER_VERSION={version}\nENV EXAMPLE_SERVER_HEALTH={health}\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "--quiet",
        "--tag",
        tag,
        ctx.path().to_str().unwrap(),
    ]);
}
