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
        RuntimeKind::Docker => {
            let d = server.docker.as_ref().ok_or_else(|| {
                "the manifest gives this server no `docker` section, so the docker runtime cannot start it".to_owned()
            })?;
            env.extend(d.env.clone());
            let docker = DockerInstance {
                image: format!("{}:{}", d.image, version),
                container_port: d.port,
                resources: d.resources.clone(),
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
