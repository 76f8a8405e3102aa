//! Following Swarm's tasks. Engine API 1.41 has no task events, so the runtime reads the
//! tasks of its services a few times a second and reports what changed: a serving task
//! that went away (its node died, its container exited) and a task that began serving
//! (Swarm's replacement). The agent refreshes the endpoint it publishes on either, and a
//! server left with no serving task is unhealthy at once, without waiting for a probe.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use jiff::Timestamp;

use super::super::{Instance, RuntimeEvent, RuntimeEventKind};

/// What the watch remembers of one service between two reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub server_id: String,
    /// Serving tasks: id, node and endpoint.
    pub serving: BTreeSet<(String, String, SocketAddr)>,
    /// Whether any task of it has served since the watch first saw it: until then it is
    /// starting (the agent's rollout), and its tasks appearing is no move.
    pub served: bool,
}

/// Services by id, as the watch saw them; `before` is the previous read.
pub fn seen(
    instances: &[Instance],
    before: Option<&HashMap<String, Seen>>,
) -> HashMap<String, Seen> {
    instances
        .iter()
        .map(|i| {
            let serving: BTreeSet<(String, String, SocketAddr)> = i
                .tasks
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.node.clone(), t.serving_at()?)))
                .collect();
            let served =
                !serving.is_empty() || before.and_then(|b| b.get(&i.id)).is_some_and(|s| s.served);
            (
                i.id.clone(),
                Seen {
                    server_id: i.server_id.clone(),
                    serving,
                    served,
                },
            )
        })
        .collect()
}

/// The events between two reads. A service that appeared or went away is the agent's own
/// doing (a rollout, a removal) and reported by nothing here.
pub fn changes(
    before: &HashMap<String, Seen>,
    after: &HashMap<String, Seen>,
    at: Timestamp,
) -> Vec<RuntimeEvent> {
    let mut events = Vec::new();
    for (id, now) in after {
        // A service that never served is starting (the agent's rollout), not moving.
        let Some(then) = before.get(id).filter(|t| t.served) else {
            continue;
        };
        let gone: Vec<_> = then.serving.difference(&now.serving).collect();
        let new: Vec<_> = now.serving.difference(&then.serving).collect();
        if gone.is_empty() && new.is_empty() {
            continue;
        }
        let event = |kind| RuntimeEvent {
            instance_id: id.clone(),
            server_id: now.server_id.clone(),
            kind,
            at,
        };
        let describe = |tasks: &[&(String, String, SocketAddr)]| {
            tasks
                .iter()
                .map(|(task, node, addr)| {
                    format!("task {} on node {} ({addr})", short(task), short(node))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if now.serving.is_empty() {
            events.push(event(RuntimeEventKind::Exited { code: None }));
        } else {
            let mut detail = Vec::new();
            if !gone.is_empty() {
                detail.push(format!("{} stopped serving", describe(&gone)));
            }
            if !new.is_empty() {
                detail.push(format!("{} serves", describe(&new)));
            }
            events.push(event(RuntimeEventKind::Rescheduled {
                detail: detail.join("; "),
            }));
        }
    }
    events
}

/// Swarm ids are 25 characters; 12 tell them apart, as `docker service ps` shows them.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen_with(tasks: &[(&str, &str, &str)]) -> Seen {
        Seen {
            served: true,
            server_id: "echo".into(),
            serving: tasks
                .iter()
                .map(|(t, n, a)| (t.to_string(), n.to_string(), a.parse().unwrap()))
                .collect(),
        }
    }

    fn one(id: &str, s: Seen) -> HashMap<String, Seen> {
        HashMap::from([(id.to_owned(), s)])
    }

    #[test]
    fn a_moved_task_is_a_reschedule_and_a_lost_last_task_an_exit() {
        let at = Timestamp::UNIX_EPOCH;
        let before = one("svc", seen_with(&[("t1", "n1", "10.0.0.2:30001")]));
        let moved = one("svc", seen_with(&[("t2", "n2", "10.0.0.3:30002")]));
        let e = changes(&before, &moved, at);
        assert_eq!(e.len(), 1);
        match &e[0].kind {
            RuntimeEventKind::Rescheduled { detail } => {
                assert!(
                    detail.contains("t1 on node n1 (10.0.0.2:30001) stopped serving"),
                    "{detail}"
                );
                assert!(
                    detail.contains("t2 on node n2 (10.0.0.3:30002) serves"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        let lost = one("svc", seen_with(&[]));
        let e = changes(&before, &lost, at);
        assert_eq!(e[0].kind, RuntimeEventKind::Exited { code: None });
        assert_eq!(e[0].instance_id, "svc");
        assert_eq!(e[0].server_id, "echo");
    }

    #[test]
    fn nothing_changed_and_services_that_come_and_go_report_nothing() {
        let at = Timestamp::UNIX_EPOCH;
        let a = one("svc", seen_with(&[("t1", "n1", "10.0.0.2:30001")]));
        assert!(changes(&a, &a, at).is_empty());
        assert!(changes(&HashMap::new(), &a, at).is_empty());
        assert!(changes(&a, &HashMap::new(), at).is_empty());
        let starting = one(
            "svc",
            Seen {
                served: false,
                ..seen_with(&[])
            },
        );
        assert!(
            changes(&starting, &a, at).is_empty(),
            "a new service's first task is a start, not a move"
        );
    }
}
