//! The swarm kit (`tests/kit/swarm.rs`) against a real three-node swarm: what the Swarm
//! tests build on (placement by label, a port published on a worker's address, a node
//! failure the manager notices, a node that comes back) works here before any of them
//! relies on it.

use std::net::{IpAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit::swarm::{Swarm, swarm_or_skip};
use crate::support::docker::{DEADLINE, example_image, http};
use crate::support::eventually;

/// `docker args` with `DOCKER_HOST=host`, as a program the test starts would run it.
fn docker_at(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host)
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "docker {args:?} at {host}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn swarm_kit_places_by_label_publishes_on_the_node_and_sees_it_go_down_and_come_back() {
    let test = "swarm_kit_places_by_label_publishes_on_the_node_and_sees_it_go_down_and_come_back";
    if !swarm_or_skip(test) {
        return;
    }
    let image = example_image("1.0.0");
    let started = Instant::now();
    let swarm = Swarm::start(3);
    swarm.load_image(&image);
    assert_eq!(swarm.nodes(), 3);
    for i in 1..=swarm.nodes() {
        assert_eq!(swarm.node_state(i), "ready", "node {i}");
        let label = swarm.manager(&[
            "node",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"name\"}}",
            swarm.node_id(i),
        ]);
        assert_eq!(label, format!("n{i}"), "node {i}'s name label");
    }
    // What an agent under test is given: DOCKER_HOST reaches the manager.
    let nodes = docker_at(swarm.docker_host(), &["node", "ls", "--quiet"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");

    // A node reaches the host at the bridge address: its engine's attempt to pull from a
    // "registry" there arrives at a listener of this test, from the node's address. The
    // listener hangs up at once, so the pull fails at once, as any pull must.
    let listener = TcpListener::bind((swarm.bridge_addr(), 0))
        .expect("the bridge address is one of the host's");
    let probe = format!(
        "{}:{}/probe/probe:1",
        swarm.bridge_addr(),
        listener.local_addr().expect("local addr").port()
    );
    let (connected, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = connected.send(listener.accept().map(|(_, from)| from.ip()));
    });
    let pulled = swarm.try_docker_on(3, &["pull", "--quiet", &probe]);
    assert!(pulled.is_err(), "{pulled:?}");
    let from = arrived
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("node 3 did not connect to {probe}"))
        .expect("accept");
    assert_eq!(from, IpAddr::V4(swarm.node_addr(3)));

    let service = format!("kit-{}", std::process::id());
    swarm.manager(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        &service,
        "--constraint",
        "node.labels.name==n2",
        "--publish",
        "mode=host,target=8080",
        &image,
    ]);
    let task = eventually(DEADLINE, "a running task of the service", || async {
        swarm
            .running_tasks(&service)
            .into_iter()
            .find(|t| !t.published_ports.is_empty())
    })
    .await;
    assert_eq!(task.node, 2, "placed by its constraint: {task:?}");
    // Node 2's own engine runs the task's container.
    let containers = docker_at(
        swarm.node_docker_host(2),
        &[
            "ps",
            "--quiet",
            "--filter",
            &format!("label=com.docker.swarm.task.id={}", task.id),
        ],
    );
    assert_eq!(
        containers.lines().count(),
        1,
        "{task:?} on node 2: {containers:?}"
    );

    // Reached from the host on the node's own address (the routing mesh is not used).
    let url = format!(
        "http://{}:{}/health",
        swarm.node_addr(2),
        task.published_ports[0]
    );
    let client = http();
    let body = eventually(DEADLINE, &format!("200 from {url}"), || async {
        let response = client.get(&url).send().await.ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        response.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(body["version"], "1.0.0", "{body}");

    let failed = Instant::now();
    swarm.stop_node(2);
    swarm.wait_node_state(2, "down", DEADLINE);
    eprintln!("node 2 seen down {:.1?} after it stopped", failed.elapsed());
    assert!(
        client.get(&url).send().await.is_err(),
        "the stopped node's server still answers at {url}"
    );

    swarm.start_node(2);
    assert_eq!(swarm.node_state(2), "ready");
    eprintln!("{test}: {:.1?}", started.elapsed());
}
