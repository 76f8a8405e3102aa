//! The desired state: one [`Desired`] per server of a checked manifest, as the active runtime
//! will start it. Pure: secrets are looked up through a function the caller provides.

use std::collections::BTreeMap;

use semver::Version;
use sha2::{Digest, Sha256};

use crate::manifest::{Checked, HealthCheck, Recovery, Server, Transport, UpdatePolicy};
use crate::runtime::{DockerInstance, InstanceSpec, RuntimeKind};

/// A server as it should run.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub spec: InstanceSpec,
    pub health: HealthCheck,
    pub recovery: Recovery,
    pub policy: UpdatePolicy,
    pub transport: Transport,
    pub mcp_path: String,
    /// Servers that must be healthy before this one starts or is upgraded.
    pub depends_on: Vec<String>,
}

impl Desired {
    pub fn server_id(&self) -> &str {
        &self.spec.server_id
    }

    /// The same server at another version: the image tag follows, the fingerprint changes.
    pub fn at_version(&self, version: &Version) -> Desired {
        let mut d = self.clone();
        d.spec.version = version.clone();
        if let Some(docker) = &mut d.spec.docker {
            let repo = docker
                .image
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(docker.image.as_str(), |(repo, _)| repo);
            docker.image = format!("{repo}:{version}");
        }
        d.spec.spec_hash = spec_hash(&d.spec);
        d
    }
}

/// A server of the manifest that cannot run here, and why (it does not stop the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredProblem {
    pub server_id: String,
    pub reason: String,
}

/// Computes the desired state for `revision` under the `runtime` in use. `version_of` picks
/// the version each server should run (the manifest's own, or what the update policy
/// resolved); `secret` looks up config values outside the manifest.
pub fn desired_state(
    checked: &Checked,
    runtime: RuntimeKind,
    revision: &str,
    version_of: &dyn Fn(&Server) -> Version,
    secret: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Desired>, Vec<DesiredProblem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for server in &checked.manifest.servers {
        match one(
            checked,
            server,
            runtime,
            revision,
            version_of(server),
            secret,
        ) {
            Ok(d) => out.push(d),
            Err(reason) => problems.push(DesiredProblem {
                server_id: server.id.clone(),
                reason,
            }),
        }
    }
    (out, problems)
}

fn one(
    checked: &Checked,
    server: &Server,
    runtime: RuntimeKind,
    revision: &str,
    version: Version,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Desired, String> {
    let mut env = BTreeMap::new();
    let mut missing = Vec::new();
    for req in &server.config_requirements {
        let value = if req.secret {
            secret(&req.name)
        } else {
            req.value.clone().or_else(|| secret(&req.name))
        };
        match value {
            Some(v) => {
                env.insert(req.name.clone(), v);
            }
            None if req.required => missing.push(req.name.as_str()),
            None => {}
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "required configuration not provided to the agent: {} (put it in the agent's secrets file, or list the agent's environment variable in the trust policy's `allowed_env`)",
            missing.join(", ")
        ));
    }
    let (docker, process, host_port) = match runtime {
        RuntimeKind::Docker | RuntimeKind::Swarm => {
            let d = server.docker.as_ref().ok_or_else(|| {
                format!("the manifest gives this server no `docker` section, so the {} runtime cannot start it", runtime.as_str())
            })?;
            env.extend(d.env.clone());
            let docker = DockerInstance {
                image: format!("{}:{}", d.image, version),
                container_port: d.port,
                resources: d.resources.clone(),
                replicas: d.replicas,
                constraints: d.constraints.clone(),
                max_per_node: d.max_per_node,
            };
            (Some(docker), None, d.host_port)
        }
        RuntimeKind::Process => {
            let p = server.process.as_ref().ok_or_else(|| {
                "the manifest gives this server no `process` section, so the process runtime cannot start it".to_owned()
            })?;
            (
                None,
                Some(p.clone()),
                server.docker.as_ref().and_then(|d| d.host_port),
            )
        }
    };
    let mut spec = InstanceSpec {
        server_id: server.id.clone(),
        version,
        revision: revision.to_owned(),
        spec_hash: String::new(),
        host_port,
        env,
        restart_policy: server.restart_policy,
        docker,
        process,
    };
    spec.spec_hash = spec_hash(&spec);
    Ok(Desired {
        spec,
        health: server.health_check.clone(),
        recovery: server.recovery.clone(),
        policy: checked.update_policy(server),
        transport: server.transport,
        mcp_path: server.mcp_path.clone(),
        depends_on: server.depends_on.clone(),
    })
}

/// A fingerprint of everything that, when changed, needs a new instance. The revision is
/// left out: a commit that changes nothing about a server must not restart it.
pub fn spec_hash(spec: &InstanceSpec) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        h.update([0]);
    };
    field("server", &spec.server_id);
    field("version", &spec.version.to_string());
    field("host_port", &format!("{:?}", spec.host_port));
    field("restart", &format!("{:?}", spec.restart_policy));
    for (k, v) in &spec.env {
        field("env", &format!("{k}={v}"));
    }
    if let Some(d) = &spec.docker {
        field("image", &d.image);
        field("port", &d.container_port.to_string());
        field("memory", &format!("{:?}", d.resources.memory_mb));
        field("cpus", &format!("{:?}", d.resources.cpus));
        // Only when set, so fingerprints of specs from before these fields stay the same
        // and an agent upgrade restarts nothing.
        if d.replicas != 1 {
            field("replicas", &d.replicas.to_string());
        }
        for c in &d.constraints {
            field("constraint", c);
        }
        if let Some(n) = d.max_per_node {
            field("max_per_node", &n.to_string());
        }
    }
    if let Some(p) = &spec.process {
        field("command", &p.command);
        for a in &p.args {
            field("arg", a);
        }
        for (k, v) in &p.env {
            field("penv", &format!("{k}={v}"));
        }
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::checked_for_tests as checked;

    const BOTH: &str = "version: \"1.1\"\nservers:\n  - id: both\n    version: \"1.0.0\"\n    docker: { image: registry.local/both, port: 8080, env: { MODE: fast } }\n    process: { command: /opt/mcp/both, args: [\"--port\", \"{port}\"] }\n    config_requirements:\n      - { name: TOKEN, secret: true }\n      - { name: REGION, value: eu }\n      - { name: OPTIONAL_HINT, required: false }\n  - id: docker-only\n    version: \"2.0.0\"\n    docker: { image: registry.local/only, port: 9000, host_port: 18080 }\n";

    fn manifest_version(s: &Server) -> Version {
        s.version.clone()
    }

    #[test]
    fn each_runtime_gets_its_own_section_and_a_server_without_one_is_a_problem() {
        let c = checked(BOTH);
        let secret = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        let (docker, problems) =
            desired_state(&c, RuntimeKind::Docker, "abc", &manifest_version, &secret);
        assert!(problems.is_empty(), "{problems:?}");
        let both = &docker[0].spec;
        assert_eq!(
            both.docker.as_ref().unwrap().image,
            "registry.local/both:1.0.0"
        );
        assert_eq!(both.docker.as_ref().unwrap().container_port, 8080);
        assert!(both.process.is_none());
        assert_eq!(docker[1].spec.host_port, Some(18080));

        let (process, problems) =
            desired_state(&c, RuntimeKind::Process, "abc", &manifest_version, &secret);
        assert_eq!(process.len(), 1);
        assert_eq!(
            process[0].spec.process.as_ref().unwrap().command,
            "/opt/mcp/both"
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].server_id, "docker-only");
        assert!(
            problems[0].reason.contains("no `process` section"),
            "{problems:?}"
        );
    }

    #[test]
    fn configuration_comes_from_the_manifest_or_the_agent_and_secrets_only_from_the_agent() {
        let c = checked(BOTH);
        let given = |name: &str| match name {
            "TOKEN" => Some("s3cret".to_owned()),
            "REGION" => Some("us".to_owned()),
            _ => None,
        };
        let (d, _) = desired_state(&c, RuntimeKind::Docker, "abc", &manifest_version, &given);
        let env = &d[0].spec.env;
        assert_eq!(env["TOKEN"], "s3cret");
        assert_eq!(env["REGION"], "eu", "the manifest's own value wins");
        assert_eq!(env["MODE"], "fast", "the docker section's env is kept");
        assert!(
            !env.contains_key("OPTIONAL_HINT"),
            "optional and absent: left out"
        );

        let (d, problems) =
            desired_state(&c, RuntimeKind::Docker, "abc", &manifest_version, &|_| None);
        assert_eq!(d.len(), 1, "the other server is not held back");
        assert_eq!(problems[0].server_id, "both");
        assert!(problems[0].reason.contains("TOKEN"), "{problems:?}");
        assert!(
            !problems[0].reason.contains("OPTIONAL_HINT"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_version_chosen_is_used_and_the_revision_alone_changes_no_fingerprint() {
        let c = checked(BOTH);
        let secret = |_: &str| Some("x".to_owned());
        let newer = |_: &Server| Version::new(1, 4, 2);
        let (a, _) = desired_state(&c, RuntimeKind::Docker, "abc", &newer, &secret);
        let (b, _) = desired_state(&c, RuntimeKind::Docker, "def", &newer, &secret);
        assert_eq!(a[0].spec.version, Version::new(1, 4, 2));
        assert_eq!(
            a[0].spec.docker.as_ref().unwrap().image,
            "registry.local/both:1.4.2"
        );
        assert_eq!(b[0].spec.revision, "def");
        assert_eq!(a[0].spec.spec_hash, b[0].spec.spec_hash);

        let (c2, _) = desired_state(&c, RuntimeKind::Docker, "abc", &manifest_version, &secret);
        assert_ne!(a[0].spec.spec_hash, c2[0].spec.spec_hash);
        let moved = c2[0].at_version(&Version::new(1, 4, 2));
        assert_eq!(
            moved.spec.docker.as_ref().unwrap().image,
            "registry.local/both:1.4.2"
        );
        assert_eq!(moved.spec.spec_hash, a[0].spec.spec_hash);
    }
}
