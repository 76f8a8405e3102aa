//! Which of a server's tasks a call goes to, when its instance has several (Swarm
//! replicas): each client is kept on one task by rendezvous hashing of its session id with
//! each task's endpoint, over the routed task and the replicas the monitor last found
//! healthy. A task that leaves (or fails a probe) moves only its own clients; one that
//! comes back takes them back. A client without a session (a revision without them) has
//! nothing to keep, so each of its calls gets a key of its own and they spread evenly.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::backends::Backend;
use crate::fleet::ServerView;
use crate::health::HealthState;

/// The key a client's calls are placed by: its session id's hash, or a fresh one per call
/// for a client without a session.
pub fn affinity(session_id: Option<&str>) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    match session_id {
        Some(id) => hash(&id),
        None => hash(&NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

fn hash(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// How strongly `affinity` prefers the task at `endpoint`.
fn weight(affinity: u64, endpoint: &str) -> u64 {
    hash(&(affinity, endpoint))
}

/// The replica `affinity` ranks above the routed backend and every other candidate, or
/// `None` when the routed backend itself ranks first.
pub fn pick<'a>(
    affinity: u64,
    routed: &Backend,
    candidates: impl Iterator<Item = &'a Backend>,
) -> Option<&'a Backend> {
    let routed_weight = weight(affinity, &routed.endpoint);
    candidates
        .map(|r| (weight(affinity, &r.endpoint), r))
        .filter(|(w, _)| *w > routed_weight)
        .max_by_key(|(w, _)| *w)
        .map(|(_, r)| r)
}

/// The instance and endpoint of each of `server`'s serving tasks other than the one the
/// view routes to, each endpoint with the routed endpoint's path.
pub fn replica_endpoints(server: &ServerView) -> Vec<(String, String)> {
    let (Some(instance), Some(endpoint)) = (&server.instance_id, &server.endpoint) else {
        return Vec::new();
    };
    let routed = crate::runtime::endpoint_addr(endpoint);
    server
        .tasks
        .iter()
        .filter_map(|t| t.task.serving_at())
        .filter(|addr| Some(*addr) != routed)
        .map(|addr| (instance.clone(), at(endpoint, addr)))
        .collect()
}

/// The endpoints of `server`'s tasks the monitor last found healthy.
pub fn healthy_endpoints(server: &ServerView) -> Vec<SocketAddr> {
    server
        .tasks
        .iter()
        .filter(|t| t.health == Some(HealthState::Healthy))
        .filter_map(|t| t.task.serving_at())
        .collect()
}

/// `endpoint` (`http://HOST:PORT/PATH`) at `addr` instead.
fn at(endpoint: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("http", endpoint));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{addr}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_moves_to_another_address_and_keeps_its_path() {
        let addr: SocketAddr = "10.0.0.3:30002".parse().unwrap();
        assert_eq!(
            at("http://10.0.0.2:30001/mcp", addr),
            "http://10.0.0.3:30002/mcp"
        );
        assert_eq!(at("http://10.0.0.2:30001", addr), "http://10.0.0.3:30002");
    }

    /// Which of `endpoints` each of 600 clients goes to.
    fn placements(endpoints: &[&str]) -> Vec<usize> {
        (0..600)
            .map(|client| {
                let key = affinity(Some(&format!("session-{client}")));
                (0..endpoints.len())
                    .max_by_key(|i| weight(key, endpoints[*i]))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn clients_spread_over_tasks_and_a_task_leaving_moves_only_its_own_clients() {
        let three = ["http://a:1/mcp", "http://b:1/mcp", "http://c:1/mcp"];
        let before = placements(&three);
        for task in 0..3 {
            let n = before.iter().filter(|p| **p == task).count();
            assert!((120..=280).contains(&n), "task {task} has {n} of 600");
        }
        // c leaves: a's and b's clients stay where they were.
        let after = placements(&three[..2]);
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b);
            }
        }
        // The same session always lands on the same task.
        assert_eq!(placements(&three), before);
    }

    #[test]
    fn a_client_without_a_session_gets_a_new_key_each_call() {
        assert_ne!(affinity(None), affinity(None));
        assert_eq!(affinity(Some("s")), affinity(Some("s")));
    }
}
