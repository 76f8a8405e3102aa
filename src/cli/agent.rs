//! `mcp-orchestration agent`

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::exit;
use crate::settings::{AgentOptions, RuntimeChoice, Settings, env};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifest repository: a URL (https, ssh) or a local path.
    #[arg(long, env = env::REPO, value_name = "URL|PATH")]
    repo: Option<String>,
    /// The branch to follow [default: main]
    #[arg(long, env = env::BRANCH)]
    branch: Option<String>,
    /// The manifest's path in the repository [default: ecosystem-manifest.yaml]
    #[arg(long, env = env::MANIFEST_PATH, value_name = "PATH")]
    manifest_path: Option<String>,
    /// How often to fetch: 30s, 500ms, 2m [default: 30s]
    #[arg(long, env = env::POLL_INTERVAL, value_name = "DURATION")]
    poll_interval: Option<String>,
    /// How often registries are asked for new tags [default: 60s]
    #[arg(long, env = env::REGISTRY_POLL_INTERVAL, value_name = "DURATION")]
    registry_poll_interval: Option<String>,
    /// How long an old instance keeps serving after its successor is published [default: 2s]
    #[arg(long, value_name = "DURATION")]
    drain: Option<String>,
    /// YAML list of `{registry, username, password}`, for pulling images and listing tags.
    #[arg(long, env = env::REGISTRY_CREDENTIALS, value_name = "FILE")]
    registry_credentials: Option<PathBuf>,
    /// A gateway that receives the backend set on every routing change (repeatable).
    #[arg(long, env = env::GATEWAY_URL, value_name = "URL", value_delimiter = ',')]
    gateway_url: Vec<String>,
    /// Send the latest backend set again after this long without a change, for gateways
    /// that restarted [default: 30s]
    #[arg(long, value_name = "DURATION")]
    gateway_resend_interval: Option<String>,
    /// Where servers run [default: process]
    #[arg(long, env = env::RUNTIME, value_enum)]
    runtime: Option<RuntimeArg>,
    /// The Docker Engine, or for `--runtime swarm` a swarm manager, as `unix://PATH` or
    /// `tcp://HOST:PORT` [default: the local socket]
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    docker_host: Option<String>,
    /// Address of the HTTP API [default: 127.0.0.1:7070]
    #[arg(long, env = env::LISTEN, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the MCP gateway, one endpoint (`/mcp`) for every server's tools; `off`
    /// disables it [default: 127.0.0.1:7071]
    #[arg(long, env = env::GATEWAY_LISTEN, value_name = "ADDR|off")]
    gateway_listen: Option<String>,
    /// The gateway's base URL as MCP clients reach it, written into client configurations
    /// [default: its own address; loopback when it listens on every interface]
    #[arg(long, env = env::GATEWAY_PUBLIC_URL, value_name = "URL")]
    gateway_public_url: Option<String>,
    /// HMAC secret that `POST /webhooks/git` signatures must match. A flag's value is
    /// visible to every user in `ps`: prefer the environment variable or the config file
    #[arg(long, env = env::WEBHOOK_SECRET, value_name = "SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Token for https remotes. A flag's value is visible to every user in `ps`: prefer the
    /// environment variable or the config file
    #[arg(long, env = env::GIT_TOKEN, value_name = "TOKEN", hide_env_values = true)]
    git_token: Option<String>,
    /// Private key file for ssh remotes.
    #[arg(long, env = env::SSH_KEY, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// YAML file of `NAME: value` for config requirements (secrets).
    #[arg(long, env = env::SECRETS_FILE, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// The operator's trust policy; default: the shipped one.
    #[arg(long, env = env::TRUST_POLICY, value_name = "FILE")]
    pub trust_policy: Option<PathBuf>,
    /// How many servers may be changed at once [default: 4]
    #[arg(long)]
    concurrency: Option<usize>,
    /// A file of API keys the HTTP API accepts, one per line.
    #[arg(long, env = env::API_KEYS_FILE, value_name = "FILE")]
    api_keys_file: Option<PathBuf>,
    /// Read routes need a key too, also on loopback (always so beyond loopback).
    #[arg(long, env = env::REQUIRE_KEY_FOR_READS, value_parser = clap::builder::BoolishValueParser::new())]
    require_key_for_reads: bool,
    /// Close API connections that do not send a whole request head within this long of
    /// connecting or of their previous response (slow or idle clients) [default: 10s]
    #[arg(long, value_name = "DURATION")]
    header_read_timeout: Option<String>,
    /// At most this many API connections at once; more are closed when accepted
    /// [default: 4096, or half the open-file limit]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// How long connecting to the git remote, and each wait for its data, may take; a
    /// whole fetch at most ten times as long [default: 30s]
    #[arg(long, value_name = "DURATION")]
    git_timeout: Option<String>,
    /// How often a webhook delivery (a subscription's or a notification channel's) is
    /// tried before it becomes a dead letter [default: 8]
    #[arg(long, env = env::DELIVERY_ATTEMPTS, value_name = "N")]
    delivery_attempts: Option<u32>,
    /// The wait after a delivery's first failed try; it doubles after each, up to 60s
    /// [default: 1s]
    #[arg(long, env = env::DELIVERY_BACKOFF, value_name = "DURATION")]
    delivery_backoff: Option<String>,
    /// After each run, write its result as a git note on the commit
    /// (`refs/notes/mcp-orchestration`) and push the notes ref to the repository, which
    /// needs push rights there; a refused push is logged and retried, never blocking a sync
    #[arg(long, env = env::WRITE_NOTES, value_parser = clap::builder::BoolishValueParser::new())]
    write_notes: bool,
    /// The operator's sync windows (YAML): times in which registry upgrades, and commits
    /// if a window says so, wait; an operator's own actions never do
    #[arg(long, env = env::SYNC_WINDOWS, value_name = "FILE")]
    sync_windows: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum RuntimeArg {
    Process,
    Docker,
    /// Docker Swarm services through a manager (`DOCKER_HOST`); servers may run on any node
    Swarm,
}

impl RuntimeArg {
    pub(super) fn kind(self) -> crate::runtime::RuntimeKind {
        use crate::runtime::RuntimeKind;
        match self {
            RuntimeArg::Process => RuntimeKind::Process,
            RuntimeArg::Docker => RuntimeKind::Docker,
            RuntimeArg::Swarm => RuntimeKind::Swarm,
        }
    }
}

impl Args {
    pub fn options(&self) -> AgentOptions {
        AgentOptions {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            manifest_path: self.manifest_path.clone(),
            poll_interval: self.poll_interval.clone(),
            registry_poll_interval: self.registry_poll_interval.clone(),
            drain: self.drain.clone(),
            registry_credentials: self.registry_credentials.clone(),
            gateway_url: (!self.gateway_url.is_empty()).then(|| self.gateway_url.clone()),
            gateway_resend_interval: self.gateway_resend_interval.clone(),
            runtime: self.runtime.map(|r| match r {
                RuntimeArg::Process => RuntimeChoice::Process,
                RuntimeArg::Docker => RuntimeChoice::Docker,
                RuntimeArg::Swarm => RuntimeChoice::Swarm,
            }),
            listen: self.listen.clone(),
            gateway_listen: self.gateway_listen.clone(),
            gateway_public_url: self.gateway_public_url.clone(),
            docker_host: self.docker_host.clone(),
            data_dir: None,
            webhook_secret: self.webhook_secret.clone(),
            git_token: self.git_token.clone(),
            ssh_key: self.ssh_key.clone(),
            secrets_file: self.secrets_file.clone(),
            concurrency: self.concurrency,
            api_keys_file: self.api_keys_file.clone(),
            require_key_for_reads: self.require_key_for_reads.then_some(true),
            header_read_timeout: self.header_read_timeout.clone(),
            max_connections: self.max_connections,
            git_timeout: self.git_timeout.clone(),
            delivery_attempts: self.delivery_attempts,
            delivery_backoff: self.delivery_backoff.clone(),
            write_notes: self.write_notes.then_some(true),
            sync_windows: self.sync_windows.clone(),
        }
    }
}

/// The flags whose values are secrets.
const SECRET_FLAGS: &[&str] = &["--api-key", "--webhook-secret", "--git-token"];

/// The secret flags given on the command line (not through the environment or a file).
fn secret_flags_given(args: impl IntoIterator<Item = String>) -> Vec<&'static str> {
    let args: Vec<String> = args.into_iter().collect();
    SECRET_FLAGS
        .iter()
        .copied()
        .filter(|flag| {
            args.iter().any(|a| {
                a == flag
                    || a.strip_prefix(flag)
                        .is_some_and(|rest| rest.starts_with('='))
            })
        })
        .collect()
}

pub fn run(settings: &Settings) -> anyhow::Result<u8> {
    for flag in secret_flags_given(std::env::args()) {
        warn!(
            flag,
            "a secret given as a flag is visible to every user of this machine (ps, /proc/PID/cmdline); use its MCP_ORCHESTRATION_* variable or the config file instead"
        );
    }
    let agent = settings.agent()?;
    let trust = settings.load_trust_policy()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received; finishing the current step (send another to exit now)");
            signals.cancel();
            wait_for_signal().await;
            warn!("second signal: exiting now");
            std::process::exit(i32::from(exit::ERROR));
        });
        crate::agent::run(agent, trust, shutdown, |_| {}).await
    });
    // A git fetch stuck on a silent remote sits on the blocking pool until libgit2's
    // timeout; the agent has already stopped and must not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result?;
    Ok(exit::OK)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers Ctrl-C still works through the default disposition.
        _ => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_flags_are_found_in_both_spellings_and_only_as_flags() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            secret_flags_given(args(&["mcp", "agent", "--api-key", "k", "--git-token=t"])),
            vec!["--api-key", "--git-token"]
        );
        assert!(secret_flags_given(args(&["mcp", "agent", "--api-keys-file", "f"])).is_empty());
    }
}
