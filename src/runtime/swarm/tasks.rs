//! What Swarm reports about a service's tasks, read as an [`Instance`]: which tasks serve,
//! where (node address and published port), and which one the instance's endpoint is.
//!
//! Swarm keeps a history of tasks per slot (the ones it replaced, with desired state
//! `shutdown`). Only tasks Swarm still wants running count; of those, a task serves when it
//! runs and publishes its port on a node that is up. The endpoint is the oldest serving
//! task: the same task on every read while it lives, and a replacement Swarm starts later
//! does not take over from it, so the gateway does not move a session for nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::models::{Node, NodeState, Service, Task as SwarmTask, TaskState};

use super::super::docker::{OwnedLabels, owned_labels, parse_time};
use super::super::{Instance, InstanceState, Task, no_node_for_it};

/// A node's address by its id, for the nodes Swarm has an address for.
pub fn node_addresses(nodes: &[Node]) -> HashMap<String, NodeInfo> {
    nodes
        .iter()
        .filter_map(|n| {
            let id = n.id.clone()?;
            let status = n.status.as_ref();
            // A manager may report 0.0.0.0 as its status address; its manager address
            // (`ip:2377`) names the interface it was told to advertise.
            let addr = status
                .and_then(|s| s.addr.as_deref())
                .and_then(|a| a.parse::<IpAddr>().ok())
                .filter(|a| !a.is_unspecified())
                .or_else(|| {
                    n.manager_status
                        .as_ref()?
                        .addr
                        .as_deref()?
                        .parse::<SocketAddr>()
                        .ok()
                        .map(|s| s.ip())
                });
            // Only a node Swarm has given up on is out: after a change of leader every node
            // reads `unknown` until its next heartbeat, and its tasks still serve.
            let ready = !matches!(
                status.and_then(|s| s.state),
                Some(NodeState::DOWN | NodeState::DISCONNECTED)
            );
            Some((id, NodeInfo { addr, ready }))
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub addr: Option<IpAddr>,
    pub ready: bool,
}

/// The tasks of a service that Swarm wants running, as shown to operators, best first.
pub fn live_tasks(
    tasks: &[SwarmTask],
    service_id: &str,
    nodes: &HashMap<String, NodeInfo>,
) -> Vec<Task> {
    let mut live: Vec<&SwarmTask> = tasks
        .iter()
        .filter(|t| t.service_id.as_deref() == Some(service_id))
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .collect();
    live.sort_by(|a, b| {
        serving_rank(a, nodes)
            .cmp(&serving_rank(b, nodes))
            .then(parse_time(a.created_at.as_deref()).cmp(&parse_time(b.created_at.as_deref())))
            .then(a.slot.cmp(&b.slot))
            .then(a.id.cmp(&b.id))
    });
    live.into_iter().map(|t| task_view(t, nodes)).collect()
}

/// 0 for a task that serves, 1 otherwise: serving tasks sort first.
fn serving_rank(task: &SwarmTask, nodes: &HashMap<String, NodeInfo>) -> u8 {
    u8::from(task_view(task, nodes).serving_at().is_none())
}

fn task_view(task: &SwarmTask, nodes: &HashMap<String, NodeInfo>) -> Task {
    let status = task.status.as_ref();
    let node = task.node_id.clone().unwrap_or_default();
    let info = nodes.get(&node);
    let port = status
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.as_ref())
        .and_then(|ports| ports.iter().find_map(|p| p.published_port))
        .and_then(|p| u16::try_from(p).ok());
    // A task on a node Swarm lost is not reachable, whatever its last report said.
    let endpoint = match (info, port) {
        (
            Some(NodeInfo {
                addr: Some(a),
                ready: true,
            }),
            Some(p),
        ) => Some(SocketAddr::new(*a, p)),
        _ => None,
    };
    let mut state = status
        .and_then(|s| s.state)
        .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    if info.is_some_and(|i| !i.ready) && state == "running" {
        state = "node down".to_owned();
    }
    let message = status.and_then(|s| {
        s.err
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| s.message.clone().filter(|m| !m.is_empty()))
    });
    Task {
        id: task.id.clone().unwrap_or_default(),
        node,
        endpoint,
        state,
        desired_state: task
            .desired_state
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        message,
    }
}

/// Swarm's reason when it cannot place a task of the service anywhere (it keeps the task
/// `pending` with "no suitable node (...)" and tries again whenever the nodes change).
pub fn unplaceable(tasks: &[SwarmTask]) -> Option<String> {
    tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter_map(|t| t.status.as_ref())
        .filter(|s| s.state == Some(TaskState::PENDING))
        .find_map(|s| {
            [s.err.as_deref(), s.message.as_deref()]
                .into_iter()
                .flatten()
                .find(|m| no_node_for_it(m))
                .map(str::to_owned)
        })
}

/// A service of ours and its tasks as an instance; `Err` when our labels on it are broken.
pub fn instance(
    service: &Service,
    tasks: &[SwarmTask],
    nodes: &HashMap<String, NodeInfo>,
) -> Result<Instance, String> {
    let id = service.id.clone().unwrap_or_default();
    let spec = service.spec.as_ref();
    let labels = spec.and_then(|s| s.labels.clone()).unwrap_or_default();
    let OwnedLabels {
        server_id,
        version,
        revision,
        spec_hash,
    } = owned_labels(&labels)?;
    let replicas = spec
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1);
    let live = live_tasks(tasks, &id, nodes);
    let serving = live.iter().find(|t| t.serving_at().is_some());
    let state = if replicas == 0 {
        InstanceState::Exited { code: None }
    } else if serving.is_some() {
        InstanceState::Running
    } else {
        InstanceState::Other {
            detail: match live.first() {
                Some(t) => format!(
                    "no task serves yet: {}{}",
                    t.state,
                    t.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
                None => "no task scheduled".to_owned(),
            },
        }
    };
    let started_at = serving
        .and_then(|s| {
            tasks
                .iter()
                .find(|t| t.id.as_deref() == Some(s.id.as_str()))
        })
        .and_then(|t| t.status.as_ref()?.timestamp.clone())
        .or_else(|| service.created_at.clone());
    Ok(Instance {
        id,
        server_id,
        version,
        revision,
        spec_hash,
        host_port: serving.and_then(|t| t.endpoint).map(|e| e.port()),
        host: serving.and_then(|t| t.endpoint).map(|e| e.ip()),
        tasks: live,
        state,
        started_at: parse_time(started_at.as_deref()),
        image_digest: None,
    })
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        EndpointPortConfig, NodeStatus, PortStatus, ServiceSpec, ServiceSpecMode,
        ServiceSpecModeReplicated, TaskStatus,
    };

    use super::*;
    use crate::runtime::labels;

    fn node(id: &str, addr: &str, state: NodeState) -> Node {
        Node {
            id: Some(id.into()),
            status: Some(NodeStatus {
                state: Some(state),
                addr: Some(addr.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(
        id: &str,
        node: &str,
        slot: i64,
        state: TaskState,
        desired: TaskState,
        port: Option<i64>,
    ) -> SwarmTask {
        SwarmTask {
            id: Some(id.into()),
            service_id: Some("svc".into()),
            node_id: Some(node.into()),
            slot: Some(slot),
            created_at: Some(format!("2026-12-05T10:00:0{slot}Z")),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some("2026-12-05T10:00:09Z".into()),
                port_status: Some(PortStatus {
                    ports: port.map(|p| {
                        vec![EndpointPortConfig {
                            published_port: Some(p),
                            ..Default::default()
                        }]
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(replicas: i64) -> Service {
        Service {
            id: Some("svc".into()),
            spec: Some(ServiceSpec {
                labels: Some(HashMap::from([
                    (labels::MANAGED.to_owned(), "true".to_owned()),
                    (labels::SERVER.to_owned(), "echo".to_owned()),
                    (labels::VERSION.to_owned(), "1.0.0".to_owned()),
                    (labels::REVISION.to_owned(), "abc".to_owned()),
                    (labels::SPEC.to_owned(), "f00".to_owned()),
                ])),
                mode: Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated {
                        replicas: Some(replicas),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nodes() -> HashMap<String, NodeInfo> {
        node_addresses(&[
            node("n1", "10.0.0.2", NodeState::READY),
            node("n2", "10.0.0.3", NodeState::READY),
            node("n3", "10.0.0.4", NodeState::DOWN),
        ])
    }

    #[test]
    fn the_endpoint_is_the_first_serving_task_and_replaced_tasks_are_left_out() {
        let tasks = [
            task(
                "old",
                "n1",
                1,
                TaskState::RUNNING,
                TaskState::SHUTDOWN,
                Some(30001),
            ),
            task(
                "b",
                "n2",
                2,
                TaskState::RUNNING,
                TaskState::RUNNING,
                Some(30002),
            ),
            task(
                "a",
                "n1",
                1,
                TaskState::RUNNING,
                TaskState::RUNNING,
                Some(30003),
            ),
        ];
        let i = instance(&service(2), &tasks, &nodes()).unwrap();
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.base_url().as_deref(), Some("http://10.0.0.2:30003"));
        let ids: Vec<&str> = i.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(i.server_id, "echo");
    }

    #[test]
    fn a_task_on_a_node_that_is_down_does_not_serve_and_its_replacement_takes_over() {
        let tasks = [
            task(
                "lost",
                "n3",
                1,
                TaskState::RUNNING,
                TaskState::RUNNING,
                Some(30001),
            ),
            task(
                "new",
                "n2",
                2,
                TaskState::RUNNING,
                TaskState::RUNNING,
                Some(30002),
            ),
        ];
        let i = instance(&service(2), &tasks, &nodes()).unwrap();
        assert_eq!(i.addr(), Some("10.0.0.3:30002".parse().unwrap()));
        assert_eq!(i.tasks[1].state, "node down");
        assert_eq!(i.tasks[1].endpoint, None);
    }

    #[test]
    fn without_a_serving_task_the_instance_says_why_and_scaled_to_zero_is_exited() {
        let mut pending = task("p", "n1", 1, TaskState::PENDING, TaskState::RUNNING, None);
        pending.status.as_mut().unwrap().err = Some("no suitable node".into());
        let i = instance(&service(1), &[pending], &nodes()).unwrap();
        assert_eq!(
            i.state,
            InstanceState::Other {
                detail: "no task serves yet: pending (no suitable node)".into()
            }
        );
        assert_eq!(i.addr(), None);
        let i = instance(&service(0), &[], &nodes()).unwrap();
        assert_eq!(i.state, InstanceState::Exited { code: None });
    }

    #[test]
    fn a_task_swarm_cannot_place_is_told_apart_from_one_on_its_way() {
        let mut stuck = task("p", "", 1, TaskState::PENDING, TaskState::RUNNING, None);
        stuck.status.as_mut().unwrap().err =
            Some("no suitable node (scheduling constraints not satisfied on 3 nodes)".into());
        assert_eq!(
            unplaceable(&[stuck.clone()]).as_deref(),
            Some("no suitable node (scheduling constraints not satisfied on 3 nodes)")
        );
        let coming = task("c", "n1", 1, TaskState::PENDING, TaskState::RUNNING, None);
        assert_eq!(unplaceable(&[coming]), None);
        stuck.desired_state = Some(TaskState::SHUTDOWN);
        assert_eq!(
            unplaceable(&[stuck]),
            None,
            "a task Swarm gave up is not the service's"
        );
    }

    #[test]
    fn a_task_on_its_way_marks_the_instance_as_being_replaced_unless_no_node_can_take_it() {
        let coming = task("c", "n1", 1, TaskState::STARTING, TaskState::RUNNING, None);
        let i = instance(&service(1), &[coming], &nodes()).unwrap();
        assert!(i.being_replaced(), "{i:?}");
        let mut stuck = task("p", "", 1, TaskState::PENDING, TaskState::RUNNING, None);
        stuck.status.as_mut().unwrap().err = Some("no suitable node (constraints)".into());
        let i = instance(&service(1), &[stuck], &nodes()).unwrap();
        assert!(!i.being_replaced(), "{i:?}");
        let serving = task(
            "s",
            "n1",
            1,
            TaskState::RUNNING,
            TaskState::RUNNING,
            Some(30001),
        );
        let i = instance(&service(1), &[serving], &nodes()).unwrap();
        assert!(
            !i.being_replaced(),
            "a serving instance is running, not replaced"
        );
    }

    #[test]
    fn a_node_of_unknown_state_still_serves_and_a_held_port_is_not_unplaceable() {
        let n = node_addresses(&[node("u", "10.0.0.5", NodeState::UNKNOWN)]);
        assert!(
            n["u"].ready,
            "every node reads unknown after a leader change"
        );
        assert!(!no_node_for_it(
            "no suitable node (host-mode port already in use on 1 node)"
        ));
        assert!(no_node_for_it(
            "no suitable node (scheduling constraints not satisfied on 3 nodes)"
        ));
    }

    #[test]
    fn a_manager_reporting_no_address_is_found_by_its_manager_address() {
        let mut m = node("m", "0.0.0.0", NodeState::READY);
        m.manager_status = Some(bollard::models::ManagerStatus {
            addr: Some("10.0.0.9:2377".into()),
            ..Default::default()
        });
        let n = node_addresses(&[m]);
        assert_eq!(n["m"].addr, Some("10.0.0.9".parse().unwrap()));
    }
}
