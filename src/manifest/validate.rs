//! Semantic validation: what can only be judged across servers or against policies.
//! `check` is the one entry point every gatekeeper uses (CLI, hooks, agent).

use std::collections::HashMap;

use super::decode::{Decoder, index, join};
use super::diagnostic::{self, Diagnostic, Severity, did_you_mean};
use super::types::{Manifest, Server, UpdatePolicy, UpdatePolicyRef};
use super::{TextFile, parse, yaml};
use crate::manifest::policy::{PolicySet, TrustPolicy};

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

/// The largest manifest, policy or trust-policy file `check` reads.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Looks at a local command on the host: `Err(why)` when its real path (symlinks resolved)
/// is not allowed. Given by the caller, so `check` itself never touches the file system.
pub type CommandCheck<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// What the caller knows of where the manifest will run, for the checks that depend on it.
/// Given by the caller, so `check` itself never looks at the host.
#[derive(Clone, Copy, Default)]
pub struct Host<'a> {
    /// Run on every local command (with `{version}` filled in from the manifest): the agent
    /// and `validate` pass [`host_command_check`].
    pub command: Option<CommandCheck<'a>>,
    /// The runtime that will start the servers, when known.
    pub runtime: Option<TargetRuntime>,
}

/// A runtime as the checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRuntime {
    pub name: &'static str,
    /// Whether it runs several replicas of a server and honours placement (Swarm).
    pub schedules: bool,
}

/// Decodes and validates a manifest repository's files. On failure, returns every problem
/// (errors and warnings) sorted by file and position.
pub fn check(files: &RepoFiles, agent_trust: &TrustPolicy) -> Result<Checked, Vec<Diagnostic>> {
    check_with(files, agent_trust, Host::default())
}

/// [`check`], plus the checks that need to know the host (see [`Host`]).
pub fn check_with(
    files: &RepoFiles,
    agent_trust: &TrustPolicy,
    host: Host<'_>,
) -> Result<Checked, Vec<Diagnostic>> {
    // A manifest is a few kilobytes; anything near this size is a mistake or an attack,
    // and is refused before a parser spends memory on it.
    let oversized: Vec<Diagnostic> = std::iter::once(&files.manifest)
        .chain(&files.policies)
        .chain(&files.trust)
        .filter_map(TextFile::size_error)
        .collect();
    if !oversized.is_empty() {
        return Err(oversized);
    }
    let mut all = Vec::new();
    // A file that is not UTF-8 is reported where its first bad byte is, and not parsed.
    let text = |file: &TextFile, all: &mut Vec<Diagnostic>| match file.encoding_error() {
        Some(d) => {
            all.push(d);
            false
        }
        None => true,
    };
    let mut policies = PolicySet::shipped();
    let policy_files: Vec<TextFile> = files
        .policies
        .iter()
        .filter(|f| text(f, &mut all))
        .cloned()
        .collect();
    for d in policies.add_repo_files(&policy_files) {
        all.extend(d.diags.into_vec());
    }

    let trust_file = files.trust.as_ref().filter(|f| text(f, &mut all));
    let repo_trust = trust_file.and_then(|file| {
        let mut d = Decoder::new(file.path.clone());
        let t = TrustPolicy::decode(&mut d, file);
        if let Some(t) = &t {
            narrowing_warnings(&mut d, t, agent_trust);
        }
        all.extend(d.diags.into_vec());
        t
    });

    let mut d = Decoder::new(files.manifest.path.clone());
    let manifest = if !text(&files.manifest, &mut all) {
        None
    } else {
        match yaml::parse(&files.manifest.text) {
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
        }
    };
    if let Some(m) = &manifest {
        cross_checks(&mut d, m, &policies, agent_trust, repo_trust.as_ref());
        if let Some(runtime) = host.runtime {
            unscheduled(&mut d, m, runtime);
        }
        if let Some(on_host) = host.command {
            for (i, s) in m.servers.iter().enumerate() {
                let Some(p) = &s.process else { continue };
                let command = p.command.replace("{version}", &s.version.to_string());
                // A command the policy refuses by its name is reported once, above; the
                // host check adds what only the file system tells (a symlink out).
                if command.contains("{port}") || !agent_trust.allows_command(&p.command) {
                    continue;
                }
                if let Err(why) = on_host(&command) {
                    d.error(&join(&index("servers", i), "process.command"), why);
                }
            }
        }
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

/// Replicas and placement under a runtime that runs one instance per server on this host
/// would be silently ignored; they are refused where they are written.
fn unscheduled(d: &mut Decoder, m: &Manifest, runtime: TargetRuntime) {
    if runtime.schedules {
        return;
    }
    for (i, s) in m.servers.iter().enumerate() {
        let Some(docker) = &s.docker else { continue };
        let path = join(&index("servers", i), "docker");
        if docker.replicas > 1 {
            d.error(
                &join(&path, "replicas"),
                format!(
                    "`replicas: {}` needs a runtime that schedules (`--runtime swarm`); the {} runtime runs one instance of each server",
                    docker.replicas, runtime.name
                ),
            );
        }
        if !docker.constraints.is_empty() || docker.max_per_node.is_some() {
            d.error(
                &join(&path, "placement"),
                format!(
                    "`placement` needs a runtime that schedules (`--runtime swarm`); the {} runtime runs every server on this host",
                    runtime.name
                ),
            );
        }
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
    for (i, u) in repo.allowed_notification_urls.iter().enumerate() {
        if !agent.allows_notification_url(u) {
            d.warning(
                &format!("allowed_notification_urls[{i}]"),
                format!("`{u}` is outside the agent's trust policy ({}); a repository can narrow it, never widen it", agent.source),
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
        // A named policy's channel is reported on the server that uses it: the policy file
        // may be shipped, and it is the operator's trust policy that refuses it.
        let (policy, at) = match &s.update_policy {
            UpdatePolicyRef::Named(name) => (
                policies.get(name).map(|n| &n.policy),
                join(&path, "update_policy"),
            ),
            UpdatePolicyRef::Inline(p) => {
                (Some(p), join(&path, "update_policy.notification_channel"))
            }
        };
        if let Some(url) = policy.and_then(|p| p.notification_channel.as_deref()) {
            if !agent.allows_notification_url(url) {
                d.error(
                    &at,
                    format!(
                        "notification channel `{url}` is not allowed by the agent's trust policy ({}), whose `allowed_notification_urls` are: {}; rollout reasons (log lines included) would be sent there",
                        agent.source,
                        list_or_nothing(&agent.allowed_notification_urls)
                    ),
                );
            } else if let Some(r) = repo.filter(|r| !r.allows_notification_url(url)) {
                d.error(
                    &at,
                    format!(
                        "notification channel `{url}` is not allowed by the repository's {}",
                        r.source
                    ),
                );
            }
        }
        if let Some(process) = &s.process {
            let names = process
                .env
                .keys()
                .map(|k| (k.as_str(), join(&path, &format!("process.env.{k}"))))
                .chain(s.config_requirements.iter().enumerate().map(|(j, r)| {
                    (
                        r.name.as_str(),
                        join(&index(&join(&path, "config_requirements"), j), "name"),
                    )
                }));
            for (name, at) in names {
                if !agent.allows_process_env(name) {
                    d.error(
                        &at,
                        format!(
                            "`{name}` makes a program load code other than its own; a process server gets it only when the agent's trust policy ({}) lists it in `allowed_process_env`",
                            agent.source
                        ),
                    );
                } else if let Some(r) = repo.filter(|r| !r.allows_process_env(name)) {
                    d.error(
                        &at,
                        format!("`{name}` is not allowed by the repository's {}", r.source),
                    );
                }
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
    profile_checks(d, m);
    dependency_checks(d, m);
}

/// `depends_on` names other servers of this manifest, once each, without a cycle: every
/// server can be started in some order.
fn dependency_checks(d: &mut Decoder, m: &Manifest) {
    for (i, s) in m.servers.iter().enumerate() {
        let path = join(&index("servers", i), "depends_on");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (j, dep) in s.depends_on.iter().enumerate() {
            let at = index(&path, j);
            if *dep == s.id {
                d.error(&at, format!("server `{}` cannot depend on itself", s.id));
            } else if m.server(dep).is_none() {
                let mut message = format!("`{}` depends on unknown server `{dep}`", s.id);
                match did_you_mean(dep, m.servers.iter().map(|s| s.id.as_str())) {
                    Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
                    None => message.push_str(&format!(
                        "; the manifest's servers are: {}",
                        list_or_nothing(
                            &m.servers.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
                        )
                    )),
                }
                d.error(&at, message);
            }
            if let Some(first) = seen.insert(dep, j) {
                seen.insert(dep, first);
                d.error(
                    &at,
                    format!("`{dep}` is listed twice (first at depends_on[{first}])"),
                );
            }
        }
    }
    // One error per cycle, at the first of its servers' dependency that enters it.
    let mut reported: Vec<Vec<&str>> = Vec::new();
    for (i, s) in m.servers.iter().enumerate() {
        let Some(cycle) = super::order::cycle_from(m, &s.id) else {
            continue;
        };
        let mut key = cycle.clone();
        key.sort_unstable();
        if reported.contains(&key) {
            continue;
        }
        reported.push(key);
        let closing = cycle[1];
        let j = s.depends_on.iter().position(|d| d == closing).unwrap_or(0);
        let mut around = cycle.clone();
        around.push(cycle[0]);
        d.error(
            &index(&join(&index("servers", i), "depends_on"), j),
            format!(
                "a dependency cycle: {}; no server of it could ever start",
                around.join(" → ")
            ),
        );
    }
}

/// Profiles name servers of this manifest, each once, and are named once. Which tools a
/// server has is known only once it runs, so the gateway reports a listed tool that a
/// server does not offer (`GET /profiles`) rather than this check.
fn profile_checks(d: &mut Decoder, m: &Manifest) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, p) in m.profiles.iter().enumerate() {
        let path = index("profiles", i);
        if let Some(first) = ids.insert(&p.id, i) {
            ids.insert(&p.id, first);
            d.error(
                &join(&path, "id"),
                format!(
                    "duplicate profile id `{}` (first used by profiles[{first}])",
                    p.id
                ),
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (j, s) in p.servers.iter().enumerate() {
            let at = index(&join(&path, "servers"), j);
            // A bare id's position is the item itself; a mapping's is its `id`.
            let id_path = if d.was_seen(&join(&at, "id")) {
                join(&at, "id")
            } else {
                at.clone()
            };
            if m.server(&s.id).is_none() {
                let mut message = format!("profile `{}` names unknown server `{}`", p.id, s.id);
                match did_you_mean(&s.id, m.servers.iter().map(|s| s.id.as_str())) {
                    Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
                    None => message.push_str(&format!(
                        "; the manifest's servers are: {}",
                        list_or_nothing(
                            &m.servers.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
                        )
                    )),
                }
                d.error(&id_path, message);
            }
            if let Some(first) = seen.insert(&s.id, j) {
                seen.insert(&s.id, first);
                d.error(
                    &id_path,
                    format!(
                        "server `{}` is listed twice in profile `{}` (first at servers[{first}])",
                        s.id, p.id
                    ),
                );
            }
            let mut tools: HashMap<&str, ()> = HashMap::new();
            for (k, t) in s.tools.iter().flatten().enumerate() {
                if tools.insert(t, ()).is_some() {
                    d.error(
                        &index(&join(&at, "tools"), k),
                        format!("tool `{t}` is listed twice"),
                    );
                }
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

/// The check the agent and `validate` run on this host: a command that exists must really
/// lie in an allowed directory once its symlinks are resolved (`allowed/sh -> /bin/sh` is
/// refused). One that does not exist yet is left to the check made again at start.
pub fn host_command_check(trust: &TrustPolicy) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |command| {
        if !std::path::Path::new(command).exists() {
            return Ok(());
        }
        trust.check_real_command(command).map(|_| ())
    }
}
