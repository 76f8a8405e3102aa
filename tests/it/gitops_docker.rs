//! The GitOps loop with the Docker runtime: real git pushes, a real Docker Engine, images of
//! the example server, containers reached through ports published on 127.0.0.1.

use std::time::{Duration, Instant};

use mcp_orchestration::settings::RuntimeChoice;

use crate::support::agent::{Options, TestAgent, docker_manifest};
use crate::support::docker::{ContainerGuard, docker, docker_or_skip, example_image};
use crate::support::eventually;
use crate::support::git::ManifestRepo;

/// Generous for a loaded machine; the benchmark measures the real figure.
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn docker_a_pushed_server_is_deployed_updated_and_removed_and_unlabelled_containers_are_untouched()
 {
    if !docker_or_skip("docker_a_pushed_server_is_deployed_updated_and_removed") {
        return;
    }
    let v1 = example_image("1.0.0");
    example_image("1.1.0");
    let guard = ContainerGuard::new("gd");
    let id = guard.server_id().to_owned();

    // A container started by hand, from the same image, without our labels.
    let mut bystander = ContainerGuard::new("gd-by");
    bystander.also_remove_labelled("mcp-orch-test.bystander", &id);
    let by_id = docker(&[
        "run",
        "-d",
        "--label",
        &format!("mcp-orch-test.bystander={id}"),
        "-p",
        "127.0.0.1::8080",
        &v1,
    ]);
    let by_started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &by_id]);

    let repo = ManifestRepo::new();
    repo.push_manifest(&docker_manifest(&[]), "empty fleet");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Docker,
            ..Options::default()
        },
    )
    .await;
    agent.wait_runs(1).await;

    let pushed = Instant::now();
    repo.push_manifest(&docker_manifest(&[(&id, "1.0.0")]), "add the server");
    let first = agent.wait_running(&id, "1.0.0", DEADLINE).await;
    eprintln!("docker deploy healthy after {:?}", pushed.elapsed());
    let container = first["instance_id"].as_str().unwrap().to_owned();
    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", &container]);
    for expected in [
        "\"io.mcp-orchestration.managed\":\"true\"".to_owned(),
        format!("\"io.mcp-orchestration.server\":\"{id}\""),
        "\"io.mcp-orchestration.version\":\"1.0.0\"".to_owned(),
    ] {
        assert!(
            labels.contains(&expected),
            "{expected} missing from {labels}"
        );
    }
    let host_ip = docker(&[
        "inspect",
        "--format",
        "{{(index (index .HostConfig.PortBindings \"8080/tcp\") 0).HostIp}}",
        &container,
    ]);
    assert_eq!(host_ip, "127.0.0.1");

    repo.push_manifest(&docker_manifest(&[(&id, "1.1.0")]), "upgrade");
    let second = agent.wait_running(&id, "1.1.0", DEADLINE).await;
    assert_ne!(second["instance_id"], first["instance_id"]);
    eventually(DEADLINE, "the 1.0.0 container to be removed", || async {
        (guard.containers().len() == 1).then_some(())
    })
    .await;

    repo.push_manifest(&docker_manifest(&[]), "remove the server");
    eventually(
        DEADLINE,
        "the server's containers to be removed",
        || async { guard.containers().is_empty().then_some(()) },
    )
    .await;

    // Every sync left the hand-made container alone: same container, never restarted.
    let state = docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.StartedAt}}",
        &by_id,
    ]);
    assert_eq!(state, format!("true {by_started}"));
    drop(agent);
}
