//! The agent's own image (`docker/Dockerfile` over `docker/rootfs.sh`), built around this
//! build of the binary and run against the host's Docker Engine: it runs as an
//! unprivileged user, its HEALTHCHECK (the agent's `healthcheck` command) turns healthy,
//! and the agent inside deploys a server as a container on the host's engine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::docker::{
    ContainerGuard, docker, docker_or_skip, example_image, free_port, with_image_build_lock,
};
use crate::support::git::ManifestRepo;
use crate::support::{BIN, REPO, eventually};

const DEADLINE: Duration = Duration::from_secs(90);
const IMAGE: &str = "mcp-orch-test/agent:test";

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_image_runs_unprivileged_turns_healthy_and_deploys_on_the_hosts_engine() {
    if !docker_or_skip("the_agent_image") {
        return;
    }
    let mut guard = ContainerGuard::new("img");
    let server = guard.server_id().to_owned();
    let label = format!("mcp-orch-test.agent-image={}", std::process::id());
    guard.also_remove_labelled("mcp-orch-test.agent-image", &std::process::id().to_string());
    let image = example_image("1.0.0");

    // The manifest repository, owned by the image's user (libgit2 refuses a repository
    // another user owns), mounted into the container.
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &format!(
            "version: \"1.1\"\nservers:\n  - id: {server}\n    version: \"1.0.0\"\n    docker: {{ image: {}, port: 8080 }}\n    health_check: {{ interval_seconds: 0.5, timeout_seconds: 0.4 }}\n",
            image.split(':').next().unwrap()
        ),
        "one container",
    );
    let remote = repo.remote();
    run("chown", &["-R", "65532:65532", remote.to_str().unwrap()]);

    // The image: rootfs.sh lays out this build of the binary, the Dockerfile wraps it.
    let context = tempfile::tempdir().unwrap();
    run(
        Path::new(REPO).join("docker/rootfs.sh").to_str().unwrap(),
        &[BIN, context.path().to_str().unwrap()],
    );
    std::fs::copy(
        Path::new(REPO).join("docker/Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .unwrap();
    let trust = context.path().join("trust-policy.yaml");
    std::fs::write(&trust, "allowed_images: [mcp-orch-test/]\n").unwrap();
    run("chmod", &["0644", trust.to_str().unwrap()]);
    with_image_build_lock(|| {
        docker(&[
            "build",
            "--quiet",
            "-t",
            IMAGE,
            context.path().to_str().unwrap(),
        ])
    });

    let port = free_port();
    let socket_group = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the engine's socket at /var/run/docker.sock");
    let container = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "--network",
        "host",
        "--group-add",
        &socket_group,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/repo.git", remote.display()),
        "-v",
        &format!(
            "{}:/etc/mcp-orchestration/trust-policy.yaml:ro",
            trust.display()
        ),
        "-e",
        &format!("MCP_ORCHESTRATION_URL=http://127.0.0.1:{port}"),
        // An instrumented build (CI's coverage) writes its profile where it may.
        "-e",
        "LLVM_PROFILE_FILE=/tmp/agent-%p.profraw",
        "--health-interval",
        "1s",
        "--health-start-period",
        "0s",
        IMAGE,
        "agent",
        "--repo",
        "/repo.git",
        "--runtime",
        "docker",
        "--trust-policy",
        "/etc/mcp-orchestration/trust-policy.yaml",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--gateway-listen",
        "off",
    ]);

    let logs = || {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let health = || {
        docker(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &container,
        ])
    };
    eventually(DEADLINE, "the container's HEALTHCHECK healthy", || async {
        (health() == "healthy").then_some(())
    })
    .await;

    // The agent inside started the server on the host's engine, and its API says so.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/servers/{server}");
    let view = eventually(
        DEADLINE,
        "the server running through the image's agent",
        || async {
            let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (v["running_version"] == "1.0.0" && v["health"] == "healthy").then_some(v)
        },
    )
    .await;
    assert!(
        !guard.containers().is_empty(),
        "no container of {server} on the host: {view}\n{}",
        logs()
    );

    // Not root: the image's user, and the process runs as it.
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.User}}", &container]),
        "65532:65532"
    );
    let processes = docker(&["top", &container, "-eo", "pid,uid"]);
    let uids: Vec<&str> = processes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|uid| *uid == "65532"),
        "{processes}"
    );
    // The agent first, so it does not bring back the server the guard removes.
    docker(&["rm", "--force", &container]);
    drop(guard);
    let _ = Command::new("docker")
        .args(["rmi", "--force", IMAGE])
        .output();
}
