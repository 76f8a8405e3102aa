//! The Docker runtime against a real daemon and a real `FROM scratch` image of the example
//! server. Containers are reached only through ports published on 127.0.0.1.

use std::time::{Duration, Instant};

use mcp_orchestration::manifest::{Resources, RestartPolicy};
use mcp_orchestration::runtime::docker::{DockerRuntime, RegistryAuth};
use mcp_orchestration::runtime::{
    InstanceState, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind, labels,
};
use tokio::sync::broadcast;

use crate::support::docker::{
    CASE_LABEL, ContainerGuard, DEADLINE, ImageGuard, REGISTRY_PASSWORD, REGISTRY_USER,
    TestRegistry, docker, docker_or_skip, example_image, example_spec, free_port, registry_or_skip,
    wait_healthy,
};
use crate::support::eventually;

async fn runtime() -> DockerRuntime {
    DockerRuntime::connect()
        .await
        .expect("Docker answered `docker version`, so the runtime connects")
}

/// `docker inspect --format '{{json <path>}}' id`, parsed.
fn inspect_json(id: &str, path: &str) -> serde_json::Value {
    let text = docker(&["inspect", "--format", &format!("{{{{json {path}}}}}"), id]);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} of {id} is not JSON ({e}): {text}"))
}

/// The first event `wanted` accepts, or a panic after `timeout`. Other tests run beside
/// this one and kill or stop their own containers, so events are picked, not just taken.
async fn next_event(
    events: &mut broadcast::Receiver<RuntimeEvent>,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => break event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(err) => panic!("event channel: {err}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event for {what} within {timeout:?}"))
}

#[tokio::test]
async fn docker_start_publishes_on_loopback_and_serves_health() {
    if !docker_or_skip("docker_start_publishes_on_loopback_and_serves_health") {
        return;
    }
    let guard = ContainerGuard::new("start");
    let image = example_image("1.2.3");
    let spec = example_spec(guard.server_id(), "1.2.3", &image);
    let rt = runtime().await;

    let instance = rt.start(&spec).await.expect("start");

    assert_eq!(instance.state, InstanceState::Running);
    assert!(instance.started_at.is_some(), "{instance:?}");
    let port = instance.host_port.expect("a host port was assigned");
    let body = wait_healthy(port).await;
    assert_eq!(body["version"], "1.2.3", "{body}");

    let published = inspect_json(&instance.id, ".NetworkSettings.Ports");
    let bindings = published["8080/tcp"]
        .as_array()
        .unwrap_or_else(|| panic!("8080/tcp is published: {published}"));
    assert!(!bindings.is_empty(), "{published}");
    for binding in bindings {
        assert_eq!(binding["HostIp"], "127.0.0.1", "{published}");
        assert_eq!(binding["HostPort"], port.to_string(), "{published}");
    }
    let container_labels = inspect_json(&instance.id, ".Config.Labels");
    assert_eq!(container_labels[labels::MANAGED], "true");
    assert_eq!(container_labels[labels::SERVER], guard.server_id());
    assert_eq!(container_labels[labels::VERSION], "1.2.3");
    assert_eq!(container_labels[labels::REVISION], spec.revision.as_str());
    assert_eq!(container_labels[labels::SPEC], spec.spec_hash.as_str());
}

#[tokio::test]
async fn docker_start_applies_resources_and_restart_policy() {
    if !docker_or_skip("docker_start_applies_resources_and_restart_policy") {
        return;
    }
    let guard = ContainerGuard::new("limits");
    let image = example_image("1.0.0");
    let mut spec = example_spec(guard.server_id(), "1.0.0", &image);
    spec.restart_policy = RestartPolicy::OnFailure;
    if let Some(d) = spec.docker.as_mut() {
        d.resources = Resources {
            memory_mb: Some(64),
            cpus: Some(0.5),
        };
    }

    let instance = runtime().await.start(&spec).await.expect("start");

    let host_config = inspect_json(&instance.id, ".HostConfig");
    assert_eq!(host_config["Memory"], 64 * 1024 * 1024, "{host_config}");
    assert_eq!(host_config["NanoCpus"], 500_000_000, "{host_config}");
    assert_eq!(
        host_config["RestartPolicy"]["Name"], "on-failure",
        "{host_config}"
    );
    let name = docker(&["inspect", "--format", "{{.Name}}", &instance.id]);
    let prefix = format!("/mcp-{}-1-0-0-", guard.server_id());
    assert!(name.starts_with(&prefix), "{name} starts with {prefix}");
}

#[tokio::test]
async fn docker_list_adopts_labelled_containers_and_ignores_others() {
    if !docker_or_skip("docker_list_adopts_labelled_containers_and_ignores_others") {
        return;
    }
    let mut guard = ContainerGuard::new("list");
    let case = guard.server_id().to_string();
    guard.also_remove_labelled(CASE_LABEL, &case);
    let image = example_image("2.0.0");
    let spec = example_spec(guard.server_id(), "2.0.0", &image);
    let ours = runtime().await.start(&spec).await.expect("start");
    let theirs = docker(&[
        "run",
        "--detach",
        "--label",
        &format!("{CASE_LABEL}={case}"),
        "--env",
        "EXAMPLE_SERVER_VERSION=2.0.0",
        &image,
    ]);

    // A fresh connection, as after an agent restart.
    let listed = runtime().await.list().await.expect("list");

    let adopted = listed
        .iter()
        .find(|i| i.id == ours.id)
        .unwrap_or_else(|| panic!("{} is listed: {listed:?}", ours.id));
    assert_eq!(adopted.server_id, guard.server_id());
    assert_eq!(adopted.version, spec.version);
    assert_eq!(adopted.revision, spec.revision);
    assert_eq!(adopted.spec_hash, spec.spec_hash);
    assert_eq!(adopted.state, InstanceState::Running);
    assert_eq!(adopted.host_port, ours.host_port);
    assert!(
        listed.iter().all(|i| i.id != theirs),
        "the unlabelled container {theirs} must not be listed: {listed:?}"
    );
}

#[tokio::test]
async fn docker_stop_and_remove_are_idempotent() {
    if !docker_or_skip("docker_stop_and_remove_are_idempotent") {
        return;
    }
    let guard = ContainerGuard::new("stop");
    let image = example_image("1.0.0");
    let rt = runtime().await;
    let instance = rt
        .start(&example_spec(guard.server_id(), "1.0.0", &image))
        .await
        .expect("start");

    rt.stop(&instance.id, Duration::from_secs(2))
        .await
        .expect("first stop");
    rt.stop(&instance.id, Duration::from_secs(2))
        .await
        .expect("stopping a stopped container is ok");
    let stopped = rt.list().await.expect("list");
    let state = stopped
        .iter()
        .find(|i| i.id == instance.id)
        .map(|i| i.state.clone());
    assert!(
        matches!(state, Some(InstanceState::Exited { .. })),
        "stopped, still listed: {state:?}"
    );

    rt.remove(&instance.id).await.expect("first remove");
    rt.remove(&instance.id)
        .await
        .expect("removing a removed container is ok");
    let listed = rt.list().await.expect("list");
    assert!(
        listed.iter().all(|i| i.id != instance.id),
        "{} is gone: {listed:?}",
        instance.id
    );
    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
}

#[tokio::test]
async fn docker_fixed_host_port_is_used() {
    if !docker_or_skip("docker_fixed_host_port_is_used") {
        return;
    }
    let guard = ContainerGuard::new("fixed");
    let image = example_image("1.0.0");
    let port = free_port();
    let mut spec = example_spec(guard.server_id(), "1.0.0", &image);
    spec.host_port = Some(port);

    let instance = runtime().await.start(&spec).await.expect("start");

    assert_eq!(instance.host_port, Some(port));
    let body = wait_healthy(port).await;
    assert_eq!(body["version"], "1.0.0", "{body}");
}

#[tokio::test]
async fn docker_missing_image_is_a_pull_error() {
    if !docker_or_skip("docker_missing_image_is_a_pull_error") {
        return;
    }
    let guard = ContainerGuard::new("pull");
    // A registry on a closed loopback port: the pull fails fast and nothing leaves the
    // machine.
    let image = "127.0.0.1:1/nothing:1.0.0";
    let spec = example_spec(guard.server_id(), "1.0.0", image);
    let rt = runtime().await;

    let result = tokio::time::timeout(Duration::from_secs(60), rt.start(&spec))
        .await
        .expect("the pull fails within 60 s");

    match result {
        Err(RuntimeError::Pull {
            image: failed,
            message,
        }) => {
            assert_eq!(failed, image);
            // The registry's (here: the dialer's) own words reach the caller.
            assert!(message.contains("127.0.0.1:1"), "{message}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
}

#[tokio::test]
async fn docker_logs_tail_returns_output() {
    if !docker_or_skip("docker_logs_tail_returns_output") {
        return;
    }
    let guard = ContainerGuard::new("logs");
    let image = example_image("1.0.0");
    let rt = runtime().await;
    let instance = rt
        .start(&example_spec(guard.server_id(), "1.0.0", &image))
        .await
        .expect("start");

    let logs = eventually(DEADLINE, "the start line in the logs", || async {
        let logs = rt.logs_tail(&instance.id, 20).await.expect("logs");
        logs.contains("listening").then_some(logs)
    })
    .await;

    assert!(logs.contains("example-server 1.0.0 listening"), "{logs}");
}

#[tokio::test]
async fn docker_pulls_missing_images_with_registry_credentials() {
    let test = "docker_pulls_missing_images_with_registry_credentials";
    if !docker_or_skip(test) || !registry_or_skip(test) {
        return;
    }
    let storage = tempfile::tempdir().expect("registry storage");
    let open = TestRegistry::start(storage.path(), false).await;
    let locked = TestRegistry::start(storage.path(), true).await;
    let mut images = ImageGuard::default();
    let guard = ContainerGuard::new("auth");
    let pushed = format!("{}/mcp-orch-test/pulled:3.0.0", open.host());
    let image = format!("{}/mcp-orch-test/pulled:3.0.0", locked.host());
    images.add(&pushed);
    images.add(&image);
    docker(&["tag", &example_image("3.0.0"), &pushed]);
    docker(&["push", &pushed]);
    docker(&["image", "rm", &pushed]);
    let spec = example_spec(guard.server_id(), "3.0.0", &image);

    let anonymous = runtime().await.start(&spec).await;
    assert!(
        matches!(anonymous, Err(RuntimeError::Pull { .. })),
        "without credentials the pull is refused: {anonymous:?}"
    );

    let rt = runtime().await.with_registry_auth(vec![RegistryAuth {
        registry: locked.host(),
        username: REGISTRY_USER.to_string(),
        password: REGISTRY_PASSWORD.to_string(),
    }]);
    let instance = rt.start(&spec).await.expect("start pulls with credentials");
    let body = wait_healthy(instance.host_port.expect("host port")).await;
    assert_eq!(body["version"], "3.0.0", "{body}");
}

#[tokio::test]
async fn docker_fixed_port_in_use_is_a_start_error_without_debris() {
    if !docker_or_skip("docker_fixed_port_in_use_is_a_start_error_without_debris") {
        return;
    }
    let guard = ContainerGuard::new("busy");
    let image = example_image("1.0.0");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let mut spec = example_spec(guard.server_id(), "1.0.0", &image);
    spec.host_port = Some(taken.local_addr().expect("local addr").port());

    let result = runtime().await.start(&spec).await;

    assert!(
        matches!(result, Err(RuntimeError::Start { .. })),
        "a taken port fails the start: {result:?}"
    );
    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
}

#[tokio::test]
async fn docker_remove_stops_a_running_container_first() {
    if !docker_or_skip("docker_remove_stops_a_running_container_first") {
        return;
    }
    let guard = ContainerGuard::new("rmrun");
    let image = example_image("1.0.0");
    let rt = runtime().await;
    let instance = rt
        .start(&example_spec(guard.server_id(), "1.0.0", &image))
        .await
        .expect("start");

    rt.remove(&instance.id)
        .await
        .expect("remove a running container");

    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
}

#[tokio::test]
async fn docker_refuses_to_stop_or_remove_unlabelled_containers() {
    if !docker_or_skip("docker_refuses_to_stop_or_remove_unlabelled_containers") {
        return;
    }
    let mut guard = ContainerGuard::new("foreign");
    let case = guard.server_id().to_string();
    guard.also_remove_labelled(CASE_LABEL, &case);
    let image = example_image("1.0.0");
    let theirs = docker(&[
        "run",
        "--detach",
        "--label",
        &format!("{CASE_LABEL}={case}"),
        &image,
    ]);
    let rt = runtime().await;

    let stop = rt.stop(&theirs, Duration::from_secs(1)).await;
    let remove = rt.remove(&theirs).await;

    assert!(
        matches!(stop, Err(RuntimeError::Operation { .. })),
        "{stop:?}"
    );
    assert!(
        matches!(remove, Err(RuntimeError::Operation { .. })),
        "{remove:?}"
    );
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &theirs]);
    assert_eq!(state, "running");
}

#[tokio::test]
async fn docker_kill_is_reported_within_a_second() {
    if !docker_or_skip("docker_kill_is_reported_within_a_second") {
        return;
    }
    let guard = ContainerGuard::new("kill");
    let image = example_image("1.0.0");
    let rt = runtime().await;
    let mut events = rt.subscribe();
    let instance = rt
        .start(&example_spec(guard.server_id(), "1.0.0", &image))
        .await
        .expect("start");
    wait_healthy(instance.host_port.expect("host port")).await;

    docker(&["kill", &instance.id]);
    let killed = Instant::now();
    let event = next_event(&mut events, DEADLINE, &instance.id, |e| {
        e.instance_id == instance.id
    })
    .await;
    let took = killed.elapsed();

    assert_eq!(event.server_id, guard.server_id());
    assert_eq!(
        event.kind,
        RuntimeEventKind::Exited { code: Some(137) },
        "SIGKILL reads as 128 + 9"
    );
    assert!(
        took < Duration::from_secs(1),
        "the kill was reported {took:?} after `docker kill` returned"
    );
}

#[tokio::test]
async fn docker_events_of_other_containers_are_ignored() {
    if !docker_or_skip("docker_events_of_other_containers_are_ignored") {
        return;
    }
    let guard = ContainerGuard::new("foreignevt");
    let server = guard.server_id().to_string();
    let image = example_image("1.0.0");
    let spec = example_spec(&server, "1.0.0", &image);
    let ours = runtime().await;
    let blue = runtime()
        .await
        .with_owner(format!("t-blue-{}", std::process::id()));
    let mut our_events = ours.subscribe();
    let mut blue_events = blue.subscribe();
    let our_instance = ours.start(&spec).await.expect("start ours");
    let blue_instance = blue.start(&spec).await.expect("start blue's");
    // Carries our server label but not the managed one: had the runtime reported it, the
    // event would name our server.
    let foreign = docker(&[
        "run",
        "--detach",
        "--label",
        &format!("{}={server}", labels::SERVER),
        &image,
    ]);
    for id in [&our_instance.id, &blue_instance.id, &foreign] {
        let state = docker(&["inspect", "--format", "{{.State.Status}}", id]);
        assert_eq!(state, "running", "{id}");
    }

    // Foreign first, then the other agent's, then ours: the first event about this test's
    // server that each runtime reports must be about its own container.
    docker(&["kill", &foreign]);
    docker(&["kill", &blue_instance.id]);
    docker(&["kill", &our_instance.id]);
    let ours_first = next_event(&mut our_events, DEADLINE, "our server", |e| {
        e.server_id == server
    })
    .await;
    let blue_first = next_event(&mut blue_events, DEADLINE, "our server", |e| {
        e.server_id == server
    })
    .await;

    assert_eq!(
        ours_first.instance_id, our_instance.id,
        "foreign {foreign}, blue's {}: {ours_first:?}",
        blue_instance.id
    );
    assert_eq!(
        blue_first.instance_id, blue_instance.id,
        "foreign {foreign}, ours {}: {blue_first:?}",
        our_instance.id
    );
}
