//! `--runtime swarm` on a real three-node Docker Swarm (one manager, two workers, each a
//! dockerd in a network namespace of its own; see `tests/kit/swarm.rs`): placement by
//! constraint, upgrades and rollbacks with the gateway in front, and a node that dies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_orchestration::settings::RuntimeChoice;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use serde_json::{Value, json};

use crate::support::agent::{Options, TestAgent};
use crate::support::docker::example_image;
use crate::support::eventually;
use crate::support::git::ManifestRepo;
use crate::support::mcp::{call, text};
use crate::support::swarm::{Swarm, swarm_or_skip};

/// Services start in a second or two; a loaded 2-core machine with three engines is slower.
const DEADLINE: Duration = Duration::from_secs(60);

type Client = RunningService<RoleClient, ClientConfig>;

/// A swarm of three nodes with the example server's images loaded, built off the async
/// runtime's threads (the kit blocks).
async fn swarm(versions: &[&str]) -> Arc<Swarm> {
    let versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let swarm = Swarm::start(3);
        for v in &versions {
            swarm.load_image(&example_image(v));
        }
        Arc::new(swarm)
    })
    .await
    .unwrap()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// One server entry of a schema 1.2 manifest on the example image.
fn server(id: &str, version: &str, docker_extra: &str) -> String {
    format!(
        "  - id: {id}\n    version: \"{version}\"\n    docker:\n      image: mcp-orch-test/example-server\n      port: 8080\n{docker_extra}    health_check: {{ interval_seconds: 0.25, timeout_seconds: 0.2, failure_threshold: 2, success_threshold: 1 }}\n    recovery: {{ max_attempts: 3, backoff_seconds: 0.5 }}\n"
    )
}

fn manifest(servers: &[String]) -> String {
    format!("version: \"1.2\"\nservers:\n{}", servers.concat())
}

async fn agent(repo: &ManifestRepo, swarm: &Swarm) -> TestAgent {
    TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            runtime: RuntimeChoice::Swarm,
            docker_host: Some(swarm.docker_host().to_owned()),
            gateway: true,
            drain: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await
}

async fn gateway_client(agent: &TestAgent, tools: usize) -> Arc<Client> {
    let gateway = agent.gateway.clone().unwrap();
    let client = Arc::new(crate::support::mcp::client(&gateway).await);
    eventually(DEADLINE, "the gateway's tools", || async {
        (client.list_all_tools().await.ok()?.len() == tools).then_some(())
    })
    .await;
    client
}

/// Calls `tool` in a loop until `stop`: answers and failures (a call that errs, answers
/// `isError`, or gets no answer in 10 s).
async fn caller(
    client: Arc<Client>,
    tool: String,
    stop: tokio_util::sync::CancellationToken,
) -> (usize, Vec<String>) {
    let (mut ok, mut failures) = (0, Vec::new());
    while !stop.is_cancelled() {
        let params = CallToolRequestParams::new(tool.clone())
            .with_arguments(json!({ "ms": 100 }).as_object().unwrap().clone());
        match tokio::time::timeout(Duration::from_secs(10), client.call_tool(params)).await {
            Ok(Ok(r)) if r.is_error != Some(true) => ok += 1,
            Ok(Ok(r)) => failures.push(format!("tool error: {r:?}")),
            Ok(Err(e)) => failures.push(format!("protocol error: {e}")),
            Err(_) => failures.push("no answer within 10 s".to_owned()),
        }
    }
    (ok, failures)
}

/// The node (1-based) of each serving task of `server`, from the agent's own view, checked
/// against the node address of its endpoint.
async fn nodes_of(agent: &TestAgent, swarm: &Swarm, server: &str) -> Vec<usize> {
    let view = agent.server(server).await.unwrap_or(Value::Null);
    view["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "running" && t["endpoint"].is_string())
        .filter_map(|t| {
            let node = swarm.node_index(t["node"].as_str()?)?;
            let endpoint = t["endpoint"].as_str()?;
            endpoint
                .starts_with(&format!("{}:", swarm.node_addr(node)))
                .then_some(node)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swarm_places_by_constraint_upgrades_and_rolls_back_under_load_and_follows_a_dead_node() {
    let name = "swarm_places_by_constraint_upgrades_and_rolls_back";
    if !swarm_or_skip(name) {
        return;
    }
    let swarm = swarm(&["1.0.0", "1.1.0", "1.2.0"]).await;
    // n3 is beta's pool; n2 joins it later, when n3 is about to die.
    swarm.manager(&["node", "update", "--label-add", "pool=b", swarm.node_id(3)]);
    let alpha = |version: &str, extra: &str| {
        server(
            "alpha",
            version,
            &format!("      placement: {{ constraints: [\"node.labels.name==n2\"] }}\n{extra}"),
        )
    };
    let beta = server(
        "beta",
        "1.0.0",
        "      placement: { constraints: [\"node.labels.pool==b\"] }\n",
    );
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[alpha("1.0.0", ""), beta.clone()]),
        "two servers",
    );
    let agent = agent(&repo, &swarm).await;
    agent.wait_running("alpha", "1.0.0", DEADLINE).await;
    agent.wait_running("beta", "1.0.0", DEADLINE).await;

    // Each where its constraint put it, as the agent reports and as Swarm itself says.
    assert_eq!(nodes_of(&agent, &swarm, "alpha").await, [2]);
    assert_eq!(nodes_of(&agent, &swarm, "beta").await, [3]);
    let alpha_service = agent.server("alpha").await.unwrap()["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tasks = swarm.running_tasks(&alpha_service);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].node, 2);
    let endpoint = agent.server("alpha").await.unwrap()["endpoint"].clone();
    assert_eq!(
        endpoint,
        format!(
            "http://{}:{}/mcp",
            swarm.node_addr(2),
            tasks[0].published_ports[0]
        ),
        "the endpoint is the task's node address and host-mode port"
    );

    let client = gateway_client(&agent, 6).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let callers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(caller(client.clone(), "alpha_sleep".into(), stop.clone())))
        .collect();

    // An upgrade by a commit: a 1.1.0 service beside 1.0.0's, gated, then switched.
    repo.push_manifest(
        &manifest(&[alpha("1.1.0", ""), beta.clone()]),
        "alpha 1.1.0",
    );
    agent.wait_running("alpha", "1.1.0", DEADLINE).await;
    eventually(DEADLINE, "a call answered by alpha 1.1.0", || async {
        let r = call(&client, "alpha_server_version", json!({})).await;
        (text(&r) == "1.1.0").then_some(())
    })
    .await;
    let upgraded = agent.server("alpha").await.unwrap();
    assert_ne!(upgraded["instance_id"], alpha_service.as_str());
    // The record says which strategy ran, and why.
    let (_, rollouts) = agent.get("/servers/alpha/rollouts?limit=1").await;
    let (_, detail) = agent
        .get(&format!("/rollouts/{}", rollouts["rollouts"][0]["id"]))
        .await;
    let started = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "started")
        .unwrap_or_else(|| panic!("no started step: {detail}"))["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        started.starts_with("1.0.0 → 1.1.0 (beside, trigger commit): a Swarm service for the new version beside the old one's, not Swarm's rolling update"),
        "{started}"
    );
    assert_eq!(nodes_of(&agent, &swarm, "alpha").await, [2]);
    eventually(DEADLINE, "1.0.0's service to be removed", || async {
        let services = swarm.manager(&["service", "ls", "--quiet"]);
        (!services.contains(&alpha_service[..12])).then_some(())
    })
    .await;

    // A version that fails its health gate: rolled back, 1.1.0 serving throughout.
    repo.push_manifest(
        &manifest(&[
            alpha("1.2.0", "      env: { EXAMPLE_SERVER_HEALTH: unhealthy }\n"),
            beta.clone(),
        ]),
        "alpha 1.2.0, broken",
    );
    eventually(DEADLINE, "1.2.0 to be rolled back", || async {
        let (_, r) = agent.get("/servers/alpha/rollouts?limit=1").await;
        (r["rollouts"][0]["to_version"] == "1.2.0" && r["rollouts"][0]["outcome"] == "rolled_back")
            .then_some(())
    })
    .await;
    let kept = agent.server("alpha").await.unwrap();
    assert_eq!(kept["instance_id"], upgraded["instance_id"], "{kept}");
    let (_, failed) = agent.get("/servers/alpha/rollouts?limit=1").await;
    assert_eq!(failed["rollouts"][0]["strategy"], "beside", "{failed}");

    // beta's node dies. Swarm moves its task to n2 (now in the pool too); the agent
    // follows and the gateway routes there, while alpha answers every call.
    swarm.manager(&["node", "update", "--label-add", "pool=b", swarm.node_id(2)]);
    let before = agent.server("beta").await.unwrap();
    let stopped = Instant::now();
    let s = swarm.clone();
    blocking(move || s.stop_node(3)).await;
    eventually(DEADLINE, "beta serving from n2, healthy", || async {
        let now = agent.server("beta").await?;
        (nodes_of(&agent, &swarm, "beta").await == [2] && now["health"] == "healthy").then_some(())
    })
    .await;
    let moved_after = stopped.elapsed();
    eventually(
        DEADLINE,
        "a call through the gateway answered by beta",
        || async {
            let r = call(&client, "beta_server_version", json!({})).await;
            (r.is_error != Some(true) && text(&r) == "1.0.0").then_some(())
        },
    )
    .await;
    eprintln!(
        "node 3 stopped → beta healthy on n2 and routed in {:.1?}",
        stopped.elapsed()
    );
    // The move is on record, naming the task's new node.
    let n2 = swarm.node_id(2)[..12].to_owned();
    let health = eventually(DEADLINE, "the move in beta's health events", || async {
        let (_, h) = agent.get("/servers/beta/health/events").await;
        let moved = h["events"].as_array()?.iter().any(|e| {
            e["kind"] == "rescheduled"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("on node {n2}")) && d.contains(" serves"))
        });
        moved.then_some(h)
    })
    .await;
    let after = agent.server("beta").await.unwrap();
    let (_, rollouts) = agent.get("/servers/beta/rollouts?limit=5").await;
    assert_eq!(
        after["instance_id"], before["instance_id"],
        "the agent followed Swarm's replacement instead of starting a service of its own: {rollouts:#} {health:#}"
    );
    let (_, recovery) = agent.get("/servers/beta/rollouts?limit=5").await;
    assert!(
        recovery["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger"] != "recovery"),
        "recovery waited for Swarm: {recovery}"
    );
    assert!(moved_after < DEADLINE);

    stop.cancel();
    let mut answered = 0;
    for c in callers {
        let (ok, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "failed calls: {failures:#?}");
        answered += ok;
    }
    assert!(answered >= 6, "only {answered} calls were answered");
    assert!(!client.is_closed(), "one client session throughout");

    // A placement no node satisfies fails its start with Swarm's reason, in seconds rather
    // than at the start deadline, and leaves no service behind.
    let delta = server(
        "delta",
        "1.0.0",
        "      placement: { constraints: [\"node.labels.name==nowhere\"] }\n",
    );
    repo.push_manifest(
        &manifest(&[alpha("1.1.0", ""), beta.clone(), delta]),
        "delta, placed nowhere",
    );
    let asked = Instant::now();
    let failed = eventually(DEADLINE, "delta to fail with Swarm's reason", || async {
        let d = agent.server("delta").await?;
        (d["state"] == "failed").then_some(d)
    })
    .await;
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Swarm cannot place its tasks: no suitable node"),
        "{failed}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    let services = swarm.manager(&["service", "ls", "--format", "{{.Name}}"]);
    assert!(!services.contains("mcp-delta-"), "{services}");

    Arc::try_unwrap(client).ok().unwrap().cancel().await.ok();
    agent.stop().await;
    // The teardown blocks too.
    blocking(move || drop(swarm)).await;
}

/// The calls the gateway sent on its session with each of gamma's tasks, by endpoint.
async fn sent_by_task(agent: &TestAgent) -> std::collections::BTreeMap<String, u64> {
    let base = agent.gateway.clone().unwrap();
    let url = format!("{}/backends", base.trim_end_matches("/mcp"));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    let gamma = body["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "gamma")
        .unwrap_or_else(|| panic!("no gamma in {body:#}"));
    gamma["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let endpoint = s["endpoint"].as_str().unwrap();
            let addr = endpoint
                .trim_start_matches("http://")
                .trim_end_matches("/mcp");
            (addr.to_owned(), s["calls_sent"].as_u64().unwrap())
        })
        .collect()
}

/// Each of `clients` calls gamma_echo once: all answered, and on which task each landed.
async fn round(agent: &TestAgent, clients: &[Client], what: &str) -> Vec<String> {
    let mut landed = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let before = sent_by_task(agent).await;
        let r = call(c, "gamma_echo", json!({ "text": "hi" })).await;
        assert_ne!(r.is_error, Some(true), "{what}, client {i}: {}", text(&r));
        let after = sent_by_task(agent).await;
        let moved: Vec<&String> = after
            .iter()
            .filter(|(task, n)| before.get(*task).copied().unwrap_or(0) < **n)
            .map(|(task, _)| task)
            .collect();
        assert_eq!(moved.len(), 1, "{what}, client {i}: {before:?} → {after:?}");
        landed.push(moved[0].clone());
    }
    landed
}

/// With both tasks healthy, each client's calls stay on one task and the clients spread
/// over both; a task that fails its probes gets no calls (its clients go to the other, all
/// answered) until it passes again, when its clients come back.
async fn spreads_clients_over_healthy_replicas(agent: &TestAgent) {
    let healthy_tasks = || async {
        let view = agent.server("gamma").await?;
        let tasks: Vec<String> = view["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["health"] == "healthy")
            .filter_map(|t| t["endpoint"].as_str().map(str::to_owned))
            .collect();
        let sessions = sent_by_task(agent).await;
        (tasks.len() == 2 && sessions.len() == 2).then_some(tasks)
    };
    let tasks = eventually(
        DEADLINE,
        "both tasks healthy, a session with each",
        healthy_tasks,
    )
    .await;
    let gateway = agent.gateway.clone().unwrap();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(crate::support::mcp::client(&gateway).await);
    }
    let first = round(agent, &clients, "both healthy").await;
    assert_eq!(
        round(agent, &clients, "both healthy, again").await,
        first,
        "a client changed task"
    );
    for task in &tasks {
        assert!(first.contains(task), "no client on {task}: {first:?}");
    }

    // The task the view does not route to fails its probes.
    let routed = agent.server("gamma").await.unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let replica = tasks.iter().find(|t| **t != routed).unwrap().clone();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let set = |mode: &'static str| {
        let request = http.post(format!("http://{replica}/admin/health/{mode}"));
        async move { assert!(request.send().await.unwrap().status().is_success()) }
    };
    let task_health = |want: &'static str| {
        let replica = replica.clone();
        move || {
            let replica = replica.clone();
            async move {
                let view = agent.server("gamma").await?;
                view["tasks"]
                    .as_array()?
                    .iter()
                    .any(|t| t["endpoint"] == replica.as_str() && t["health"] == want)
                    .then_some(())
            }
        }
    };
    set("unhealthy").await;
    eventually(
        DEADLINE,
        "the replica shown unhealthy",
        task_health("unhealthy"),
    )
    .await;
    let shunned = round(agent, &clients, "replica unhealthy").await;
    assert!(shunned.iter().all(|t| *t == routed), "{shunned:?}");
    set("healthy").await;
    eventually(
        DEADLINE,
        "the replica shown healthy",
        task_health("healthy"),
    )
    .await;
    assert_eq!(round(agent, &clients, "replica healthy again").await, first);
    for c in clients {
        c.cancel().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_with_two_replicas_answers_every_call_through_the_gateway_when_either_node_dies() {
    let name = "a_server_with_two_replicas_answers_every_call";
    if !swarm_or_skip(name) {
        return;
    }
    let swarm = swarm(&["1.0.0"]).await;
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &manifest(&[server(
            "gamma",
            "1.0.0",
            "      replicas: 2\n      placement: { constraints: [\"node.role==worker\"], max_replicas_per_node: 1 }\n",
        )]),
        "two replicas, one per worker",
    );
    let agent = agent(&repo, &swarm).await;
    agent.wait_running("gamma", "1.0.0", DEADLINE).await;
    let both = || async {
        let mut nodes = nodes_of(&agent, &swarm, "gamma").await;
        nodes.sort();
        (nodes == [2, 3]).then_some(())
    };
    eventually(DEADLINE, "a task on each worker", both).await;
    let client = gateway_client(&agent, 3).await;
    spreads_clients_over_healthy_replicas(&agent).await;

    // Each round kills the node the gateway routes to: first one worker, then the other.
    for round in 0..2 {
        let view = agent.server("gamma").await.unwrap();
        let routed = view["endpoint"].as_str().unwrap().to_owned();
        let down = (2..=3)
            .find(|n| routed.starts_with(&format!("http://{}:", swarm.node_addr(*n))))
            .unwrap_or_else(|| panic!("round {round}: {routed} is on no worker"));
        let up = 5 - down;
        let s = swarm.clone();
        blocking(move || s.stop_node(down)).await;
        // Every call from the moment the node is gone is answered: the monitor moves to
        // the other task at its next probe, long before Swarm declares the node down, and
        // the gateway sends a call that found the dead task there.
        let since = Instant::now();
        let mut failures = Vec::new();
        let mut calls = 0;
        while since.elapsed() < Duration::from_secs(2) {
            let params = CallToolRequestParams::new("gamma_echo")
                .with_arguments(json!({ "text": "hi" }).as_object().unwrap().clone());
            match tokio::time::timeout(Duration::from_secs(10), client.call_tool(params)).await {
                Ok(Ok(r)) if r.is_error != Some(true) => {}
                other => failures.push(format!("{other:?}")),
            }
            calls += 1;
        }
        assert!(
            failures.is_empty(),
            "round {round}, node {down} down: {failures:#?}"
        );
        assert!(calls >= 5, "only {calls} calls");
        let now = agent.server("gamma").await.unwrap();
        assert!(
            now["endpoint"]
                .as_str()
                .unwrap()
                .starts_with(&format!("http://{}:", swarm.node_addr(up))),
            "{now}"
        );
        let (_, h) = agent.get("/servers/gamma/health/events").await;
        let failovers = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "failover")
            .count();
        assert_eq!(failovers, round + 1, "{h:#}");
        // Back up, the node gets its task again (one per node), and the next round can
        // fail over to it.
        let s = swarm.clone();
        blocking(move || s.start_node(down)).await;
        eventually(DEADLINE, "a task on each worker again", both).await;
    }
    Arc::try_unwrap(client).ok().unwrap().cancel().await.ok();
    agent.stop().await;
    // The teardown blocks too.
    blocking(move || drop(swarm)).await;
}
