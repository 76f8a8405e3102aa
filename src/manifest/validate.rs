//! Semantic validation: what can only be judged across servers or against policies.
//! `check` is the one entry point every gatekeeper uses (CLI, hooks, agent).

use std::collections::HashMap;

use super::decode::{Decoder, index, join};
use super::diagnostic::{self, Diagnostic, Severity, did_you_mean};
use super::types::{Manifest, Server, UpdatePolicy, UpdatePolicyRef};
use super::{TextFile, parse, yaml};
use crate::policy::{PolicySet, TrustPolicy};

/// The files of a manifest repository that decide what runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFiles {
    pub manifest: TextFile,
    /// `policies/*.yaml`: the repo's own named update policies.
    pub policies: Vec<TextFile>,
    /// `trust-policy.yaml`: narrows the agent's trust policy.
    pub trust: Option<TextFile>,
}

/// A manifest that passed every check, with the policies it refers to.
#[derive(Clone, Debug)]
pub struct Checked {
    pub manifest: Manifest,
    pub policies: PolicySet,
    pub warnings: Vec<Diagnostic>,
}

impl Checked {
    /// The update policy in force for a server of this manifest.
    pub fn update_policy(&self, server: &Server) -> UpdatePolicy {
        match &server.update_policy {
            UpdatePolicyRef::Inline(p) => p.clone(),
            UpdatePolicyRef::Named(name) => self
                .policies
                .get(name)
                .map(|p| p.policy.clone())
                // `check` refused unknown names, so this only guards against misuse.
                .unwrap_or_else(UpdatePolicy::pinned),
        }
    }
}

/// Decodes and validates a manifest repository's files. On failure, returns every problem
/// (errors and warnings) sorted by file and position.
pub fn check(files: &RepoFiles, agent_trust: &TrustPolicy) -> Result<Checked, Vec<Diagnostic>> {
    let mut all = Vec::new();
    let mut policies = PolicySet::shipped();
    for d in policies.add_repo_files(&files.policies) {
        all.extend(d.diags.into_vec());
    }

    let repo_trust = files.trust.as_ref().and_then(|file| {
        let mut d = Decoder::new(file.path.clone());
        let t = TrustPolicy::decode(&mut d, file);
        if let Some(t) = &t {
            narrowing_warnings(&mut d, t, agent_trust);
        }
        all.extend(d.diags.into_vec());
        t
    });

    let mut d = Decoder::new(files.manifest.path.clone());
    let manifest = match yaml::parse(&files.manifest.text) {
        Ok(Some(root)) => parse::manifest(&mut d, &root),
        Ok(None) => {
            d.error(
                "",
                "the manifest is empty; it needs `version` and `servers`",
            );
            None
        }
        Err(e) => {
            d.diags
                .error(e.at, "", format!("invalid YAML: {}", e.message));
            None
        }
    };
    if let Some(m) = &manifest {
        cross_checks(&mut d, m, &policies, agent_trust, repo_trust.as_ref());
    }
    all.extend(d.diags.into_vec());
    diagnostic::sort(&mut all);

    match manifest {
        Some(manifest) if !all.iter().any(|d| d.severity == Severity::Error) => Ok(Checked {
            manifest,
            policies,
            warnings: all,
        }),
        _ => Err(all),
    }
}

fn narrowing_warnings(d: &mut Decoder, repo: &TrustPolicy, agent: &TrustPolicy) {
    for (i, p) in repo.allowed_images.iter().enumerate() {
        if !agent.allows_image(p.trim_end_matches('/')) {
            d.warning(
                &format!("allowed_images[{i}]"),
                format!("`{p}` is outside the agent's trust policy ({}); a repository can narrow it, never widen it", agent.source),
            );
        }
    }
    for (i, c) in repo.allowed_commands.iter().enumerate() {
        if !agent.allows_command(c.trim_end_matches('/')) {
            d.warning(
                &format!("allowed_commands[{i}]"),
                format!("`{c}` is outside the agent's trust policy ({}); a repository can narrow it, never widen it", agent.source),
            );
        }
    }
}

fn cross_checks(
    d: &mut Decoder,
    m: &Manifest,
    policies: &PolicySet,
    agent: &TrustPolicy,
    repo: Option<&TrustPolicy>,
) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut host_ports: HashMap<u16, usize> = HashMap::new();
    for (i, s) in m.servers.iter().enumerate() {
        let path = index("servers", i);
        if !s.id.is_empty()
            && let Some(first) = ids.insert(&s.id, i)
        {
            ids.insert(&s.id, first);
            let line = d.at(&join(&index("servers", first), "id")).line;
            d.error(
                &join(&path, "id"),
                format!(
                    "duplicate server id `{}` (first used by servers[{first}] on line {line})",
                    s.id
                ),
            );
        }
        if let Some(hp) = s.docker.as_ref().and_then(|k| k.host_port) {
            if let Some(&first) = host_ports.get(&hp) {
                d.error(
                    &join(&path, "docker.host_port"),
                    format!("host port {hp} is also used by `{}`; two servers cannot share a fixed port", m.servers[first].id),
                );
            } else {
                host_ports.insert(hp, i);
            }
        }
        if let UpdatePolicyRef::Named(name) = &s.update_policy {
            let p = join(&path, "update_policy");
            match policies.get(name) {
                Some(named) => parse::check_constraint(d, &named.policy, Some(&s.version), &p),
                None => {
                    let mut message = format!("unknown update policy `{name}`");
                    match did_you_mean(name, policies.names()) {
                        Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                        None => message.push_str(&format!(
                            "; known policies: {} (add your own in policies/{name}.yaml)",
                            policies.names().collect::<Vec<_>>().join(", ")
                        )),
                    }
                    d.error(&p, message);
                }
            }
        }
        if let Some(docker) = &s.docker
            && !docker.image.is_empty()
        {
            let p = join(&path, "docker.image");
            if !agent.allows_image(&docker.image) {
                d.error(
                    &p,
                    format!(
                        "image `{}` is not allowed by the agent's trust policy ({}), which allows: {}",
                        docker.image,
                        agent.source,
                        list_or_nothing(&agent.allowed_images)
                    ),
                );
            } else if let Some(r) = repo.filter(|r| !r.allows_image(&docker.image)) {
                d.error(
                    &p,
                    format!(
                        "image `{}` is not allowed by the repository's {}",
                        docker.image, r.source
                    ),
                );
            }
        }
        if let Some(process) = &s.process
            && process.command.starts_with('/')
        {
            let p = join(&path, "process.command");
            if !agent.allows_command(&process.command) {
                d.error(
                    &p,
                    format!(
                        "command `{}` is not in a directory the agent's trust policy ({}) allows: {}",
                        process.command,
                        agent.source,
                        list_or_nothing(&agent.allowed_commands)
                    ),
                );
            } else if let Some(r) = repo.filter(|r| !r.allows_command(&process.command)) {
                d.error(
                    &p,
                    format!(
                        "command `{}` is not allowed by the repository's {}",
                        process.command, r.source
                    ),
                );
            }
        }
    }
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}
