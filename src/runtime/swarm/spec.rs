//! The Swarm service an [`InstanceSpec`] becomes: one service per server version, its
//! tasks publishing the server's port in `host` mode on the node they run on.
//!
//! Host mode, not the ingress routing mesh: the mesh needs IPVS, which not every host has,
//! and it balances each connection anew, which breaks an MCP session pinned to one backend.
//! With host mode every task has an address of its own (node address and port) that the
//! gate probes and the gateway routes to.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, Limit, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use super::super::{DockerInstance, InstanceSpec, labels};
use crate::manifest::RestartPolicy;

/// The label on task containers naming their service, so `docker ps` on a node tells which
/// server a container serves. Task containers do not carry [`labels::MANAGED`]: a Docker
/// runtime on the same engine must never take them for containers of its own.
pub const TASK_SERVER: &str = "io.mcp-orchestration.swarm.server";

/// How long Swarm waits before it restarts a task that exited. Its default (5 s) is longer
/// than a probe interval; a crashed server should come back sooner.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Swarm refuses service names longer than a DNS label.
const MAX_NAME: usize = 63;

/// The Docker runtime's container name (`mcp-{server}-{version}-{8 hex}`), with the server
/// and version part cut so the whole is a valid service name; the random suffix stays.
pub fn service_name(container_name: &str) -> String {
    if container_name.len() <= MAX_NAME {
        return container_name.to_owned();
    }
    let (head, suffix) = container_name.split_at(container_name.len() - 9);
    format!("{}{suffix}", head[..MAX_NAME - 9].trim_end_matches('-'))
}

/// The labels a service of `owner` carries: the same keys as the Docker runtime's
/// containers, so a restarted agent adopts its services the same way.
pub fn service_labels(spec: &InstanceSpec, owner: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::OWNER.to_owned(), owner.to_owned()),
        (labels::SERVER.to_owned(), spec.server_id.clone()),
        (labels::VERSION.to_owned(), spec.version.to_string()),
        (labels::REVISION.to_owned(), spec.revision.clone()),
        (labels::SPEC.to_owned(), spec.spec_hash.clone()),
    ])
}

/// The service for `spec` (its `docker` part is `docker`), named `name`.
pub fn service_spec(
    spec: &InstanceSpec,
    docker: &DockerInstance,
    name: &str,
    owner: &str,
) -> ServiceSpec {
    let limits = Limit {
        nano_cpus: docker.resources.cpus.map(|c| (c * 1e9).round() as i64),
        memory_bytes: docker
            .resources
            .memory_mb
            .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(service_labels(spec, owner)),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(docker.image.clone()),
                env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                labels: Some(HashMap::from([(
                    TASK_SERVER.to_owned(),
                    spec.server_id.clone(),
                )])),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(restart_condition(spec.restart_policy)),
                delay: Some(RESTART_DELAY.as_nanos() as i64),
                ..Default::default()
            }),
            placement: (!docker.constraints.is_empty() || docker.max_per_node.is_some()).then(
                || TaskSpecPlacement {
                    constraints: Some(docker.constraints.clone()),
                    max_replicas: docker.max_per_node.map(i64::from),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(docker.replicas.max(1))),
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(docker.container_port)),
                // None: each node's engine picks a free port for its task.
                published_port: spec.host_port.map(i64::from),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Swarm has no `unless-stopped`: a task the agent stops is scaled away, not restarted, so
/// `any` is what `unless-stopped` means here.
fn restart_condition(policy: RestartPolicy) -> TaskSpecRestartPolicyConditionEnum {
    match policy {
        RestartPolicy::Always | RestartPolicy::UnlessStopped => {
            TaskSpecRestartPolicyConditionEnum::ANY
        }
        RestartPolicy::OnFailure => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::Resources;

    fn spec(replicas: u32, constraints: &[&str], host_port: Option<u16>) -> InstanceSpec {
        InstanceSpec {
            server_id: "echo".into(),
            version: semver::Version::new(1, 2, 3),
            revision: "abc".into(),
            spec_hash: "f00".into(),
            host_port,
            env: BTreeMap::from([("MODE".into(), "fast".into())]),
            restart_policy: RestartPolicy::UnlessStopped,
            docker: Some(DockerInstance {
                image: "registry.local/echo:1.2.3".into(),
                container_port: 8080,
                resources: Resources {
                    memory_mb: Some(64),
                    cpus: Some(0.5),
                },
                replicas,
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                max_per_node: (!constraints.is_empty()).then_some(1),
            }),
            process: None,
        }
    }

    #[test]
    fn a_service_publishes_in_host_mode_with_our_labels_and_the_manifests_placement() {
        let s = spec(2, &["node.labels.zone==a"], None);
        let svc = service_spec(&s, s.docker.as_ref().unwrap(), "mcp-echo-1-2-3-x", "team");
        let labels = svc.labels.as_ref().unwrap();
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::OWNER], "team");
        assert_eq!(labels[labels::VERSION], "1.2.3");
        assert_eq!(labels[labels::SPEC], "f00");
        let port = &svc.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.target_port, Some(8080));
        assert_eq!(port.published_port, None);
        assert_eq!(
            svc.mode
                .as_ref()
                .unwrap()
                .replicated
                .as_ref()
                .unwrap()
                .replicas,
            Some(2)
        );
        let task = svc.task_template.as_ref().unwrap();
        assert_eq!(
            task.placement.as_ref().unwrap().constraints.as_deref(),
            Some(&["node.labels.zone==a".to_owned()][..])
        );
        assert_eq!(task.placement.as_ref().unwrap().max_replicas, Some(1));
        let container = task.container_spec.as_ref().unwrap();
        assert_eq!(
            container.env.as_deref(),
            Some(&["MODE=fast".to_owned()][..])
        );
        assert!(
            !container
                .labels
                .as_ref()
                .unwrap()
                .contains_key(labels::MANAGED),
            "task containers must not look like the Docker runtime's"
        );
        let limits = task.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(limits.nano_cpus, Some(500_000_000));
    }

    #[test]
    fn a_long_name_is_cut_to_a_dns_label_keeping_its_random_suffix() {
        assert_eq!(service_name("mcp-a-1-0-0-0123abcd"), "mcp-a-1-0-0-0123abcd");
        let long = format!("mcp-{}-1-0-0-0123abcd", "s".repeat(63));
        let name = service_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("mcp-sss"), "{name}");
        assert!(name.ends_with("-0123abcd"), "{name}");
    }

    #[test]
    fn a_fixed_host_port_is_published_as_given_and_no_placement_means_none() {
        let s = spec(1, &[], Some(18080));
        let svc = service_spec(&s, s.docker.as_ref().unwrap(), "n", "default");
        let port = &svc.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.published_port, Some(18080));
        assert!(svc.task_template.as_ref().unwrap().placement.is_none());
    }
}
